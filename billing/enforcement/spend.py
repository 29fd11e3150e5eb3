"""What a budget has spent in a period, from the database (the truth the counters follow).

``period_spent`` is the one implementation: ``costctl status``, ``/v1/budgets/burn``, the
dashboard, the weekly export and the budget job (which reconciles the live counters to it)
all read it. Amounts are (micro-USD, tokens); tokens are always the usage events' tokens.

- basis ``price``: the period's usage events priced by the rate card (per model and customer,
  rounded up per group).
- basis ``cost``: the ledger's attributed cost (``cost_cents``) of the scope for the hours the
  rollup has computed (every bucket before the end of the newest ``ledger_hour`` of the
  period), plus the usage events after that (the tail) at the model's measured cost rate
  (``billing.enforcement.rates``), rounded up per model.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing.enforcement.backend import ReservationBackend
from billing.enforcement.domain import DIMS, Budget, Level, Scope, period_bounds
from billing.enforcement.enums import Basis
from billing.enforcement.rates import MICROS_PER_CENT, Rates
from billing.kinds import LedgerKind
from billing.models import LedgerEntry, LedgerHour, UsageEvent, table_of
from billing.utc import as_utc

USAGE = table_of(UsageEvent)
LEDGER = table_of(LedgerEntry)
LEDGER_HOUR = table_of(LedgerHour)


def _scoped(stmt: Any, table: Any, scope: Scope) -> Any:
    for dim in DIMS:
        value = getattr(scope, dim)
        if value is not None:
            stmt = stmt.where(table.c[dim] == value)
    return stmt


def _ceil(x: float) -> int:
    return -int(-x // 1)


def rolled_up_until(engine: Engine, start: datetime, end: datetime, resolution_s: int) -> datetime:
    """The end of the newest ledger bucket the rollup computed in [start, end) (else start)."""
    h = LEDGER_HOUR.c.hour
    with engine.connect() as conn:
        last = conn.execute(select(func.max(h)).where(h >= start, h < end)).scalar()
    if last is None:
        return start
    return min(end, as_utc(last) + timedelta(seconds=resolution_s))


def period_spent(
    engine: Engine, budget: Budget, rates: Rates, now: datetime, *, resolution_s: int = 3600
) -> tuple[int, int]:
    """(micro-USD, tokens) ``budget`` spent in its period holding ``now`` (see module doc)."""
    start, end = period_bounds(budget.period, now)
    u = USAGE.c
    with engine.connect() as conn:
        tokens = conn.execute(
            _scoped(
                select(func.coalesce(func.sum(u.input_tokens + u.output_tokens), 0)).where(
                    u.ts >= start, u.ts < end
                ),
                USAGE,
                budget.scope,
            )
        ).scalar_one()
    if budget.basis == Basis.price:
        return _priced(engine, budget.scope, rates, start, end, by_customer=True), int(tokens)
    tail = rolled_up_until(engine, start, end, resolution_s)
    t = LEDGER.c
    stmt = select(func.coalesce(func.sum(t.cost_cents), 0)).where(
        t.kind == LedgerKind.attributed.value, t.hour >= start, t.hour < tail
    )
    with engine.connect() as conn:
        cents = int(conn.execute(_scoped(stmt, LEDGER, budget.scope)).scalar_one())
    micros = cents * MICROS_PER_CENT + _priced(
        engine, budget.scope, rates, tail, end, by_customer=False
    )
    return micros, int(tokens)


def _priced(
    engine: Engine,
    scope: Scope,
    rates: Rates,
    start: datetime,
    end: datetime,
    *,
    by_customer: bool,
) -> int:
    """Usage events of ``scope`` in [start, end) at the rate card (by_customer) or cost rate."""
    if start >= end:
        return 0
    u = USAGE.c
    keys = [u.model, u.customer] if by_customer else [u.model]
    stmt = select(*keys, func.sum(u.input_tokens), func.sum(u.output_tokens)).where(
        u.ts >= start, u.ts < end
    )
    micros = 0
    with engine.connect() as conn:
        for row in conn.execute(_scoped(stmt, USAGE, scope).group_by(*keys)):
            model, inp, out = str(row[0]), int(row[-2]), int(row[-1])
            p = rates.price(model, str(row[1])) if by_customer else rates.cost(model)
            micros += _ceil(inp * p.input_usd_per_mtok + out * p.output_usd_per_mtok)
    return micros


def seed_counters(
    engine: Engine,
    backend: ReservationBackend,
    budgets: Sequence[Budget],
    rates: Rates,
    now: datetime,
    *,
    resolution_s: int = 3600,
) -> dict[str, int]:
    """Set each budget's live spent counters to ``period_spent``; returns the correction
    (µUSD, truth - counter) per budget name that needed one."""
    if not budgets:
        return {}
    levels = backend.levels(budgets, now)
    fixed: dict[str, int] = {}
    for b in budgets:
        micros, tokens = period_spent(engine, b, rates, now, resolution_s=resolution_s)
        lv = levels.get(b.id, Level())
        dm, dt = micros - lv.spent_micros, tokens - lv.spent_tokens
        if dm or dt:
            backend.adjust(b, dm, dt, now)
            fixed[b.name] = dm
    return fixed
