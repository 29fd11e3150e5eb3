"""Cost attribution: a pure function from a frozen window of measurements to ledger rows.

Inputs are pandas frames (see the ``*_COLUMNS`` constants); nothing here reads a clock, a
database or the network. Time is cut into buckets of ``resolution_s`` seconds (epoch-aligned;
3600 by default, ``BillingConfig.ledger_resolution_s``); the ledger's ``hour`` column is a
bucket's start. Every rule below is integrated time-exactly per physical GPU
(billing.gputime over billing.intervals), never spread over a bucket.

Rules:
1. Metering. A GPU sample at ``ts`` meters its physical GPU over [ts, ts + interval_s). Per
   GPU the metered time is the union of its samples' intervals: one device, one instant, one
   metered interval, so two collectors sampling one GPU meter it once. A sample that straddles
   a bucket boundary is split at it; only time inside the (bucket-aligned) window counts.
2. Price. Each bucket of a GPU is priced by the version of (gpu_type, pricing_class) with the
   latest ``effective_from`` <= the bucket's start; where samples overlap, the earliest
   starting one names the type and class.
3. Unpriced. Metered time with no price in force is the bucket's ``__unpriced__`` row (kind
   ``unpriced``): its GPU-seconds at 0 cents. It is neither allocated nor unallocated; the
   other GPUs of the bucket are priced as usual. Metered seconds include it, metered cents 0.
4. Allocation. An allocation holds ``fraction`` of its physical GPU over [start, end) (NULL
   end: open) and only on that GPU's metered time inside that span: an allocation that begins
   after metering stopped holds nothing, and after a mid-bucket placement change each model
   holds exactly the metered time it held the GPU.
5. Observed over planned. Where an allocation with source ``observed`` covers a stretch of a
   GPU, the ``planned`` allocations of that GPU are ignored on that stretch.
6. Oversubscription. Where fractions held at one instant add up to F > 1, each is scaled by
   1/F; where F < 1 the remaining 1 - F of the metered time is ``__unallocated__``.
7. Busy (idle_policy ``utilization``). A process reading at ``ts`` covers [ts, ts +
   interval_s). At each instant a model's use u of the GPU is the sum over its process
   streams (device_uuid, pid) of the mean sm_util/100 of that stream's known readings (two
   collectors reading one process give the mean, not the sum). Where some known reading
   covers the instant the model pays min(u, its share) and the rest of its share is its
   ``__idle__`` row; where none does (time-slicing hides processes; NULL sm_util on MIG before
   Hopper) it pays its whole share. So knowing utilisation for part of a bucket bills the
   unknown part in full and the known part by its readings, never less than not knowing.
   idle_policy ``allocation``: the model pays its whole share.
8. A model that served no request in a bucket pays nothing: its whole share is idle.
9. Split. A model's billable cost goes to its usage rows by token weight (AttributionWeights).

Rounding and conservation (tested): each clock hour's metered cents are round(Σ priced
GPU-seconds x USD/h / 3600 x 100), split over the hour's buckets by largest remainder (so a
finer resolution never changes an hour's cents); the ledger rows of a bucket add up to its
metered cents, and their ``gpu_seconds`` to its metered seconds (attributed + idle +
unallocated + unpriced). Rows are whole cents, so any window of whole buckets and any
grouping of rows also add up. Windows are expanded to whole hours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from billing.config import AttributionWeights, IdlePolicy
from billing.gputime import gpu_time
from billing.kinds import IDLE, UNALLOCATED, UNPRICED, LedgerKind
from billing.windows import Window

SAMPLE_COLUMNS = ["ts", "gpu_uuid", "gpu_type", "pricing_class", "interval_s"]
# Optional: device_uuid and pid name a process stream (readings of one stream are averaged).
PROCESS_COLUMNS = ["ts", "gpu_uuid", "model", "sm_util", "interval_s"]
# Optional: source ("observed" | "planned"; absent = observed).
ALLOCATION_COLUMNS = ["model", "gpu_uuid", "fraction", "start", "end"]
USAGE_COLUMNS = ["ts", "model", "customer", "request_type", "input_tokens", "output_tokens"]
# Optional: effective_from (absent or NaT = in force from the start of time).
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
UNPRICED_COLUMNS = ["hour", "gpu_type", "pricing_class", "gpu_seconds"]


def _empty_unpriced() -> pd.DataFrame:
    return pd.DataFrame(columns=UNPRICED_COLUMNS)


@dataclass(frozen=True)
class Attribution:
    """The result: ledger rows, per bucket the metered totals they add up to, and per bucket x
    (gpu_type, pricing_class) the GPU-seconds that had no price (UNPRICED_COLUMNS)."""

    rows: pd.DataFrame
    hours: pd.DataFrame
    unpriced: pd.DataFrame = field(default_factory=_empty_unpriced)


def _in_window(frame: pd.DataFrame, window: Window, column: str = "ts") -> pd.DataFrame:
    start, end = pd.Timestamp(window.start), pd.Timestamp(window.end)
    return frame[(frame[column] >= start) & (frame[column] < end)]


def _usage_by_bucket(usage: pd.DataFrame, resolution_s: int) -> pd.DataFrame:
    """Tokens and requests per bucket x model x customer x request_type."""
    u = usage.assign(hour=usage["ts"].dt.floor(f"{resolution_s}s").dt.as_unit("ns"))
    if "requests" not in u.columns:
        u["requests"] = 1
    keys = ["hour", "model", "customer", "request_type"]
    cols = ["input_tokens", "output_tokens", "requests"]
    out = u.groupby(keys, observed=True, sort=False)[cols].sum().reset_index()
    for k in keys[1:]:
        out[k] = out[k].astype(str)
    return out


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


def half_up_cents(exact_usd: pd.Series) -> pd.Series:
    """Whole cents, half up, of exact USD amounts taken to 1e-6 cent first.

    Details: the same hour summed over 1-hour or finer buckets differs in the last float bits
    (0.015 + 0.045 + 0.055 + 0.21 vs 0.015 + 0.205 + 0.035 + 0.07); without the 1e-6 step one
    rounds a half cent up and the other down.
    """
    cents = np.floor(np.round(exact_usd.to_numpy() * 100.0, 6) + 0.5).astype(np.int64)
    return pd.Series(cents, index=exact_usd.index)


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
    resolution_s: int = 3600,
) -> Attribution:
    """Attribute metered GPU cost in ``window`` (expanded to whole hours) to ledger rows.

    Returns: rows with LEDGER_COLUMNS: ``attributed`` rows per bucket x model x customer x
    request_type, one ``idle`` row per bucket x model (customer = request_type = IDLE), one
    ``unallocated`` row per bucket (model = customer = request_type = UNALLOCATED) and one
    ``unpriced`` row per bucket with unpriced GPU time (all three = UNPRICED, 0 cents);
    hours with HOUR_COLUMNS; unpriced GPU-seconds per bucket x GPU type x pricing class.
    Invariant: rows.groupby(hour).cost_cents.sum() == hours.metered_cost_cents, and
    rows.groupby(hour).gpu_seconds.sum() == hours.metered_gpu_seconds.
    """
    window = window.hour_aligned()
    usage = _in_window(usage, window)
    g = gpu_time(
        samples=samples,
        processes=processes,
        allocations=allocations,
        prices=prices,
        window=window,
        resolution_s=resolution_s,
    )
    usage_full = _usage_by_bucket(usage, resolution_s)
    billable = _billable(g.models, usage_full, idle_policy)
    attributed = _split(usage_full, billable[["hour", "model", "bill_cost", "bill_s"]], weights)
    idle, unallocated, unpriced = _reserved_rows(billable, g.unallocated, g.unpriced)
    cols = [c for c in LEDGER_COLUMNS if c not in ("cost_adjustment_usd", "cost_cents")]
    parts = [p[cols] for p in (attributed, idle, unallocated, unpriced) if len(p)]
    rows = pd.concat(parts, ignore_index=True) if parts else attributed[cols]
    hours = _hours(g.metered)
    return Attribution(rows=_finish(rows, hours), hours=hours, unpriced=g.unpriced)


def _billable(models: pd.DataFrame, usage: pd.DataFrame, policy: IdlePolicy) -> pd.DataFrame:
    """Per bucket x model what tenants pay (bill_s, bill_cost): the busy part under
    ``utilization``, the whole share under ``allocation``, nothing without requests."""
    served = usage.groupby(["hour", "model"], sort=False)["requests"].sum().reset_index()
    billable = models.merge(served, on=["hour", "model"], how="left")
    paid = billable["requests"].fillna(0).to_numpy() > 0
    by_util = policy == "utilization"
    billable["bill_s"] = np.where(paid, billable["busy_s" if by_util else "alloc_s"], 0.0)
    billable["bill_cost"] = np.where(paid, billable["busy_cost" if by_util else "alloc_cost"], 0.0)
    return billable


def _reserved_rows(
    billable: pd.DataFrame, unallocated: pd.DataFrame, unpriced: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The idle rows per bucket x model, and the unallocated and unpriced rows per bucket."""
    zeros = {"input_tokens": 0, "output_tokens": 0, "requests": 0}
    idle = billable.assign(
        customer=IDLE,
        request_type=IDLE,
        kind=LedgerKind.idle.value,
        gpu_cost_usd=billable["alloc_cost"] - billable["bill_cost"],
        gpu_seconds=billable["alloc_s"] - billable["bill_s"],
        **zeros,
    )
    un = unallocated.assign(
        model=UNALLOCATED,
        customer=UNALLOCATED,
        request_type=UNALLOCATED,
        kind=LedgerKind.unallocated.value,
        **zeros,
    )
    lost = unpriced.groupby("hour", sort=True)["gpu_seconds"].sum().reset_index()
    lost = lost.assign(
        model=UNPRICED,
        customer=UNPRICED,
        request_type=UNPRICED,
        kind=LedgerKind.unpriced.value,
        gpu_cost_usd=0.0,
        **zeros,
    )
    return idle, un, lost


def _hours(metered: pd.DataFrame) -> pd.DataFrame:
    """Metered totals per bucket; cents: each clock hour's exact cents (``half_up_cents``)
    split over the hour's buckets by largest remainder (a 1-hour bucket is its hour)."""
    h = metered.rename(
        columns={"metered_s": "metered_gpu_seconds", "metered_cost": "metered_cost_usd"}
    ).reset_index(drop=True)
    clock_hour = h["hour"].dt.floor("h")
    exact = h.groupby(clock_hour)["metered_cost_usd"].sum()
    hour_cents = half_up_cents(exact)
    if h.empty:
        h["metered_cost_cents"] = pd.Series(dtype=np.int64)
    else:
        h["metered_cost_cents"] = round_to_cents(h["metered_cost_usd"], clock_hour, hour_cents)
    return h[HOUR_COLUMNS]


def _finish(rows: pd.DataFrame, hours: pd.DataFrame) -> pd.DataFrame:
    """Round to cents per hour, drop empty rows, fix dtypes and order."""
    cents_by_hour = hours.set_index("hour")["metered_cost_cents"]
    rows = rows.reset_index(drop=True)
    rows["cost_cents"] = np.int64(0)
    metered_rows = rows["hour"].isin(cents_by_hour.index) & (
        rows["kind"] != LedgerKind.unpriced.value
    )
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
