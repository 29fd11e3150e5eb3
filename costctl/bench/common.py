"""Helpers shared by the benchmarks: data paths, timers, JSON output."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("COSTCTL_SHARED_DIR", REPO.parent / "shared"))
AZURE_CONV = SHARED / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
ALIBABA = SHARED / "data" / "alibaba-gpu-2023"


@contextmanager
def timer(into: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall time of the block to ``into[key]`` (seconds)."""
    t = time.perf_counter()
    try:
        yield
    finally:
        into[key] = into.get(key, 0.0) + time.perf_counter() - t


def emit(result: dict[str, Any], as_json: bool) -> None:
    """Print the result: one JSON object, or aligned key: value lines."""
    if as_json:
        typer.echo(json.dumps(result))
        return
    width = max(len(k) for k in result)
    for k, v in result.items():
        typer.echo(f"{k:<{width}}  {v}")
