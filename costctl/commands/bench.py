"""`costctl bench <name> --json`: every benchmark prints one JSON object."""

from __future__ import annotations

import importlib

import typer

BENCHES = ("ingest", "attribute", "pack", "authorize", "gateway", "dashboard", "workers")


def register(app: typer.Typer) -> None:
    """Add the `bench` group with every benchmark module that exists."""
    bench_app = typer.Typer(
        help="Benchmarks (print JSON; see BENCHMARKS.md).", no_args_is_help=True
    )
    for name in BENCHES:
        try:
            module = importlib.import_module(f"costctl.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"costctl.bench.{name}":
                raise
            continue
        module.register(bench_app)
    app.add_typer(bench_app, name="bench")
