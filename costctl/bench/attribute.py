"""`costctl bench attribute`: the pure attribution function over N raw usage events.

Inputs are built in memory (the DB load is not timed): N requests drawn from the Azure conv
trace's token distribution over 24 h, assigned by billing.replay's documented mix, plus a
fleet of 8 GPUs sampled every 10 s with allocations for the four replay models. Baseline in
the same run: a per-event Python loop doing the same token-weighted split on a subset.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from billing.attribution import attribute
from billing.config import AttributionWeights
from billing.replay import CUSTOMERS, MODEL_MIX, read_azure_trace, zipf_weights
from billing.windows import Window
from costctl.bench.common import AZURE_CONV, emit, timer
from costctl.context import fail

T0 = datetime(2026, 11, 23, tzinfo=UTC)
HOURS = 24
GPUS = (
    [("A100-80GB", "on-demand")] * 4
    + [("H100-80GB", "on-demand")] * 2
    + [("H100-80GB", "spot")] * 2
)
ALLOC = [
    ("llama-3-70b", 4, 1.0),
    ("llama-3-70b", 5, 1.0),
    ("llama-3-8b", 0, 3 / 7),
    ("mistral-7b", 0, 4 / 7),
    ("mixtral-8x7b", 6, 1.0),
    ("llama-3-8b", 1, 0.5),
]
PRICES = pd.DataFrame(
    {
        "gpu_type": ["A100-80GB", "H100-80GB", "H100-80GB"],
        "pricing_class": ["on-demand", "on-demand", "spot"],
        "usd_per_hour": [5.12, 9.80, 3.92],
    }
)


def make_usage(n: int, seed: int = 7) -> pd.DataFrame:
    """``n`` requests over 24 h with the trace's tokens and the replay's assignment mix."""
    trace = read_azure_trace(AZURE_CONV)
    rng = np.random.Generator(np.random.PCG64(seed))
    pick = rng.integers(0, len(trace), n)
    models = list(MODEL_MIX)

    def cat(codes: np.ndarray, names: list[str]) -> pd.Categorical[str]:
        return pd.Categorical.from_codes(codes, categories=pd.Index(names))  # type: ignore[call-overload,no-any-return]

    return pd.DataFrame(
        {
            "ts": pd.Timestamp(T0) + pd.to_timedelta(np.sort(rng.uniform(0, HOURS * 3600, n)), "s"),
            "model": cat(rng.choice(len(models), n, p=list(MODEL_MIX.values())), models),
            "customer": cat(
                rng.choice(len(CUSTOMERS), n, p=zipf_weights(len(CUSTOMERS))), list(CUSTOMERS)
            ),
            "request_type": cat(rng.integers(0, 2, n), ["chat", "summarize"]),
            "input_tokens": trace["input_tokens"].to_numpy()[pick],
            "output_tokens": trace["output_tokens"].to_numpy()[pick],
        }
    )


def make_fleet(interval_s: float = 10.0) -> dict[str, pd.DataFrame]:
    """Samples, processes and allocations of the 8-GPU bench fleet over 24 h."""
    n = int(HOURS * 3600 / interval_s)
    ts = pd.Timestamp(T0) + pd.to_timedelta(np.arange(n) * interval_s, "s")
    samples = pd.concat(
        [
            pd.DataFrame(
                {
                    "ts": ts,
                    "gpu_uuid": f"GPU-{i}",
                    "gpu_type": t,
                    "pricing_class": c,
                    "interval_s": interval_s,
                }
            )
            for i, (t, c) in enumerate(GPUS)
        ],
        ignore_index=True,
    )
    rng = np.random.default_rng(1)
    processes = pd.concat(
        [
            pd.DataFrame(
                {
                    "ts": ts,
                    "gpu_uuid": f"GPU-{g}",
                    "model": m,
                    "sm_util": rng.uniform(10, 70, n) * f,
                    "interval_s": interval_s,
                }
            )
            for m, g, f in ALLOC
        ],
        ignore_index=True,
    )
    allocations = pd.DataFrame(
        {
            "model": [m for m, _, _ in ALLOC],
            "gpu_uuid": [f"GPU-{g}" for _, g, _ in ALLOC],
            "fraction": [f for _, _, f in ALLOC],
            "start": pd.Timestamp(T0),
            "end": pd.NaT,
        }
    )
    allocations["end"] = pd.to_datetime(allocations["end"], utc=True)
    return {"samples": samples, "processes": processes, "allocations": allocations}


def naive_split(usage: pd.DataFrame, weights: AttributionWeights) -> int:
    """Baseline: per-event Python loop accumulating weights per hour x model x tenant."""
    acc: dict[tuple[object, ...], float] = defaultdict(float)
    for ts, m, c, r, a, b in zip(
        usage["ts"],
        usage["model"],
        usage["customer"],
        usage["request_type"],
        usage["input_tokens"],
        usage["output_tokens"],
        strict=True,
    ):
        acc[(ts.floor("h"), m, c, r)] += a * weights.input + b * weights.output
    return len(acc)


def register(bench_app: typer.Typer) -> None:
    """Add `bench attribute`."""

    @bench_app.command("attribute")
    def attribute_cmd(
        events: Annotated[int, typer.Option(min=1000)] = 10_000_000,
        baseline_events: Annotated[int, typer.Option(min=0)] = 200_000,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Attribute N events over 24 h with the pure function; baseline loop on a subset."""
        if not AZURE_CONV.exists():
            fail(f"Azure trace not found at {AZURE_CONV} (set COSTCTL_SHARED_DIR)")
        t: dict[str, float] = {}
        with timer(t, "build_s"):
            usage = make_usage(events)
            fleet = make_fleet()
        weights = AttributionWeights()
        window = Window(T0, T0 + timedelta(hours=HOURS))
        with timer(t, "seconds"):
            result = attribute(
                samples=fleet["samples"],
                processes=fleet["processes"],
                allocations=fleet["allocations"],
                usage=usage,
                prices=PRICES,
                window=window,
                weights=weights,
            )
        conserved = int(result.rows["cost_cents"].sum()) == int(
            result.hours["metered_cost_cents"].sum()
        )
        base_rate = None
        if baseline_events:
            with timer(t, "baseline_s"):
                naive_split(usage.iloc[:baseline_events], weights)
            base_rate = baseline_events / t["baseline_s"]
        rate = events / t["seconds"]
        emit(
            {
                "bench": "attribute",
                "events": events,
                "seconds": round(t["seconds"], 3),
                "events_per_s": round(rate),
                "rows_out": len(result.rows),
                "hours": len(result.hours),
                "gpu_samples": len(fleet["samples"]),
                "metered_usd": round(float(result.hours["metered_cost_cents"].sum()) / 100, 2),
                "conserved_to_the_cent": conserved,
                "build_s": round(t["build_s"], 3),
                "baseline": "per-event python loop (split only)",
                "baseline_events": baseline_events,
                "baseline_events_per_s": round(base_rate) if base_rate else None,
                "speedup_vs_baseline": round(rate / base_rate, 1) if base_rate else None,
            },
            as_json,
        )
