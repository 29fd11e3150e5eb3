"""costctl: the CLI and composition root (settings, serve, demo, bench)."""

__version__ = "0.1.0"
