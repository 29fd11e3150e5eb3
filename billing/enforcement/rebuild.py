"""The database side of a counter rebuild: what each budget spent this period, what is held.

Redis is a cache of the budget counters; the database is the truth. After a Redis restart or
flush (its epoch key is gone) and when authorize falls back to the SQL backend, the counters
are rebuilt from ``rebuild_state``: spent from ``billing.enforcement.spend.period_spent`` (the one
"period spent from the database", in the budget's basis) and reserved from the reservations the
SQL backend holds (``enf_reservation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing.enforcement.domain import Budget, period_bounds
from billing.enforcement.models import ReservationRow, ReservationStatus
from billing.enforcement.rates import Rates
from billing.enforcement.spend import period_spent
from billing.enforcement.sql_backend import parse_ids, utc
from billing.models import table_of

RES = table_of(ReservationRow)


@dataclass(frozen=True)
class HeldRow:
    """A reservation the SQL backend holds: key, budget ids, estimate, expiry."""

    key: str
    budget_ids: tuple[int, ...]
    micros: int
    tokens: int
    expires_at: datetime


@dataclass(frozen=True)
class CounterState:
    """One budget's rebuilt counters for the period starting at ``period_start``."""

    budget_id: int
    period_start: datetime
    spent_micros: int
    spent_tokens: int
    reserved_micros: int
    reserved_tokens: int


@dataclass(frozen=True)
class RebuildState:
    """Everything a rebuild writes, read from the database at ``as_of``."""

    as_of: datetime
    counters: tuple[CounterState, ...]
    held: tuple[HeldRow, ...]


def held_reservations(engine: Engine, now: datetime) -> list[HeldRow]:
    """Reservations held in the database and not yet expired."""
    r = RES.c
    stmt = select(r.key, r.budget_ids, r.est_micros, r.est_tokens, r.expires_at).where(
        r.status == ReservationStatus.held.value, r.expires_at >= now
    )
    with engine.connect() as conn:
        return [
            HeldRow(k, tuple(parse_ids(ids)), int(m), int(t), utc(exp))
            for k, ids, m, t, exp in conn.execute(stmt)
        ]


def rebuild_state(
    engine: Engine,
    rates: Rates,
    budgets: Sequence[Budget],
    now: datetime,
    *,
    resolution_s: int = 3600,
) -> RebuildState:
    """Each budget's spent (``period_spent``) and reserved (held rows) at ``now``."""
    held = held_reservations(engine, now)
    counters = []
    for b in budgets:
        sm, st = period_spent(engine, b, rates, now, resolution_s=resolution_s)
        mine = [h for h in held if b.id in h.budget_ids]
        counters.append(
            CounterState(
                b.id,
                period_bounds(b.period, now)[0],
                sm,
                st,
                sum(h.micros for h in mine),
                sum(h.tokens for h in mine),
            )
        )
    return RebuildState(now, tuple(counters), tuple(held))
