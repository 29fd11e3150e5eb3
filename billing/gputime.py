"""Metered, allocated, busy, unallocated and unpriced GPU time, time-exact per physical GPU.

Pure: frames in, frames out (the rules are written in billing.attribution's docstring).
Every quantity is integrated over the elementary segments of each GPU's timeline
(billing.intervals), then summed per ledger bucket (column ``hour``: the bucket's start).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from billing.intervals import I64, Timeline, bucket_cuts, build_timeline, first_per_segment, to_ns
from billing.windows import Window

F64 = npt.NDArray[np.float64]
NS = 1_000_000_000
# A price version without effective_from is in force from the start of time.
_ALWAYS = pd.Timestamp("1970-01-01", tz="UTC")


@dataclass(frozen=True)
class GpuTime:
    """Per bucket: what the GPUs metered and where their time went.

    models: hour, model, alloc_s, alloc_cost, busy_s, busy_cost (busy = what tenants pay
    under idle_policy utilization); unallocated: hour, gpu_seconds, gpu_cost_usd; unpriced:
    hour, gpu_type, pricing_class, gpu_seconds; metered: hour, metered_s, metered_cost
    (metered_s includes unpriced seconds, metered_cost prices them at 0).
    """

    models: pd.DataFrame
    unallocated: pd.DataFrame
    unpriced: pd.DataFrame
    metered: pd.DataFrame


@dataclass(frozen=True)
class _Spans:
    """Intervals [start, end) on GPU codes ``dev`` (ns), clipped to the window, non-empty."""

    dev: I64
    start: I64
    end: I64
    rows: I64  # index into the source frame


def _spans(dev: I64, start: I64, end: I64, window: Window, *, sort: bool = False) -> _Spans:
    """The non-empty parts inside ``window`` of [start, end) on GPU codes ``dev`` (-1: none)."""
    w0, w1 = to_ns(pd.DatetimeIndex([window.start, window.end]))
    s, e = np.clip(start, w0, w1), np.clip(end, w0, w1)
    rows = np.flatnonzero((e > s) & (dev >= 0))
    if sort:
        rows = rows[np.lexsort((start[rows], dev[rows]))]  # by unclipped start (rule 2)
    return _Spans(dev[rows], s[rows], e[rows], rows)


def _codes(index: pd.Index, values: pd.Series) -> I64:
    """Position of each value in ``index`` (-1 when absent)."""
    return np.asarray(index.get_indexer(pd.Index(values.astype(str))), dtype=np.int64)


def _duration_ns(interval_s: pd.Series) -> I64:
    return np.round(interval_s.to_numpy(dtype=float) * NS).astype(np.int64)


def _rates(buckets: I64, tc: I64, types: pd.DataFrame, prices: pd.DataFrame) -> F64:
    """USD per GPU-second of each (bucket, tc): the version in force at the bucket's start."""
    want = types.iloc[tc].reset_index(drop=True)
    want["hour"] = pd.to_datetime(buckets, utc=True, unit="ns").as_unit("ns")
    want["_i"] = np.arange(len(want))
    p = prices.astype({"gpu_type": str, "pricing_class": str})
    eff = p["effective_from"] if "effective_from" in p.columns else pd.Series(pd.NaT, p.index)
    p = p.assign(effective_from=pd.to_datetime(eff, utc=True).fillna(_ALWAYS).dt.as_unit("ns"))[
        ["gpu_type", "pricing_class", "usd_per_hour", "effective_from"]
    ]
    got = pd.merge_asof(
        want.sort_values("hour"),
        p.sort_values("effective_from"),
        left_on="hour",
        right_on="effective_from",
        by=["gpu_type", "pricing_class"],
        direction="backward",
    ).sort_values("_i")
    return np.asarray(got["usd_per_hour"].to_numpy(dtype=float) / 3600.0)


@dataclass(frozen=True)
class _Meter:
    line: Timeline
    dt: F64  # metered seconds per segment (0 where no sample covers it)
    bucket: I64  # bucket start (ns) per segment
    rate: F64  # USD per GPU-second per segment; NaN where unpriced or not metered
    tc: I64  # (gpu type, pricing class) code per segment; -1 = not metered
    types: pd.DataFrame


def _meter(
    samples: pd.DataFrame,
    s: _Spans,
    extra: list[_Spans],
    prices: pd.DataFrame,
    step: int,
) -> _Meter:
    """Cut the timelines, mark metered segments, and price each (rules 1, 2, 3, 4)."""
    cut_dev, cut_t = bucket_cuts(s.dev, s.start, s.end, step)
    devs = [s.dev, s.dev, cut_dev] + [x.dev for x in extra] * 2
    ts = [s.start, s.end, cut_t] + [x.start for x in extra] + [x.end for x in extra]
    line = build_timeline(np.concatenate(devs), np.concatenate(ts))
    t_code, t_names = pd.factorize(samples["gpu_type"].astype(str))
    c_code, c_names = pd.factorize(samples["pricing_class"].astype(str))
    tc_all = (np.asarray(t_code) * len(c_names) + np.asarray(c_code)).astype(np.int64)
    seg, item = line.expand(s.dev, s.start, s.end)
    tc = first_per_segment(seg, tc_all[s.rows][item], line.size)
    dt = line.seconds() * (tc >= 0)
    bucket = (line.t // step) * step
    types = pd.DataFrame(
        {
            "gpu_type": np.repeat(np.asarray(t_names, dtype=object), len(c_names)),
            "pricing_class": np.tile(np.asarray(c_names, dtype=object), len(t_names)),
        }
    )
    rate = np.full(line.size, np.nan)
    metered = np.flatnonzero(dt > 0)
    if len(metered):
        width = max(len(types), 1)
        combo = (bucket[metered] // step) * width + tc[metered]
        uniq, inv = np.unique(combo, return_inverse=True)
        rate[metered] = _rates((uniq // width) * step, uniq % width, types, prices)[inv]
    return _Meter(line, dt, bucket, rate, tc, types)


def _per_bucket(bucket: I64, **values: F64) -> pd.DataFrame:
    df = pd.DataFrame({"hour": bucket, **values})
    out = df.groupby("hour", sort=True).sum().reset_index()
    out["hour"] = _hours(out["hour"])
    return out


def gpu_time(
    *,
    samples: pd.DataFrame,
    processes: pd.DataFrame,
    allocations: pd.DataFrame,
    prices: pd.DataFrame,
    window: Window,
    resolution_s: int,
) -> GpuTime:
    """Integrate metered, allocated and busy GPU time over each GPU's timeline per bucket."""
    step = resolution_s * NS
    codes, uniq = pd.factorize(samples["gpu_uuid"].astype(str))
    gpus = pd.Index(uniq)
    s_start = to_ns(samples["ts"])
    s = _spans(
        np.asarray(codes, np.int64),
        s_start,
        s_start + _duration_ns(samples["interval_s"]),
        window,
        sort=True,
    )
    if not len(s.rows):
        return _empty()
    alloc = _alloc_spans(allocations, gpus, window)
    p_start = to_ns(processes["ts"]) if len(processes) else np.empty(0, np.int64)
    p_end = p_start + (_duration_ns(processes["interval_s"]) if len(processes) else 0)
    proc = _spans(_codes(gpus, processes["gpu_uuid"]), p_start, p_end, window)
    m = _meter(samples, s, [alloc, proc], prices, step)
    priced = (m.dt > 0) & ~np.isnan(m.rate)
    h = _held(m, priced, allocations, alloc)
    on = np.flatnonzero(m.dt > 0)
    return GpuTime(
        models=_models(m, h, _busy_share(m, h, processes, proc)),
        unallocated=_unallocated(m, h, priced),
        unpriced=_unpriced(m),
        metered=_per_bucket(
            m.bucket[on], metered_s=m.dt[on], metered_cost=np.nan_to_num(m.dt[on] * m.rate[on])
        ),
    )


def _hours(ns: pd.Series) -> pd.Series:
    return pd.Series(pd.to_datetime(ns.to_numpy(np.int64), utc=True, unit="ns"), index=ns.index)


def _models(m: _Meter, h: _Held, busy: F64) -> pd.DataFrame:
    """Held and busy seconds and USD per bucket x model."""
    dt, rate = m.dt[h.seg], m.rate[h.seg]
    models = pd.DataFrame(
        {
            "hour": m.bucket[h.seg],
            "model": h.model,
            "alloc_s": h.share * dt,
            "alloc_cost": h.share * dt * rate,
            "busy_s": busy * dt,
            "busy_cost": busy * dt * rate,
        }
    )
    models = models.groupby(["hour", "model"], sort=False).sum().reset_index()
    models["hour"] = _hours(models["hour"])
    models["model"] = np.asarray(h.models, dtype=object)[models["model"].to_numpy()]
    return models


def _unallocated(m: _Meter, h: _Held, priced: npt.NDArray[np.bool_]) -> pd.DataFrame:
    """The 1 - min(1, F) of priced metered time that nobody held, per bucket."""
    un_s = np.where(priced, (1.0 - np.minimum(1.0, h.F)) * m.dt, 0.0)
    on = np.flatnonzero(priced)
    return _per_bucket(m.bucket[on], gpu_seconds=un_s[on], gpu_cost_usd=un_s[on] * m.rate[on])


def _unpriced(m: _Meter) -> pd.DataFrame:
    """Metered seconds without a price per bucket x (gpu_type, pricing_class)."""
    lost = np.flatnonzero((m.dt > 0) & np.isnan(m.rate))
    out = pd.DataFrame({"hour": m.bucket[lost], "tc": m.tc[lost], "gpu_seconds": m.dt[lost]})
    out = out.groupby(["hour", "tc"], sort=True)["gpu_seconds"].sum().reset_index()
    out = pd.concat([out, m.types.iloc[out["tc"].to_numpy()].reset_index(drop=True)], axis=1)
    out["hour"] = _hours(out["hour"])
    return out[["hour", "gpu_type", "pricing_class", "gpu_seconds"]]


def _alloc_spans(allocations: pd.DataFrame, gpus: pd.Index, window: Window) -> _Spans:
    if allocations.empty:
        return _Spans(*(np.empty(0, np.int64) for _ in range(4)))
    w1 = pd.Timestamp(window.end)
    start = to_ns(allocations["start"])
    end = to_ns(pd.to_datetime(allocations["end"], utc=True).fillna(w1))
    return _spans(_codes(gpus, allocations["gpu_uuid"]), start, end, window)


@dataclass(frozen=True)
class _Held:
    """One row per (segment, model) held: key = seg x len(models) + model code (ascending)."""

    key: I64
    seg: I64
    model: I64
    share: F64  # the model's fractions on that segment after oversubscription scaling
    F: F64  # per segment of the timeline: Σ fractions held before scaling
    models: pd.Index


def _held(m: _Meter, priced: npt.NDArray[np.bool_], allocations: pd.DataFrame, a: _Spans) -> _Held:
    """Each model's share of each priced segment (rules 5, 6, 7)."""
    models = pd.Index(pd.unique(allocations["model"].astype(str))) if len(a.rows) else pd.Index([])
    seg, item = m.line.expand(a.dev, a.start, a.end)
    keep = priced[seg]
    seg, rows = seg[keep], a.rows[item[keep]]
    if "source" in allocations.columns:
        observed = allocations["source"].astype(str).to_numpy()[rows] != "planned"
        has_obs = np.zeros(m.line.size, dtype=bool)
        has_obs[seg[observed]] = True
        keep = observed | ~has_obs[seg]
        seg, rows = seg[keep], rows[keep]
    frac = allocations["fraction"].to_numpy(dtype=float)[rows]
    F = np.bincount(seg, weights=frac, minlength=m.line.size)
    code = np.asarray(models.get_indexer(pd.Index(allocations["model"].astype(str))), np.int64)[
        rows
    ]
    nm = max(len(models), 1)
    key, inv = np.unique(seg * nm + code, return_inverse=True)
    share = np.bincount(inv, weights=frac / np.maximum(1.0, F[seg]), minlength=len(key))
    return _Held(key, key // nm, key % nm, share.astype(np.float64), F.astype(np.float64), models)


def _busy_share(m: _Meter, h: _Held, processes: pd.DataFrame, p: _Spans) -> F64:
    """Share of each held (segment, model) its processes kept busy (rule 8).

    Details: u = Σ over the model's process streams (device, pid) of the mean sm_util/100 of
    that stream's known readings covering the segment; busy = min(u, share) where some
    reading is known, else share (unknown utilisation is billed in full).
    """
    busy = h.share.copy()
    if not len(p.rows) or not len(h.key):
        return busy
    seg, item = m.line.expand(p.dev, p.start, p.end)
    rows = p.rows[item]
    util = processes["sm_util"].to_numpy(dtype=float)[rows]
    code = np.asarray(h.models.get_indexer(pd.Index(processes["model"].astype(str))), np.int64)[
        rows
    ]
    ok = ~np.isnan(util) & (code >= 0)
    seg, rows, util, code = seg[ok], rows[ok], util[ok], code[ok]
    want = seg * max(len(h.models), 1) + code
    at = np.minimum(np.searchsorted(h.key, want), len(h.key) - 1)
    ok = h.key[at] == want
    if not ok.any():
        return busy
    if {"device_uuid", "pid"} <= set(processes.columns):
        names = processes["device_uuid"].astype(str) + "/" + processes["pid"].astype(str)
        stream = np.asarray(pd.factorize(names)[0], np.int64)[rows[ok]]
    else:
        stream = np.zeros(int(ok.sum()), np.int64)
    ns = int(stream.max()) + 1
    k3, inv = np.unique(at[ok] * ns + stream, return_inverse=True)
    mean = np.bincount(inv, weights=util[ok] / 100.0) / np.bincount(inv)
    u = np.bincount(k3 // ns, weights=mean, minlength=len(h.key))
    known = np.bincount(k3 // ns, minlength=len(h.key)) > 0
    busy[known] = np.minimum(u[known], h.share[known])
    return busy


def _empty() -> GpuTime:
    hour = pd.Series(dtype="datetime64[ns, UTC]")
    f = pd.Series(dtype=float)
    return GpuTime(
        models=pd.DataFrame(
            {"hour": hour, "model": pd.Series(dtype=object), "alloc_s": f, "alloc_cost": f}
        ).assign(busy_s=f, busy_cost=f),
        unallocated=pd.DataFrame({"hour": hour, "gpu_seconds": f, "gpu_cost_usd": f}),
        unpriced=pd.DataFrame(
            {
                "hour": hour,
                "gpu_type": pd.Series(dtype=object),
                "pricing_class": pd.Series(dtype=object),
                "gpu_seconds": f,
            }
        ),
        metered=pd.DataFrame({"hour": hour, "metered_s": f, "metered_cost": f}),
    )
