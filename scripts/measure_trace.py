"""Measure the synthetic workload's parameters from the Azure LLM inference traces (2023).

Usage: .venv/bin/python scripts/measure_trace.py [DIR]   (default ../shared/data/azure-llm-2023)

Prints, per trace kind (conv, code): rows, span, mean arrival rate, the per-5-minute rate
relative to the mean (the shape over the trace), the coefficient of variation of
inter-arrival gaps, and input/output token quantiles. billing/synthetic.py holds the
numbers it printed; nothing of the traces is copied.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd


def say(*parts: object) -> None:
    """Write one line to stdout."""
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")


QUANTILES = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)


def measure(path: Path) -> None:
    """Print the parameters of one trace file."""
    df = pd.read_csv(path)
    ts = pd.to_datetime(df["TIMESTAMP"], utc=True, format="mixed").sort_values()
    offset = (ts - ts.iloc[0]).dt.total_seconds().to_numpy()
    span = float(offset[-1])
    gaps = np.diff(offset)
    buckets = np.bincount((offset // 300).astype(int))[: int(span // 300)]
    say(f"== {path.name}")
    say(f"rows {len(df)}  first {ts.iloc[0]}  last {ts.iloc[-1]}  span_s {span:.1f}")
    say(f"mean_rate_per_s {len(df) / span:.4f}  gap_cv {gaps.std() / gaps.mean():.3f}")
    say("rate_per_5min_rel_mean", [round(float(b) / buckets.mean(), 3) for b in buckets])
    for col in ("ContextTokens", "GeneratedTokens"):
        q = df[col].quantile(list(QUANTILES)).to_numpy()
        say(col, "quantiles", dict(zip(QUANTILES, [round(v) for v in q], strict=True)))
        say(col, f"mean {df[col].mean():.1f}")
    say(
        "corr(log in, log out)",
        round(
            float(
                np.corrcoef(np.log1p(df["ContextTokens"]), np.log1p(df["GeneratedTokens"]))[0, 1]
            ),
            3,
        ),
    )


def main() -> None:
    """Measure every AzureLLMInferenceTrace_*.csv in the folder."""
    here = Path(__file__).resolve().parents[1]
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else here.parent / "shared/data/azure-llm-2023"
    for path in sorted(folder.glob("AzureLLMInferenceTrace_*.csv")):
        measure(path)


if __name__ == "__main__":
    main()
