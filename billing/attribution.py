"""Cost attribution: a pure function from a frozen window of measurements to ledger rows.

Inputs are pandas frames (see the ``*_COLUMNS`` constants); nothing here reads a clock, a
database or the network.

Conservation (tested): for every hour, the ledger rows' ``cost_cents`` add up to that hour's
metered cents, round(Σ GPU-seconds x price / 3600 x 100). Rows are whole cents, so any window
of whole hours and any grouping of rows also add up to the metered cents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from billing.config import AttributionWeights, IdlePolicy
from billing.kinds import IDLE, UNALLOCATED, LedgerKind
from billing.windows import Window

SAMPLE_COLUMNS = ["ts", "gpu_uuid", "gpu_type", "pricing_class", "interval_s"]
PROCESS_COLUMNS = ["ts", "gpu_uuid", "model", "sm_util", "interval_s"]
ALLOCATION_COLUMNS = ["model", "gpu_uuid", "fraction", "start", "end"]
USAGE_COLUMNS = ["ts", "model", "customer", "request_type", "input_tokens", "output_tokens"]
PRICE_COLUMNS = ["gpu_type", "pricing_class", "usd_per_hour"]
LEDGER_COLUMNS = [
    "hour",
    "model",
    "customer",
    "request_type",
    "kind",
    "gpu_seconds",
    "input_tokens",
    "output_tokens",
    "requests",
    "gpu_cost_usd",
    "cost_adjustment_usd",
    "cost_cents",
]
HOUR_COLUMNS = ["hour", "metered_gpu_seconds", "metered_cost_usd", "metered_cost_cents"]


class PriceMissingError(ValueError):
    """A metered GPU has no price for its type and pricing class."""


@dataclass(frozen=True)
class Attribution:
    """The result: ledger rows and, per hour, the metered totals they add up to."""

    rows: pd.DataFrame
    hours: pd.DataFrame


def _floor_hour(ts: pd.Series) -> pd.Series:
    floored: pd.Series = ts.dt.floor("h")
    return floored


def _in_window(frame: pd.DataFrame, window: Window, column: str = "ts") -> pd.DataFrame:
    start, end = pd.Timestamp(window.start), pd.Timestamp(window.end)
    return frame[(frame[column] >= start) & (frame[column] < end)]


def _metered(samples: pd.DataFrame, prices: pd.DataFrame) -> pd.DataFrame:
    """GPU-seconds and exact cost per hour x physical GPU.

    Details: a sample stands for ``interval_s`` seconds of its GPU, booked in the hour of its
    timestamp; cost = seconds x usd_per_hour / 3600.
    """
    s = samples.assign(hour=_floor_hour(samples["ts"]))
    g = s.groupby(["hour", "gpu_uuid", "gpu_type", "pricing_class"], observed=True, sort=False)
    m = g["interval_s"].sum().rename("metered_s").reset_index()
    m = m.merge(prices[PRICE_COLUMNS], on=["gpu_type", "pricing_class"], how="left")
    missing = m[m["usd_per_hour"].isna()][["gpu_type", "pricing_class"]].drop_duplicates()
    if len(missing):
        pairs = ", ".join(f"{t}/{c}" for t, c in missing.itertuples(index=False))
        raise PriceMissingError(f"no price for GPU type/pricing class: {pairs}")
    m["rate"] = m["usd_per_hour"] / 3600.0
    return m[["hour", "gpu_uuid", "metered_s", "rate"]]


def _empty_allocated() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "hour": pd.Series(dtype="datetime64[ns, UTC]"),
            "gpu_uuid": pd.Series(dtype=object),
            "model": pd.Series(dtype=object),
            "alloc_s": pd.Series(dtype=float),
        }
    )


def _allocated(allocations: pd.DataFrame, metered: pd.DataFrame, window: Window) -> pd.DataFrame:
    """Allocated GPU-seconds per hour x GPU x model, capped by what the GPU was metered.

    Details: alloc = fraction x min(overlap([start, end), hour), metered seconds of the GPU in
    that hour): an allocation cannot hold GPU time that was not metered (the current, partial
    hour; sampling gaps). If a GPU's total still exceeds its metered seconds (time-slice
    replicas whose fractions add up past 1), every allocation on it is scaled by
    metered / total, so no cost is created.
    """
    if allocations.empty or metered.empty:
        return _empty_allocated()
    w_start, w_end = pd.Timestamp(window.start), pd.Timestamp(window.end)
    a = allocations[ALLOCATION_COLUMNS].copy()
    end = pd.to_datetime(a["end"], utc=True).fillna(w_end)
    start = pd.to_datetime(a["start"], utc=True)
    a["end"] = end.where(end < w_end, w_end)
    a["start"] = start.where(start > w_start, w_start)
    a = a[a["end"] > a["start"]]
    if a.empty:
        return _empty_allocated()
    first = a["start"].dt.floor("h")
    n_hours = np.ceil((a["end"] - first).dt.total_seconds().to_numpy() / 3600).astype(np.int64)
    a = a.loc[a.index.repeat(n_hours)].assign(
        hour=np.concatenate(
            [first.iloc[i] + pd.to_timedelta(np.arange(k), "h") for i, k in enumerate(n_hours)]
        )
    )
    lo = a[["start", "hour"]].max(axis=1)
    hi = pd.concat([a["end"], a["hour"] + pd.Timedelta(hours=1)], axis=1).min(axis=1)
    a["overlap_s"] = (hi - lo).dt.total_seconds().clip(lower=0)
    a = a.merge(metered[["hour", "gpu_uuid", "metered_s"]], on=["hour", "gpu_uuid"])
    a["alloc_s"] = a["fraction"] * np.minimum(a["overlap_s"], a["metered_s"])
    keys = ["hour", "gpu_uuid", "model"]
    summed = a.groupby(keys, observed=True, sort=False)[["alloc_s"]].sum().reset_index()
    a = summed.merge(metered[["hour", "gpu_uuid", "metered_s"]], on=["hour", "gpu_uuid"])
    raw = a.groupby(["hour", "gpu_uuid"], sort=False)["alloc_s"].transform("sum")
    a["alloc_s"] *= np.minimum(1.0, a["metered_s"] / raw.where(raw > 0, 1.0))
    return a[["hour", "gpu_uuid", "model", "alloc_s"]]


def _usage_by_hour(usage: pd.DataFrame) -> pd.DataFrame:
    """Tokens and requests per hour x model x customer x request_type."""
    u = usage.assign(hour=_floor_hour(usage["ts"]))
    if "requests" not in u.columns:
        u["requests"] = 1
    keys = ["hour", "model", "customer", "request_type"]
    cols = ["input_tokens", "output_tokens", "requests"]
    out = u.groupby(keys, observed=True, sort=False)[cols].sum().reset_index()
    for k in keys[1:]:
        out[k] = out[k].astype(str)
    return out


def _busy_fraction(
    alloc_hgm: pd.DataFrame, processes: pd.DataFrame, usage_hm: pd.DataFrame, policy: IdlePolicy
) -> pd.Series:
    """Share of each (hour, GPU, model) allocation billed to tenants, in [0, 1].

    Details: with policy ``utilization``, busy = Σ(process sm_util/100 x interval_s) / alloc_s
    over the process samples of that model on that GPU whose utilisation is known, clipped to
    [0, 1]. Unknown utilisation (no process samples: time-slicing hides them; or NULL sm_util:
    NVML cannot see SMs per MIG instance before Hopper) bills the allocation in full. With
    ``allocation``, busy = 1. Either way, busy = 0 when the model served no request in that
    hour: nobody can be billed, the whole allocation is idle.
    """
    served = alloc_hgm.merge(usage_hm, on=["hour", "model"], how="left")["requests"].fillna(0) > 0
    busy = pd.Series(1.0, index=alloc_hgm.index)
    known = processes[processes["sm_util"].notna()] if not processes.empty else processes
    if policy == "utilization" and not known.empty:
        p = known.assign(hour=_floor_hour(known["ts"]))
        p["used_s"] = p["sm_util"] / 100.0 * p["interval_s"]
        keys = ["hour", "gpu_uuid", "model"]
        used = p.groupby(keys, observed=True)["used_s"].sum().reset_index()
        used["model"] = used["model"].astype(str)
        used["gpu_uuid"] = used["gpu_uuid"].astype(str)
        merged = alloc_hgm.merge(used, on=keys, how="left")
        ratio = merged["used_s"] / merged["alloc_s"].where(merged["alloc_s"] > 0, np.nan)
        busy = ratio.clip(0, 1).where(merged["used_s"].notna(), 1.0).fillna(0.0)
        busy.index = alloc_hgm.index
    return busy.where(served.to_numpy(), 0.0)


def _split(
    usage: pd.DataFrame, billable: pd.DataFrame, weights: AttributionWeights
) -> pd.DataFrame:
    """Spread each (hour, model)'s billable cost and GPU-seconds over its usage rows.

    Details: w = input x weights.input + output x weights.output + requests x weights.request;
    share = w / Σw within the (hour, model); if Σw == 0 the share is by requests.
    """
    u = usage.merge(billable, on=["hour", "model"], how="left")
    u[["bill_cost", "bill_s"]] = u[["bill_cost", "bill_s"]].fillna(0.0)
    w = (
        u["input_tokens"] * weights.input
        + u["output_tokens"] * weights.output
        + u["requests"] * weights.request
    ).astype(float)
    total = w.groupby([u["hour"], u["model"]], sort=False).transform("sum")
    req_total = u.groupby(["hour", "model"], sort=False)["requests"].transform("sum")
    share = (w / total.where(total > 0, np.nan)).fillna(u["requests"] / req_total)
    u["gpu_cost_usd"] = u["bill_cost"] * share
    u["gpu_seconds"] = u["bill_s"] * share
    u["kind"] = LedgerKind.attributed.value
    return u


def round_to_cents(exact_usd: pd.Series, group: pd.Series, group_cents: pd.Series) -> pd.Series:
    """Whole cents per row such that each group's cents equal ``group_cents`` (largest remainder).

    Details: floor every row's exact cents, then give the missing cents of a group one each to
    its rows with the largest fractional parts (ties: row order).
    """
    cents = exact_usd.to_numpy() * 100.0
    floor = np.floor(cents + 1e-9)
    frac = cents - floor
    df = pd.DataFrame({"g": group.to_numpy(), "floor": floor, "frac": frac})
    need = group.map(group_cents).to_numpy() - df.groupby("g")["floor"].transform("sum").to_numpy()
    by_group = df.groupby("g")["frac"]
    top = by_group.rank(method="first", ascending=False).to_numpy()
    bottom = by_group.rank(method="first", ascending=True).to_numpy()
    # need is in [0, rows in group] up to float error; a negative need takes cents back.
    extra = (top <= need).astype(np.int64) - (bottom <= -need).astype(np.int64)
    return pd.Series((floor + extra).astype(np.int64), index=exact_usd.index)


def attribute(
    *,
    samples: pd.DataFrame,
    processes: pd.DataFrame,
    allocations: pd.DataFrame,
    usage: pd.DataFrame,
    prices: pd.DataFrame,
    window: Window,
    weights: AttributionWeights,
    idle_policy: IdlePolicy = "utilization",
) -> Attribution:
    """Attribute metered GPU cost in ``window`` (expanded to whole hours) to ledger rows.

    Returns: rows with LEDGER_COLUMNS: ``attributed`` rows per hour x model x customer x
    request_type, one ``idle`` row per hour x model (customer = request_type = IDLE) and one
    ``unallocated`` row per hour (model = customer = request_type = UNALLOCATED); hours with
    HOUR_COLUMNS.
    Raises: PriceMissingError when a metered GPU has no price.
    Invariant: rows.groupby(hour).cost_cents.sum() == hours.metered_cost_cents.
    """
    window = window.hour_aligned()
    samples = _in_window(samples, window)
    usage = _in_window(usage, window)
    processes = _in_window(processes, window)
    metered = _metered(samples, prices)
    alloc = _allocated(allocations, metered, window)

    alloc_rated = alloc.merge(metered[["hour", "gpu_uuid", "rate"]], on=["hour", "gpu_uuid"])
    alloc_rated["alloc_cost"] = alloc_rated["alloc_s"] * alloc_rated["rate"]
    usage_hm_full = _usage_by_hour(usage)
    usage_hm = usage_hm_full.groupby(["hour", "model"], sort=False)["requests"].sum().reset_index()
    busy = _busy_fraction(alloc_rated, processes, usage_hm, idle_policy)
    alloc_rated["bill_cost"] = alloc_rated["alloc_cost"] * busy
    alloc_rated["bill_s"] = alloc_rated["alloc_s"] * busy
    billable = (
        alloc_rated.groupby(["hour", "model"], sort=False)[
            ["alloc_s", "alloc_cost", "bill_s", "bill_cost"]
        ]
        .sum()
        .reset_index()
    )
    attributed = _split(usage_hm_full, billable[["hour", "model", "bill_cost", "bill_s"]], weights)

    idle = billable.assign(
        customer=IDLE,
        request_type=IDLE,
        kind=LedgerKind.idle.value,
        gpu_cost_usd=billable["alloc_cost"] - billable["bill_cost"],
        gpu_seconds=billable["alloc_s"] - billable["bill_s"],
        input_tokens=0,
        output_tokens=0,
        requests=0,
    )
    per_gpu_alloc = alloc.groupby(["hour", "gpu_uuid"], sort=False)["alloc_s"].sum()
    un = metered.set_index(["hour", "gpu_uuid"])
    un_s = (un["metered_s"] - per_gpu_alloc.reindex(un.index).fillna(0.0)).clip(lower=0)
    un = pd.DataFrame({"gpu_seconds": un_s, "gpu_cost_usd": un_s * un["rate"]}).reset_index()
    unallocated = un.groupby("hour", sort=False)[["gpu_seconds", "gpu_cost_usd"]].sum()
    unallocated = unallocated.reset_index().assign(
        model=UNALLOCATED,
        customer=UNALLOCATED,
        request_type=UNALLOCATED,
        kind=LedgerKind.unallocated.value,
        input_tokens=0,
        output_tokens=0,
        requests=0,
    )
    cols = [c for c in LEDGER_COLUMNS if c not in ("cost_adjustment_usd", "cost_cents")]
    rows = pd.concat([attributed[cols], idle[cols], unallocated[cols]], ignore_index=True)
    hours = _hours(metered)
    return Attribution(rows=_finish(rows, hours), hours=hours)


def _hours(metered: pd.DataFrame) -> pd.DataFrame:
    cost = metered["metered_s"] * metered["rate"]
    h = metered.assign(cost=cost).groupby("hour", sort=True)[["metered_s", "cost"]].sum()
    h = h.reset_index().rename(
        columns={"metered_s": "metered_gpu_seconds", "cost": "metered_cost_usd"}
    )
    h["metered_cost_cents"] = np.floor(h["metered_cost_usd"] * 100.0 + 0.5).astype(np.int64)
    return h[HOUR_COLUMNS]


def _finish(rows: pd.DataFrame, hours: pd.DataFrame) -> pd.DataFrame:
    """Round to cents per hour, drop empty rows, fix dtypes and order."""
    cents_by_hour = hours.set_index("hour")["metered_cost_cents"]
    rows = rows.reset_index(drop=True)
    rows["cost_cents"] = np.int64(0)
    metered_rows = rows["hour"].isin(cents_by_hour.index)
    if metered_rows.any():
        r = rows[metered_rows]
        rows.loc[metered_rows, "cost_cents"] = round_to_cents(
            r["gpu_cost_usd"], r["hour"], cents_by_hour
        )
    rows["cost_adjustment_usd"] = rows["cost_cents"] / 100.0 - rows["gpu_cost_usd"]
    keep = (
        (rows["cost_cents"] != 0)
        | (rows["gpu_cost_usd"].abs() > 1e-12)
        | (rows["requests"] > 0)
        | (rows["gpu_seconds"] > 1e-9)
    )
    rows = rows[keep]
    for c in ("input_tokens", "output_tokens", "requests", "cost_cents"):
        rows[c] = rows[c].astype(np.int64)
    return rows[LEDGER_COLUMNS].sort_values(
        ["hour", "kind", "model", "customer", "request_type"], ignore_index=True
    )
