"""The ledger edge: load a window from the store, attribute it, write ledger rows; query them.

``rollup`` replaces the ledger rows of every hour it computes in one transaction, so running
it twice (or from two schedulers) never doubles a cent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select
from sqlalchemy.engine import Connection, Engine

from billing.attribution import (
    ALLOCATION_COLUMNS,
    HOUR_COLUMNS,
    LEDGER_COLUMNS,
    Attribution,
    attribute,
)
from billing.config import BillingConfig
from billing.ingest import bulk_insert_ignore
from billing.models import (
    Allocation,
    DeviceHour,
    GpuProcessSample,
    GpuSample,
    LedgerEntry,
    LedgerHour,
    UsageEvent,
    table_of,
)
from billing.pricebook import prices_at
from billing.windows import Window

GROUP_KEYS = ("model", "customer", "request_type", "kind", "hour", "day")


@dataclass(frozen=True)
class RollupResult:
    """What a rollup wrote."""

    window: Window
    hours: int
    rows: int
    metered_cost_cents: int
    ledger_cost_cents: int


def _utc(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    for c in cols:
        df[c] = pd.to_datetime(df[c], utc=True)
    return df


def _hour_expr(conn: Connection, column: Any) -> ColumnElement[Any]:
    if conn.dialect.name == "sqlite":
        return func.strftime("%Y-%m-%d %H:00:00", column)
    return func.date_trunc("hour", column)


def replace_device_hours(conn: Connection, window: Window) -> int:
    """Re-sum ``gpu_sample`` per hour x device into ``device_hour`` for ``window`` (in SQL).

    Details: delete the window's hours, then one INSERT ... SELECT ... GROUP BY; on SQLite the
    hour is written in the same text form as every other DateTime so range filters compare.
    """
    s, d = table_of(GpuSample).c, table_of(DeviceHour)
    if conn.dialect.name == "sqlite":
        hour: Any = func.strftime("%Y-%m-%d %H:00:00.000000", s.ts)
    else:
        hour = func.date_trunc("hour", s.ts)
    conn.execute(delete(d).where(d.c.hour >= window.start, d.c.hour < window.end))
    summed = (
        select(
            hour,
            s.gpu_uuid,
            func.max(s.parent_uuid),
            func.max(s.gpu_type),
            func.max(s.mig_profile),
            func.sum(s.interval_s),
            func.sum(func.coalesce(s.sm_util, 0.0) * s.interval_s / 100.0),
            func.min(s.ts),
            func.max(s.ts),
            func.max(s.interval_s),
        )
        .where(s.ts >= window.start, s.ts < window.end)
        .group_by(hour, s.gpu_uuid)
    )
    # the select above lists device_hour's columns in table order
    res = conn.execute(insert(d).from_select([c.name for c in d.c], summed))
    return int(res.rowcount or 0)


def load_usage_by_hour(conn: Connection, window: Window) -> pd.DataFrame:
    """Usage summed in SQL per hour x model x customer x request_type (one row per group)."""
    u = table_of(UsageEvent).c
    hour = _hour_expr(conn, u.ts).label("ts")
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


def load_inputs(conn: Connection, window: Window) -> dict[str, pd.DataFrame]:
    """The frames ``attribute`` needs for ``window`` (hour-aligned), read in one connection."""
    w = window.hour_aligned()
    s = table_of(GpuSample).c
    p = table_of(GpuProcessSample).c
    a = table_of(Allocation).c
    samples = pd.read_sql(
        select(s.ts, s.gpu_uuid, s.gpu_type, s.pricing_class, s.interval_s).where(
            s.parent_uuid.is_(None), s.ts >= w.start, s.ts < w.end
        ),
        conn,
    )
    processes = pd.read_sql(
        select(p.ts, p.gpu_uuid, p.model, p.sm_util, p.interval_s).where(
            p.model.is_not(None), p.ts >= w.start, p.ts < w.end
        ),
        conn,
    )
    allocations = pd.read_sql(
        select(*[a[c] for c in ALLOCATION_COLUMNS]).where(
            a.start < w.end, or_(a.end.is_(None), a.end > w.start)
        ),
        conn,
    )
    return {
        "samples": _utc(samples, "ts"),
        "processes": _utc(processes, "ts"),
        "allocations": _utc(allocations, "start", "end"),
        "usage": load_usage_by_hour(conn, w),
    }


def rollup(engine: Engine, window: Window, config: BillingConfig) -> RollupResult:
    """Attribute ``window`` (hour-aligned) and replace its ledger rows in one transaction."""
    w = window.hour_aligned()
    with engine.connect() as conn:
        inputs = load_inputs(conn, w)
    prices = prices_at(engine, w.end)
    result = attribute(
        **inputs,
        prices=prices,
        window=w,
        weights=config.weights,
        idle_policy=config.idle_policy,
    )
    write_attribution(engine, w, result, computed_at=w.end)
    with engine.begin() as conn:
        replace_device_hours(conn, w)
    return RollupResult(
        window=w,
        hours=len(result.hours),
        rows=len(result.rows),
        metered_cost_cents=int(result.hours["metered_cost_cents"].sum()),
        ledger_cost_cents=int(result.rows["cost_cents"].sum()),
    )


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
                expr = (
                    func.strftime("%Y-%m-%d", t.hour)
                    if conn.dialect.name == "sqlite"
                    else func.to_char(t.hour, "YYYY-MM-DD")
                )
                keys.append(expr.label("day"))
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
