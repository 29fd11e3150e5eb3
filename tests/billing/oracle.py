"""A second, deliberately naive implementation of the attribution rules, second by second.

It paints every whole second of the window for every GPU and applies billing.attribution's
rules 1-8 literally, so inputs whose times are whole seconds have an exact expected answer
for every bucket x model, independent of billing.gputime's interval arithmetic.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import pandas as pd

from billing.windows import Window


def _f() -> defaultdict[int, float]:
    return defaultdict(float)


def _fm() -> defaultdict[tuple[int, str], float]:
    return defaultdict(float)


@dataclass
class Expected:
    """Seconds and USD per bucket (epoch seconds of its start), and per bucket x model."""

    metered_s: defaultdict[int, float] = field(default_factory=_f)
    metered_usd: defaultdict[int, float] = field(default_factory=_f)
    unpriced_s: defaultdict[int, float] = field(default_factory=_f)
    unallocated_s: defaultdict[int, float] = field(default_factory=_f)
    alloc_s: defaultdict[tuple[int, str], float] = field(default_factory=_fm)
    busy_s: defaultdict[tuple[int, str], float] = field(default_factory=_fm)
    alloc_usd: defaultdict[tuple[int, str], float] = field(default_factory=_fm)


def _sec(ts: object) -> int:
    return int(pd.Timestamp(ts).value // 1_000_000_000)  # type: ignore[arg-type]


def _rate(prices: pd.DataFrame, gpu_type: str, cls: str, at: int) -> float | None:
    p = prices[(prices["gpu_type"] == gpu_type) & (prices["pricing_class"] == cls)]
    if "effective_from" in p.columns:
        eff = [_sec(e) if not pd.isna(e) else 0 for e in p["effective_from"]]
        p = p.assign(e=eff)
        p = p[p["e"] <= at].sort_values("e")
    return None if p.empty else float(p["usd_per_hour"].iloc[-1]) / 3600.0


def expected(
    samples: pd.DataFrame,
    processes: pd.DataFrame,
    allocations: pd.DataFrame,
    prices: pd.DataFrame,
    window: Window,
    resolution_s: int,
) -> Expected:
    """Apply the rules second by second (every time in the inputs must be a whole second)."""
    out = Expected()
    w0, w1 = int(window.start.timestamp()), int(window.end.timestamp())
    rates: dict[tuple[str, str, int], float | None] = {}
    for gpu, s in samples.groupby("gpu_uuid"):
        meter: dict[int, tuple[str, str]] = {}
        for r in sorted(s.itertuples(), key=lambda r: _sec(r.ts)):  # earliest start names it
            for t in range(max(_sec(r.ts), w0), min(_sec(r.ts) + int(r.interval_s), w1)):
                meter.setdefault(t, (r.gpu_type, r.pricing_class))
        held: dict[int, list[tuple[str, float, str]]] = defaultdict(list)
        for a in allocations[allocations["gpu_uuid"] == gpu].itertuples():
            end = w1 if pd.isna(a.end) else _sec(a.end)
            for t in range(max(_sec(a.start), w0), min(end, w1)):
                held[t].append((a.model, a.fraction, getattr(a, "source", "observed")))
        util: dict[tuple[int, str], dict[object, list[float]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for p in processes[processes["gpu_uuid"] == gpu].itertuples():
            if pd.isna(p.sm_util):
                continue
            stream = (getattr(p, "device_uuid", ""), getattr(p, "pid", 0))
            for t in range(max(_sec(p.ts), w0), min(_sec(p.ts) + int(p.interval_s), w1)):
                util[(t, p.model)][stream].append(p.sm_util)
        for t, (gpu_type, cls) in meter.items():
            bucket = t // resolution_s * resolution_s
            out.metered_s[bucket] += 1
            key = (gpu_type, cls, bucket)
            if key not in rates:
                rates[key] = _rate(prices, gpu_type, cls, bucket)
            rate = rates[key]
            if rate is None:
                out.unpriced_s[bucket] += 1
                continue
            out.metered_usd[bucket] += rate
            _second(out, t, bucket, rate, held[t], util)
    return out


def _second(
    out: Expected,
    t: int,
    bucket: int,
    rate: float,
    held: list[tuple[str, float, str]],
    util: dict[tuple[int, str], dict[object, list[float]]],
) -> None:
    if any(src != "planned" for _, _, src in held):
        held = [h for h in held if h[2] != "planned"]
    total = sum(f for _, f, _ in held)
    out.unallocated_s[bucket] += 1 - min(1.0, total)
    share: dict[str, float] = defaultdict(float)
    for model, f, _ in held:
        share[model] += f / max(1.0, total)
    for model, f in share.items():
        streams = util.get((t, model), {})
        u = sum(sum(v) / len(v) / 100.0 for v in streams.values())
        busy = min(u, f) if streams else f
        out.alloc_s[(bucket, model)] += f
        out.busy_s[(bucket, model)] += busy
        out.alloc_usd[(bucket, model)] += f * rate
