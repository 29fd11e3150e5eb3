"""The demo's workload on one clock: the Azure trace looped at 1x, or a synthetic stand-in.

Both give requests (time, input_tokens, output_tokens) in a window [start, end) of wall-clock
time, deterministically from a seed, thinned/scaled by the same daily multiplier ``diurnal``.

Measured parameters (``scripts/measure_trace.py`` on ../shared/data/azure-llm-2023,
AzureLLMInferenceTrace_{conv,code}.csv, run 2026-12-01; only these summary numbers are kept,
no rows): mean arrival rate over the trace's span, and token quantiles (pandas
``Series.quantile``, linear). The traces span one hour each (2023-11-16 18:15-19:14 UTC, a
Thursday, 10:15-11:14 US Pacific), so they carry no daily shape of their own; the daily
multiplier is an assumption (see ``diurnal``), not a measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from billing.replay import read_azure_trace, workload_events, workload_rows
from billing.schemas import UsageEventIn

QUANTILE_LEVELS = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)


@dataclass(frozen=True)
class TraceKind:
    """Measured parameters of one Azure trace kind."""

    name: str
    rate_per_s: float  # rows / span of the trace
    input_q: tuple[int, ...]  # ContextTokens at QUANTILE_LEVELS
    output_q: tuple[int, ...]  # GeneratedTokens at QUANTILE_LEVELS


# conv: 19366 rows over 3501.7 s; mean input 1154.7, mean output 211.1; gap CV 1.094
# (near Poisson); per-5-minute rate 0.77-1.32 x the mean.
CONV = TraceKind(
    "conv",
    5.5304,
    (2, 181, 207, 396, 1020, 1189, 2734, 4083, 4142, 14050),
    (7, 41, 54, 85, 129, 395, 424, 451, 601, 1000),
)
# code: 8819 rows over 3435.9 s; mean input 2047.8, mean output 27.9; gap CV 13.2 (bursty);
# per-5-minute rate 0.04-1.56 x the mean.
CODE = TraceKind(
    "code",
    2.5667,
    (3, 75, 147, 578, 1469, 2744, 5188, 7303, 7436, 7437),
    (6, 6, 7, 9, 13, 24, 55, 90, 251, 1899),
)
KINDS = {k.name: k for k in (CONV, CODE)}

# Daily multiplier: peak 1.0 (the trace's own rate, i.e. the trace at 1x) at the trace's
# midpoint hour 18:45 UTC, a US weekday working hour; trough 0.30 twelve hours later; daily
# mean 0.65. An assumption (the public 2023 traces cover one hour), stated in the README.
DIURNAL_PEAK_H = 18.75
DIURNAL_MEAN = 0.65
DIURNAL_AMPLITUDE = 0.35


def diurnal(hours_utc: np.ndarray) -> np.ndarray:
    """The daily multiplier (0.30..1.0) at hours of the UTC day (floats, 0..24)."""
    phase = 2 * math.pi * (hours_utc - DIURNAL_PEAK_H) / 24.0
    out: np.ndarray = DIURNAL_MEAN + DIURNAL_AMPLITUDE * np.cos(phase)
    return out


def _hours_utc(epoch_s: np.ndarray) -> np.ndarray:
    out: np.ndarray = (epoch_s % 86400.0) / 3600.0
    return out


def _epoch(t: datetime) -> float:
    return t.astimezone(UTC).timestamp()


def _frame(epoch_s: np.ndarray, tin: np.ndarray, tout: np.ndarray) -> pd.DataFrame:
    order = np.argsort(epoch_s, kind="stable")
    return pd.DataFrame(
        {
            "epoch_s": epoch_s[order],
            "input_tokens": tin[order].astype("int64"),
            "output_tokens": tout[order].astype("int64"),
        }
    )


def _quantile_draw(rng: np.random.Generator, q: tuple[int, ...], n: int) -> np.ndarray:
    """Inverse-CDF draws, log-linear between the measured quantiles."""
    u = rng.random(n)
    logs = np.log(np.maximum(np.array(q, dtype=float), 1.0))
    out: np.ndarray = np.rint(np.exp(np.interp(u, QUANTILE_LEVELS, logs)))
    return out


def synthetic_requests(kind: TraceKind, start: datetime, end: datetime, seed: int) -> pd.DataFrame:
    """Poisson arrivals at ``kind.rate_per_s x diurnal`` (per minute) with measured token draws.

    Details: each UTC minute m draws its count and tokens from PCG64([seed, m]), so any
    window gives the same requests for the minutes it covers. Input and output lengths are
    drawn independently (measured corr of their logs: conv 0.088, code -0.004).
    """
    m0, m1 = math.floor(_epoch(start) / 60), math.ceil(_epoch(end) / 60)
    parts = []
    for m in range(m0, m1):
        rng = np.random.Generator(np.random.PCG64([seed, m]))
        lam = kind.rate_per_s * 60.0 * float(diurnal(np.array([(m * 60 % 86400) / 3600.0]))[0])
        n = int(rng.poisson(lam))
        t = m * 60.0 + np.sort(rng.random(n)) * 60.0
        parts.append(
            (t, _quantile_draw(rng, kind.input_q, n), _quantile_draw(rng, kind.output_q, n))
        )
    if not parts:
        return _frame(np.array([]), np.array([]), np.array([]))
    frame = _frame(*(np.concatenate([p[i] for p in parts]) for i in range(3)))
    keep = (frame["epoch_s"] >= _epoch(start)) & (frame["epoch_s"] < _epoch(end))
    return frame[keep].reset_index(drop=True)


def looped_requests(trace: pd.DataFrame, start: datetime, end: datetime, seed: int) -> pd.DataFrame:
    """The trace (offset_s, input_tokens, output_tokens) looped at 1x on the epoch, thinned.

    Details: loop k covers [k x span, (k+1) x span) seconds since 1970 (span = last offset +
    the mean gap); each request is kept with probability ``diurnal`` at its time, drawn from
    PCG64([seed, k]), so any window gives the same requests.
    """
    off = trace["offset_s"].to_numpy(dtype=float)
    span = float(off[-1]) + float(off[-1]) / max(1, len(off) - 1)
    a, b = _epoch(start), _epoch(end)
    parts = []
    for k in range(math.floor(a / span), math.ceil(b / span)):
        rng = np.random.Generator(np.random.PCG64([seed, k]))
        t = k * span + off
        keep = rng.random(len(t)) < diurnal(_hours_utc(t))
        keep &= (t >= a) & (t < b)
        parts.append(
            (
                t[keep],
                trace["input_tokens"].to_numpy()[keep],
                trace["output_tokens"].to_numpy()[keep],
            )
        )
    if not parts:
        return _frame(np.array([]), np.array([]), np.array([]))
    return _frame(*(np.concatenate([p[i] for p in parts]) for i in range(3)))


def to_offsets(frame: pd.DataFrame, start: datetime) -> pd.DataFrame:
    """``frame`` with offset_s from ``start`` (what billing.replay's assign/to_events read)."""
    out = frame.copy()
    out["offset_s"] = out["epoch_s"] - _epoch(start)
    return out


def window_start(t: datetime, step: timedelta) -> datetime:
    """``t`` floored to a multiple of ``step`` since the epoch (UTC)."""
    s = step.total_seconds()
    return datetime.fromtimestamp(math.floor(_epoch(t) / s) * s, UTC)


@dataclass(frozen=True)
class DemoWorkload:
    """Requests on the wall clock: the real trace looped at 1x, or the synthetic stand-in."""

    stem: str
    code: bool
    seed: int
    kind: TraceKind
    trace: pd.DataFrame | None = None

    def requests(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Requests (epoch_s, input_tokens, output_tokens) in [start, end)."""
        if self.trace is not None:
            return looped_requests(self.trace, start, end, self.seed)
        return synthetic_requests(self.kind, start, end, self.seed)

    def events(self, start: datetime, end: datetime) -> list[UsageEventIn]:
        """Usage events (billing.replay.workload_events) for [start, end)."""
        return workload_events(
            self.requests(start, end), seed=self.seed, stem=self.stem, code=self.code
        )

    def rows(
        self, start: datetime, end: datetime, *, sqlite_text: bool
    ) -> tuple[list[tuple[Any, ...]], pd.DataFrame]:
        """The same requests as store rows and the assigned frame (billing.replay.workload_rows)."""
        return workload_rows(
            self.requests(start, end),
            seed=self.seed,
            stem=self.stem,
            code=self.code,
            sqlite_text=sqlite_text,
        )

    def describe(self) -> str:
        """One line for the demo's banner."""
        what = "trace" if self.trace is not None else "synthetic (measured from the Azure traces)"
        return f"{self.stem} {what}, 1x, daily multiplier {1 - 2 * DIURNAL_AMPLITUDE:.2f}-1.0"


def demo_workload(trace: Path | None, seed: int, kind: str = "conv") -> DemoWorkload:
    """The trace at ``trace`` when it is a file, else the synthetic workload of ``kind``.

    Raises: TraceError for an unreadable trace; KeyError for an unknown kind.
    """
    if trace is not None and trace.is_file():
        stem = trace.stem.removeprefix("AzureLLMInferenceTrace_")
        frame = read_azure_trace(trace).sort_values("offset_s").reset_index(drop=True)
        code = "code" in stem.lower()
        return DemoWorkload(stem, code, seed, CODE if code else CONV, frame)
    k = KINDS[kind]
    return DemoWorkload(f"synthetic-{k.name}", k is CODE, seed, k)
