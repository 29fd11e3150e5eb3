"""The ledger edge: load a window from the store, attribute it, write ledger rows; query them.

``rollup`` replaces the ledger rows of every bucket it computes in one transaction, so running
it twice (or from two schedulers) never doubles a cent. Buckets are
``BillingConfig.ledger_resolution_s`` long (an hour by default); ``hour`` columns hold a
bucket's start.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.engine import Connection, Engine

from billing.attribution import (
    ALLOCATION_COLUMNS,
    HOUR_COLUMNS,
    LEDGER_COLUMNS,
    Attribution,
    attribute,
)
from billing.config import BillingConfig
from billing.devicehours import MAX_INTERVAL, replace_device_hours
from billing.ingest import bulk_insert_ignore
from billing.kinds import LedgerKind
from billing.metrics import RollupMetrics
from billing.models import (
    Allocation,
    GpuProcessSample,
    GpuSample,
    LedgerEntry,
    LedgerHour,
    UsageEvent,
    table_of,
)
from billing.pricebook import price_versions
from billing.sqltime import bucket_expr, day_expr, epoch_expr
from billing.windows import Window

__all__ = ["replace_device_hours"]  # re-exported for the dashboard bench
log = logging.getLogger(__name__)
GROUP_KEYS = ("model", "customer", "request_type", "kind", "hour", "day")


@dataclass(frozen=True)
class RollupResult:
    """What a rollup wrote, and what its window held (for warnings).

    ``unpriced``: (gpu_type, pricing_class, GPU-seconds) metered without a price.
    """

    window: Window
    hours: int
    rows: int
    metered_cost_cents: int
    ledger_cost_cents: int
    requests: int = 0
    samples: int = 0
    allocations: int = 0
    unallocated_cost_cents: int = 0
    unpriced: tuple[tuple[str, str, float], ...] = field(default=())


def _utc(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    for c in cols:
        df[c] = pd.to_datetime(df[c], utc=True)
    return df


def load_usage_by_hour(conn: Connection, window: Window, resolution_s: int = 3600) -> pd.DataFrame:
    """Usage summed in SQL per bucket x model x customer x request_type (one row per group)."""
    u = table_of(UsageEvent).c
    hour = bucket_expr(conn, u.ts, resolution_s).label("ts")
    stmt = (
        select(
            hour,
            u.model,
            u.customer,
            u.request_type,
            func.sum(u.input_tokens).label("input_tokens"),
            func.sum(u.output_tokens).label("output_tokens"),
            func.count().label("requests"),
        )
        .where(u.ts >= window.start, u.ts < window.end)
        .group_by(hour, u.model, u.customer, u.request_type)
    )
    df = pd.read_sql(stmt, conn)
    return _utc(df, "ts").astype(
        {"input_tokens": "int64", "output_tokens": "int64", "requests": "int64"}
    )


def load_inputs(
    conn: Connection, window: Window, resolution_s: int = 3600
) -> dict[str, pd.DataFrame]:
    """The frames ``attribute`` needs for ``window`` (bucket-aligned), read in one connection.

    Samples and process readings start up to MAX_INTERVAL before the window: a reading that
    began before it covers time inside it.
    """
    w = window.aligned(resolution_s)
    s = table_of(GpuSample).c
    p = table_of(GpuProcessSample).c
    a = table_of(Allocation).c
    since, start_s = w.start - MAX_INTERVAL, w.start.timestamp()

    def reaches_in(t: Any) -> Any:  # starts in the window, or earlier and lasts into it
        early = and_(t.ts >= since, epoch_expr(conn, t.ts) + t.interval_s > start_s)
        return and_(t.ts < w.end, or_(t.ts >= w.start, early))

    samples = pd.read_sql(
        select(s.ts, s.gpu_uuid, s.gpu_type, s.pricing_class, s.interval_s).where(
            s.parent_uuid.is_(None), reaches_in(s)
        ),
        conn,
    )
    processes = pd.read_sql(
        select(p.ts, p.gpu_uuid, p.model, p.sm_util, p.interval_s, p.device_uuid, p.pid).where(
            p.model.is_not(None), reaches_in(p)
        ),
        conn,
    )
    allocations = pd.read_sql(
        select(*[a[c] for c in ALLOCATION_COLUMNS], a.source).where(
            a.start < w.end, or_(a.end.is_(None), a.end > w.start)
        ),
        conn,
    )
    return {
        "samples": _utc(samples, "ts"),
        "processes": _utc(processes, "ts"),
        "allocations": _utc(allocations, "start", "end"),
        "usage": load_usage_by_hour(conn, w, resolution_s),
    }


def _result(w: Window, inputs: dict[str, pd.DataFrame], result: Attribution) -> RollupResult:
    rows = result.rows
    un = result.unpriced.groupby(["gpu_type", "pricing_class"], as_index=False)["gpu_seconds"].sum()
    return RollupResult(
        window=w,
        hours=len(result.hours),
        rows=len(rows),
        metered_cost_cents=int(result.hours["metered_cost_cents"].sum()),
        ledger_cost_cents=int(rows["cost_cents"].sum()),
        requests=int(inputs["usage"]["requests"].sum()),
        samples=len(inputs["samples"]),  # physical-GPU samples covering time in the window
        allocations=len(inputs["allocations"]),
        unallocated_cost_cents=int(
            rows.loc[rows["kind"] == LedgerKind.unallocated.value, "cost_cents"].sum()
        ),
        unpriced=tuple(
            (str(t), str(c), float(v))
            for t, c, v in zip(un["gpu_type"], un["pricing_class"], un["gpu_seconds"], strict=True)
        ),
    )


def rollup(
    engine: Engine, window: Window, config: BillingConfig, metrics: RollupMetrics | None = None
) -> RollupResult:
    """Attribute ``window`` (expanded to whole hours) and replace its ledger rows atomically.

    GPU time without a price is logged as a warning (and counted in ``metrics``), never an
    error: it is the ``__unpriced__`` row and the rest of the window is priced as usual.
    """
    res = config.ledger_resolution_s
    w = window.hour_aligned()  # whole hours: an hour's cents are split over its buckets
    with engine.connect() as conn:
        inputs = load_inputs(conn, w, res)
    result = attribute(
        **inputs,
        prices=price_versions(engine),
        window=w,
        weights=config.weights,
        idle_policy=config.idle_policy,
        resolution_s=res,
    )
    write_attribution(engine, w, result, computed_at=w.end)
    with engine.begin() as conn:
        replace_device_hours(conn, w)
    out = _result(w, inputs, result)
    for gpu_type, cls, secs in out.unpriced:
        log.warning(
            "rollup %s..%s: %.0f GPU-seconds of %s/%s have no price (row %s, 0 USD); "
            "add one with `costctl prices set %s %s USD --from TIME`",
            w.start,
            w.end,
            secs,
            gpu_type,
            cls,
            "__unpriced__",
            gpu_type,
            cls,
        )
    if metrics is not None:
        metrics.observe(out.unpriced)
    return out


def write_attribution(
    engine: Engine, window: Window, result: Attribution, *, computed_at: datetime
) -> None:
    """Replace the ledger rows and hour totals of ``window`` with ``result`` atomically."""
    rows = result.rows
    hours = result.hours.assign(computed_at=computed_at)
    ledger_rows = [
        (r[0].to_pydatetime(), *r[1:]) for r in rows[LEDGER_COLUMNS].itertuples(index=False)
    ]
    hour_rows = [
        (r[0].to_pydatetime(), *r[1:])
        for r in hours[[*HOUR_COLUMNS, "computed_at"]].itertuples(index=False)
    ]
    entries, hour_totals = table_of(LedgerEntry), table_of(LedgerHour)
    with engine.begin() as conn:
        for table in (entries, hour_totals):
            conn.execute(
                delete(table).where(table.c.hour >= window.start, table.c.hour < window.end)
            )
        bulk_insert_ignore(conn, entries, LEDGER_COLUMNS, ledger_rows)
        bulk_insert_ignore(conn, hour_totals, [*HOUR_COLUMNS, "computed_at"], hour_rows)


def query_costs(
    engine: Engine,
    window: Window,
    *,
    group_by: Sequence[str] = ("model", "customer", "request_type"),
    filters: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Ledger totals over ``window`` (whole hours whose start lies in it), grouped in SQL.

    Returns: one row per group with gpu_seconds, input_tokens, output_tokens, requests,
    cost_cents and cost_usd. An empty ``group_by`` gives one total row.
    Raises: ValueError for an unknown group key or filter.
    """
    unknown = [g for g in group_by if g not in GROUP_KEYS]
    if unknown:
        raise ValueError(f"unknown group_by key(s) {unknown}; allowed: {list(GROUP_KEYS)}")
    filters = filters or {}
    bad = [k for k in filters if k not in ("model", "customer", "request_type", "kind")]
    if bad:
        raise ValueError(f"unknown filter(s) {bad}")
    t = table_of(LedgerEntry).c
    with engine.connect() as conn:
        keys: list[Any] = []
        for g in group_by:
            if g == "day":
                keys.append(day_expr(conn, t.hour).label("day"))
            else:
                keys.append(t[g])
        conds = [t.hour >= window.start, t.hour < window.end]
        conds += [t[k] == v for k, v in filters.items()]
        stmt = select(
            *keys,
            func.coalesce(func.sum(t.gpu_seconds), 0.0).label("gpu_seconds"),
            func.coalesce(func.sum(t.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(t.output_tokens), 0).label("output_tokens"),
            func.coalesce(func.sum(t.requests), 0).label("requests"),
            func.coalesce(func.sum(t.cost_cents), 0).label("cost_cents"),
        ).where(and_(*conds))
        if keys:
            stmt = stmt.group_by(*keys).order_by(func.sum(t.cost_cents).desc())
        df = pd.read_sql(stmt, conn)
    for c in ("input_tokens", "output_tokens", "requests", "cost_cents"):
        df[c] = df[c].astype("int64")
    if "hour" in df.columns:
        df = _utc(df, "hour")
    df["cost_usd"] = df["cost_cents"] / 100.0
    return df


def metered_cents(engine: Engine, window: Window) -> int:
    """Metered cents of the hours whose start lies in ``window`` (the conservation total)."""
    t = table_of(LedgerHour).c
    with engine.connect() as conn:
        value = conn.execute(
            select(func.coalesce(func.sum(t.metered_cost_cents), 0)).where(
                t.hour >= window.start, t.hour < window.end
            )
        ).scalar_one()
    return int(value)
