"""CLI command groups, one module per area; costctl.cli registers them."""
