"""Turn an Azure LLM inference trace into usage events, deterministically from a seed.

The trace has only TIMESTAMP, ContextTokens, GeneratedTokens. The rest is assigned:

- model: drawn per request from MODEL_MIX (weights sum to 1) with numpy's PCG64(seed);
- customer: drawn from CUSTOMERS with Zipf weights 1/rank^1.1 (a few big tenants, a long tail);
- request_type: from the tokens themselves: code traces give ``code-completion`` (<= 32 output
  tokens) or ``code-gen``; conversation traces give ``summarize`` (>= 2048 input and <= 128
  output tokens) or ``chat``;
- id: ``<trace stem>:<loop>:<row>``, source ``replay/<trace stem>/seed<seed>``, so replaying the
  same trace with the same seed re-sends the same ids and is de-duplicated;
- time: ``start + (trace offset / speed)``; latency_ms: 40 + 0.15 x input + 22 x output (a
  prefill + decode model, synthetic).
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from billing.schemas import IngestResult, UsageEventIn

MODEL_MIX: dict[str, float] = {
    "llama-3-70b": 0.30,
    "llama-3-8b": 0.35,
    "mistral-7b": 0.20,
    "mixtral-8x7b": 0.15,
}
CUSTOMERS: tuple[str, ...] = (
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
)


class TraceError(ValueError):
    """A trace file that cannot be read as an Azure LLM trace."""


def read_azure_trace(path: Path) -> pd.DataFrame:
    """Rows with offset_s (from the first request), input_tokens, output_tokens."""
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from exc
    need = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
    if not need <= set(df.columns):
        raise TraceError(f"{path}: expected columns {sorted(need)}, found {list(df.columns)}")
    ts = pd.to_datetime(df["TIMESTAMP"], utc=True, format="mixed")
    return pd.DataFrame(
        {
            "offset_s": (ts - ts.min()).dt.total_seconds(),
            "input_tokens": df["ContextTokens"].astype("int64").clip(lower=0),
            "output_tokens": df["GeneratedTokens"].astype("int64").clip(lower=0),
        }
    )


def zipf_weights(n: int, s: float = 1.1) -> np.ndarray:
    """Normalised weights 1/rank^s for ranks 1..n."""
    w = 1.0 / np.arange(1, n + 1) ** s
    out: np.ndarray = w / w.sum()
    return out


def assign(trace: pd.DataFrame, *, seed: int, code: bool) -> pd.DataFrame:
    """Add model, customer and request_type columns (pure and deterministic for a seed)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    n = len(trace)
    models = np.array(list(MODEL_MIX))
    out = trace.copy()
    out["model"] = models[rng.choice(len(models), size=n, p=np.array(list(MODEL_MIX.values())))]
    out["customer"] = np.array(CUSTOMERS)[
        rng.choice(len(CUSTOMERS), size=n, p=zipf_weights(len(CUSTOMERS)))
    ]
    if code:
        out["request_type"] = np.where(out["output_tokens"] <= 32, "code-completion", "code-gen")
    else:
        summarize = (out["input_tokens"] >= 2048) & (out["output_tokens"] <= 128)
        out["request_type"] = np.where(summarize, "summarize", "chat")
    return out


def _latency_ms(frame: pd.DataFrame) -> pd.Series:
    """Synthetic latency of each request. Details: 40 + 0.15 x input + 22 x output ms."""
    return 40 + 0.15 * frame["input_tokens"] + 22 * frame["output_tokens"]


def _usage_events(
    ids: list[str], times: list[datetime], frame: pd.DataFrame, latency: pd.Series, source: str
) -> list[UsageEventIn]:
    """One UsageEventIn per row of an assigned frame (model, customer, request type, tokens)."""
    return [
        UsageEventIn(
            id=i,
            source=source,
            time=t,
            model=m,
            customer=c,
            request_type=r,
            input_tokens=int(a),
            output_tokens=int(b),
            latency_ms=float(lat),
            status="ok",
        )
        for i, t, m, c, r, a, b, lat in zip(
            ids,
            times,
            frame["model"],
            frame["customer"],
            frame["request_type"],
            frame["input_tokens"].tolist(),
            frame["output_tokens"].tolist(),
            latency.tolist(),
            strict=True,
        )
    ]


def to_events(
    assigned: pd.DataFrame, *, start: datetime, speed: float, stem: str, seed: int, loop: int = 0
) -> list[UsageEventIn]:
    """Usage events for an assigned trace, timed from ``start`` at ``speed`` x real time."""
    if speed <= 0:
        raise ValueError("speed must be > 0")
    source = f"replay/{stem}/seed{seed}"
    latency = _latency_ms(assigned)
    times = [start + timedelta(seconds=o / speed) for o in assigned["offset_s"]]
    ids = [f"{stem}:{loop}:{i}" for i in range(len(assigned))]
    return _usage_events(ids, times, assigned, latency, source)


def load_events(
    path: Path, *, seed: int, start: datetime, speed: float, loop: int = 0
) -> list[UsageEventIn]:
    """Read, assign and time a trace in one call."""
    trace = read_azure_trace(path)
    stem = path.stem.removeprefix("AzureLLMInferenceTrace_")
    code = "code" in stem.lower()
    return to_events(
        assign(trace, seed=seed, code=code),
        start=start,
        speed=speed,
        stem=stem,
        seed=seed,
        loop=loop,
    )


@dataclass
class ReplayStats:
    """Totals of a replay."""

    sent: int = 0
    inserted: int = 0
    duplicates: int = 0
    batches: int = 0


def _batches(events: Sequence[UsageEventIn], size: int) -> Iterator[Sequence[UsageEventIn]]:
    for i in range(0, len(events), size):
        yield events[i : i + size]


def run_replay(
    events: Sequence[UsageEventIn],
    sink: Callable[[Sequence[UsageEventIn]], IngestResult],
    *,
    realtime: bool,
    now: Callable[[], datetime],
    sleep: Callable[[float], None] = _time.sleep,
    batch_size: int = 5000,
    tick_s: float = 0.5,
) -> ReplayStats:
    """Send events to ``sink``: all at once, or (``realtime``) each when its time has come.

    Details: in realtime mode the events due by now are flushed every ``tick_s``, so the
    store sees them within ``tick_s`` of their timestamp.
    """
    stats = ReplayStats()

    def flush(chunk: Sequence[UsageEventIn]) -> None:
        for part in _batches(chunk, batch_size):
            r = sink(part)
            stats.sent += len(part)
            stats.inserted += r.inserted
            stats.duplicates += r.duplicates
            stats.batches += 1

    if not realtime:
        flush(events)
        return stats
    ordered = sorted(events, key=lambda e: e["time"])
    i = 0
    while i < len(ordered):
        due = now()
        j = i
        while j < len(ordered) and ordered[j]["time"] <= due:
            j += 1
        if j > i:
            flush(ordered[i:j])
            i = j
        if i < len(ordered):
            sleep(min(tick_s, max(0.0, (ordered[i]["time"] - now()).total_seconds())))
    return stats


def _assign_window(frame: pd.DataFrame, seed: int, code: bool) -> pd.DataFrame:
    first = int(frame["epoch_s"].iloc[0])
    out = assign(frame, seed=int(np.uint32(seed * 1_000_003 + first)), code=code)
    out["latency_ms"] = _latency_ms(out)
    out["event_id"] = [f"{int(e * 1e6)}:{i}" for i, e in enumerate(out["epoch_s"].tolist())]
    return out


def workload_events(frame: pd.DataFrame, *, seed: int, stem: str, code: bool) -> list[UsageEventIn]:
    """Usage events for requests on the wall clock (epoch_s, input/output tokens).

    Details: models and customers are drawn as in ``assign`` from PCG64 seeded by ``seed``
    and the frame's first second; ids are ``<stem>:<epoch microseconds>:<row>``, source
    ``workload/<stem>/seed<seed>``, so disjoint windows never share an id.
    """
    if frame.empty:
        return []
    x = _assign_window(frame, seed, code)
    source = f"workload/{stem}/seed{seed}"
    ids = [f"{stem}:{i}" for i in x["event_id"]]
    times = [datetime.fromtimestamp(e, UTC) for e in x["epoch_s"].tolist()]
    return _usage_events(ids, times, x, x["latency_ms"], source)


def workload_rows(
    frame: pd.DataFrame, *, seed: int, stem: str, code: bool, sqlite_text: bool
) -> tuple[list[tuple[Any, ...]], pd.DataFrame]:
    """The same requests as ``workload_events`` as billing.ingest USAGE_COLUMNS rows, and the
    assigned frame (for the caller's per-model load).

    ``sqlite_text``: times as SQLite's UTC text (billing.schemas.utc_text's format).
    """
    if frame.empty:
        return [], frame.assign(model=[], customer=[], request_type=[])
    x = _assign_window(frame, seed, code)
    us = (x["epoch_s"].to_numpy() * 1e6).astype("int64").astype("datetime64[us]")
    if sqlite_text:
        times: list[Any] = [t.replace("T", " ") for t in np.datetime_as_string(us, unit="us")]
    else:
        times = [datetime.fromtimestamp(e, UTC) for e in x["epoch_s"].tolist()]
    source = f"workload/{stem}/seed{seed}"
    rows = [
        (source, f"{stem}:{i}", t, m, c, r, a, b, lat, "ok", None)
        for i, t, m, c, r, a, b, lat in zip(
            x["event_id"],
            times,
            x["model"].tolist(),
            x["customer"].tolist(),
            x["request_type"].tolist(),
            x["input_tokens"].tolist(),
            x["output_tokens"].tolist(),
            x["latency_ms"].tolist(),
            strict=True,
        )
    ]
    return rows, x
