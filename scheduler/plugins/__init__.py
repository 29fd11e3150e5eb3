"""Filter and Score plugins of the packing framework (one scorer per module)."""
