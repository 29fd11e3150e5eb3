"""Pure transforms from the frames of ``dashboard.queries`` to what each chart plots.

No database, no clock: every function takes frames (and a window) and returns a frame or a
small dataclass, so each is unit-tested with asserted numbers. Cost never appears or
disappears here: filters drop whole rows, and top-N folds the tail into ``other``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from billing.enforcement.config import EnforcementConfig
from billing.enforcement.rates import add_price
from billing.models import LedgerKind
from billing.windows import Window

OTHER = "other"
IDLE_LABEL = "idle (allocated, not busy)"
UNALLOCATED_LABEL = "unallocated GPU time"
UNPRICED_LABEL = "unpriced GPU time (no price)"
ATTRIBUTED = LedgerKind.attributed.value
IDLE = LedgerKind.idle.value
UNALLOCATED = LedgerKind.unallocated.value
UNPRICED = LedgerKind.unpriced.value


@dataclass(frozen=True)
class Kpis:
    """Headline figures of a filtered ledger."""

    cost_usd: float
    attributed_usd: float
    idle_usd: float
    unallocated_usd: float
    tokens: int
    requests: int
    gpu_hours: float

    @property
    def usd_per_1m_tokens(self) -> float | None:
        """Billed (attributed) USD per 1,000,000 tokens; None without tokens."""
        return self.attributed_usd / self.tokens * 1e6 if self.tokens else None

    @property
    def loaded_per_1m_tokens(self) -> float | None:
        """Attributed + idle USD per 1,000,000 tokens (what serving them cost); None without."""
        return (self.attributed_usd + self.idle_usd) / self.tokens * 1e6 if self.tokens else None

    @property
    def idle_share(self) -> float | None:
        """(idle + unallocated) / total cost; None when nothing was metered."""
        return (self.idle_usd + self.unallocated_usd) / self.cost_usd if self.cost_usd else None


def filter_ledger(
    ledger: pd.DataFrame,
    *,
    models: Sequence[str] = (),
    customers: Sequence[str] = (),
    request_types: Sequence[str] = (),
) -> pd.DataFrame:
    """Rows matching the filters (an empty sequence means all).

    Details: idle rows belong to a model but to no customer or request type, so a customer or
    request-type filter keeps attributed rows only; unallocated rows belong to no model and go
    as soon as any filter is set.
    """
    keep = pd.Series(True, index=ledger.index)
    if models:
        keep &= ledger["model"].isin(list(models))
    if customers:
        keep &= ledger["customer"].isin(list(customers)) & (ledger["kind"] == ATTRIBUTED)
    if request_types:
        keep &= ledger["request_type"].isin(list(request_types)) & (ledger["kind"] == ATTRIBUTED)
    return ledger[keep]


def bucket_freq(window: Window) -> str:
    """Time bucket of the charts: hours up to three days, days beyond."""
    return "h" if window.seconds <= 3 * 86400 else "D"


def _with_bucket(ledger: pd.DataFrame, freq: str) -> pd.DataFrame:
    return ledger.assign(
        bucket=ledger["hour"].dt.floor(freq),
        cost_usd=ledger["cost_cents"] / 100.0,
        tokens=ledger["input_tokens"] + ledger["output_tokens"],
    )


def cost_per_1m_tokens(ledger: pd.DataFrame, freq: str) -> pd.DataFrame:
    """Per bucket x model: tokens, billed and idle USD, billed and loaded USD per 1M tokens.

    Details: billed_per_1m = attributed USD / tokens x 1e6; loaded_per_1m adds the model's
    idle USD (what the model really cost per 1M tokens). Buckets without tokens are dropped.
    """
    cols = ["bucket", "model", "tokens", "billed_usd", "idle_usd"]
    d = _with_bucket(ledger[ledger["kind"].isin([ATTRIBUTED, IDLE])], freq)
    if d.empty:
        return pd.DataFrame(columns=[*cols, "billed_per_1m", "loaded_per_1m"])
    d["billed_usd"] = d["cost_usd"].where(d["kind"] == ATTRIBUTED, 0.0)
    d["idle_usd"] = d["cost_usd"].where(d["kind"] == IDLE, 0.0)
    g = d.groupby(["bucket", "model"], sort=True)[["tokens", "billed_usd", "idle_usd"]].sum()
    g = g.reset_index()
    g = g[g["tokens"] > 0].reset_index(drop=True)
    g["billed_per_1m"] = g["billed_usd"] / g["tokens"] * 1e6
    g["loaded_per_1m"] = (g["billed_usd"] + g["idle_usd"]) / g["tokens"] * 1e6
    return g


def series(ledger: pd.DataFrame, key: str, freq: str) -> pd.DataFrame:
    """Per bucket x ``key`` (model or customer): cost_usd, tokens, usd_per_1m (NaN where a
    bucket has no tokens) and utilization. By model, cost includes the model's idle rows and
    utilization is busy / held GPU time in %; by customer only attributed rows count (idle
    belongs to no customer) and utilization is the busy GPU-hours billed to it."""
    kinds = [ATTRIBUTED, IDLE] if key == "model" else [ATTRIBUTED]
    d = _with_bucket(ledger[ledger["kind"].isin(kinds)], freq)
    cols = ["bucket", key, "cost_usd", "tokens", "usd_per_1m", "utilization"]
    if d.empty:
        return pd.DataFrame(columns=cols)
    d = d.assign(busy_s=d["gpu_seconds"].where(d["kind"] == ATTRIBUTED, 0.0))
    sums = ["cost_usd", "tokens", "busy_s", "gpu_seconds"]
    g = d.groupby(["bucket", key], sort=True)[sums].sum().reset_index()
    g["usd_per_1m"] = (g["cost_usd"] / g["tokens"].where(g["tokens"] > 0) * 1e6).astype(float)
    if key == "model":  # % of the GPU time the model held that it was busy
        g["utilization"] = (
            g["busy_s"] / g["gpu_seconds"].where(g["gpu_seconds"] > 0) * 100
        ).astype(float)
    else:  # busy GPU-hours billed to the customer
        g["utilization"] = g["busy_s"] / 3600.0
    return g[cols]


TABLE_KEYS = ["bucket", "model", "customer", "request_type", "kind"]


def table_rows(ledger: pd.DataFrame, freq: str) -> pd.DataFrame:
    """The rows in view per bucket x model x customer x request type x kind: cost_usd, tokens,
    requests, gpu_hours, usd_per_1m (NaN without tokens), largest cost first."""
    cols = [*TABLE_KEYS, "cost_usd", "tokens", "requests", "gpu_hours", "usd_per_1m"]
    d = _with_bucket(ledger, freq)
    if d.empty:
        return pd.DataFrame(columns=cols)
    d = d.assign(gpu_hours=d["gpu_seconds"] / 3600.0)
    for k in ("model", "customer", "request_type"):
        d[k] = d[k].fillna("").astype(str)
    g = d.groupby(TABLE_KEYS, sort=False)[["cost_usd", "tokens", "requests", "gpu_hours"]].sum()
    g = g.reset_index().sort_values("cost_usd", ascending=False, kind="stable")
    g["usd_per_1m"] = (g["cost_usd"] / g["tokens"].where(g["tokens"] > 0) * 1e6).astype(float)
    return g[cols].reset_index(drop=True)


def top_n_with_other(df: pd.DataFrame, key: str, n: int, value: str = "cost_usd") -> pd.DataFrame:
    """``df`` with every ``key`` outside the top ``n`` by total ``value`` renamed ``other``,
    then re-summed over the other columns (numeric columns summed, the rest kept as keys).

    Invariant: df[value].sum() is unchanged (no cost created or lost).
    """
    if df.empty:
        return df
    totals = df.groupby(key, sort=False)[value].sum().sort_values(ascending=False, kind="stable")
    top = set(totals.index[:n])
    out = df.assign(**{key: df[key].where(df[key].isin(top), OTHER)})
    numeric = [c for c in out.columns if c != key and pd.api.types.is_numeric_dtype(out[c])]
    keys = [c for c in out.columns if c not in numeric]
    return out.groupby(keys, sort=False, dropna=False)[numeric].sum().reset_index()


def cost_stack(ledger: pd.DataFrame, key: str, n: int, freq: str) -> pd.DataFrame:
    """USD per bucket x label for a stacked bar: the top ``n`` values of ``key``, ``other``,
    and the idle and unallocated rows as their own labels (so a bar adds up to metered cost).

    Returns: columns bucket, label, cost_usd; labels ordered by total (largest first), then
    ``other``, idle and unallocated.
    """
    d = _with_bucket(ledger, freq)
    if d.empty:
        return pd.DataFrame(columns=["bucket", "label", "cost_usd"])
    labels = {IDLE: IDLE_LABEL, UNALLOCATED: UNALLOCATED_LABEL, UNPRICED: UNPRICED_LABEL}
    d["label"] = d[key].where(d["kind"] == ATTRIBUTED, d["kind"].map(labels))
    att = d[d["kind"] == ATTRIBUTED][["bucket", "label", "cost_usd"]]
    att = top_n_with_other(att, "label", n)
    rest = d[d["kind"] != ATTRIBUTED][["bucket", "label", "cost_usd"]]
    out = pd.concat([att, rest], ignore_index=True)
    out = out.groupby(["bucket", "label"], sort=False)["cost_usd"].sum().reset_index()
    order = out.groupby("label")["cost_usd"].sum().sort_values(ascending=False, kind="stable")
    tail = [OTHER, IDLE_LABEL, UNALLOCATED_LABEL, UNPRICED_LABEL]
    ordered = [x for x in order.index if x not in tail] + [x for x in tail if x in order.index]
    rank = {label: i for i, label in enumerate(ordered)}
    out = out.assign(_r=out["label"].map(rank)).sort_values(["_r", "bucket"], kind="stable")
    return out.drop(columns="_r").reset_index(drop=True)


def kpis(ledger: pd.DataFrame) -> Kpis:
    """Totals of a (filtered) ledger."""
    cost = ledger.groupby("kind")["cost_cents"].sum()

    def usd(kind: str) -> float:
        return float(cost.get(kind, 0)) / 100.0

    return Kpis(
        cost_usd=float(ledger["cost_cents"].sum()) / 100.0,
        attributed_usd=usd(ATTRIBUTED),
        idle_usd=usd(IDLE),
        unallocated_usd=usd(UNALLOCATED),
        tokens=int((ledger["input_tokens"] + ledger["output_tokens"]).sum()),
        requests=int(ledger["requests"].sum()),
        gpu_hours=float(ledger["gpu_seconds"].sum()) / 3600.0,
    )


def idle_by_model(ledger: pd.DataFrame) -> pd.DataFrame:
    """Idle USD per model plus one unallocated row; columns label, cost_usd, gpu_hours."""
    d = ledger[ledger["kind"].isin([IDLE, UNALLOCATED])]
    if d.empty:
        return pd.DataFrame(columns=["label", "cost_usd", "gpu_hours"])
    label = d["model"].where(d["kind"] == IDLE, UNALLOCATED_LABEL)
    g = d.assign(label=label).groupby("label")[["cost_cents", "gpu_seconds"]].sum()
    g = g.sort_values("cost_cents", ascending=False).reset_index()
    return pd.DataFrame(
        {
            "label": g["label"],
            "cost_usd": g["cost_cents"] / 100.0,
            "gpu_hours": g["gpu_seconds"] / 3600.0,
        }
    )


def _overlap_s(allocations: pd.DataFrame, devices: pd.DataFrame, key: str) -> pd.Series:
    """Per device: Σ (weight x seconds) of the allocations naming it (via ``key``) that overlap
    the device's sampled span [first, last + interval_s). Weight = ``_w`` column."""
    x = allocations.merge(
        devices[["gpu_uuid", "first", "last", "interval_s"]],
        left_on=key,
        right_on="gpu_uuid",
        suffixes=("_a", ""),
    )
    if x.empty:
        return pd.Series(dtype=float)
    span_end = x["last"] + pd.to_timedelta(x["interval_s"], unit="s")
    end = pd.to_datetime(x["end"], utc=True)
    end = end.where(end.notna(), span_end)
    start = pd.to_datetime(x["start"], utc=True)
    lo = np.maximum(start.to_numpy(), x["first"].to_numpy())
    hi = np.minimum(end.to_numpy(), span_end.to_numpy())
    seconds = np.clip((hi - lo) / np.timedelta64(1, "s"), 0, None)
    held: pd.Series = (x["_w"] * seconds).groupby(x["gpu_uuid"]).sum()
    return held


def device_utilization(devices: pd.DataFrame, allocations: pd.DataFrame) -> pd.DataFrame:
    """Per GPU and MIG instance over the window: used SM % vs allocated %.

    Details: used = busy_s / sample_s. Allocated = held seconds / sample_s, capped at 100 %,
    where held seconds count each allocation's overlap with the device's sampled span: on a
    physical GPU weighted by its fraction (every allocation on that GPU, slices included); on
    a MIG instance unweighted (a slice held is 100 % of the slice). Returns device, parent,
    gpu_type, profile, models, used_pct, allocated_pct, sample_s; each physical GPU followed
    by its slices.
    """
    cols = ["device", "parent", "gpu_type", "profile", "models", "used_pct", "allocated_pct"]
    if devices.empty:
        return pd.DataFrame(columns=[*cols, "sample_s"])
    g = devices.rename(
        columns={"gpu_uuid": "device", "parent_uuid": "parent", "mig_profile": "profile"}
    ).copy()
    held = pd.Series(0.0, index=g["device"].to_numpy())
    models: dict[str, str] = {}
    if not allocations.empty:
        phys = devices[devices["parent_uuid"].isna()]
        mig = devices[devices["parent_uuid"].notna()]
        whole = _overlap_s(allocations.assign(_w=allocations["fraction"]), phys, "gpu_uuid")
        on_mig = allocations[allocations["device_uuid"].notna()]
        slices = _overlap_s(on_mig.assign(_w=1.0), mig, "device_uuid")
        held = held.add(whole, fill_value=0.0).add(slices, fill_value=0.0)
        for device, group in [
            *allocations.groupby("gpu_uuid")["model"],
            *on_mig.groupby("device_uuid")["model"],
        ]:
            models[str(device)] = ", ".join(sorted(set(map(str, group))))
    alloc_s = held.reindex(g["device"].to_numpy()).fillna(0.0).to_numpy()
    g["used_pct"] = (g["busy_s"] / g["sample_s"] * 100).clip(0, 100)
    g["allocated_pct"] = np.clip(alloc_s / g["sample_s"].to_numpy() * 100, 0, 100)
    g["models"] = [models.get(str(d), "") for d in g["device"]]
    g["_root"] = g["parent"].fillna(g["device"])
    g = g.sort_values(["_root", "parent", "device"], na_position="first", kind="stable")
    return g[[*cols, "sample_s"]].reset_index(drop=True)


def margin_by(ledger: pd.DataFrame, rate_card: EnforcementConfig) -> pd.DataFrame:
    """Attributed cost, price (rate card) and margin = price - cost per customer and per
    model: columns dim ('customer'/'model'), label, cost_usd, price_usd, margin_usd."""
    cols = ["dim", "label", "cost_usd", "price_usd", "margin_usd"]
    att = ledger[ledger["kind"] == ATTRIBUTED]
    if att.empty:
        return pd.DataFrame(columns=cols)
    priced = add_price(att.assign(cost_usd=att["cost_cents"] / 100.0), rate_card)
    parts = []
    for dim in ("customer", "model"):
        g = priced.groupby(dim, sort=True)[["cost_usd", "price_usd"]].sum().round(6).reset_index()
        g = g.rename(columns={dim: "label"}).assign(dim=dim)
        g["margin_usd"] = (g["price_usd"] - g["cost_usd"]).round(6)
        parts.append(g.sort_values("margin_usd", ascending=False, kind="stable"))
    return pd.concat(parts, ignore_index=True)[cols]
