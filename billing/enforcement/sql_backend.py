"""Reservations in the database: one short serialised transaction per reserve or settle.

Details: PostgreSQL locks the budget counter rows with ``SELECT ... ORDER BY budget_id FOR
UPDATE`` (a fixed order, so no deadlock); SQLite takes the write lock up front with ``BEGIN
IMMEDIATE``. Lock order everywhere: reservation rows (by key), then counters (by budget id).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, and_, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from billing.enforcement.backend import Reserved
from billing.enforcement.domain import (
    ALLOW,
    Budget,
    Charge,
    Decision,
    Level,
    SettleResult,
    decide_budgets,
    period_bounds,
    rolled,
)
from billing.enforcement.models import BudgetCounter, ReservationRow, ReservationStatus
from billing.models import table_of

COUNTER = table_of(BudgetCounter)
RES = table_of(ReservationRow)
HELD = ReservationStatus.held.value


def utc(ts: datetime) -> datetime:
    """SQLite hands back naive UTC; make every timestamp aware."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def ids_text(ids: Sequence[int]) -> str:
    """Budget ids as stored on a reservation."""
    return ",".join(str(i) for i in ids)


def parse_ids(text: str) -> list[int]:
    """The budget ids of a reservation."""
    return [int(x) for x in text.split(",") if x]


@contextmanager
def locked(engine: Engine) -> Iterator[Connection]:
    """A write transaction: BEGIN IMMEDIATE on SQLite, a plain one on PostgreSQL."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise


class SqlReservations:
    """ReservationBackend over enf_budget_counter and enf_reservation."""

    name = "sql"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _lock_counters(
        self, conn: Connection, budgets: Sequence[Budget], now: datetime
    ) -> dict[int, tuple[Level, datetime]]:
        """Lock (creating if missing) the counters of ``budgets``; levels rolled to this period."""
        ids = sorted({b.id for b in budgets})
        if not ids:
            return {}
        c = COUNTER.c
        stmt = select(
            c.budget_id,
            c.period_start,
            c.spent_micros,
            c.spent_tokens,
            c.reserved_micros,
            c.reserved_tokens,
        ).where(c.budget_id.in_(ids))
        stmt = stmt.order_by(c.budget_id)
        if conn.dialect.name != "sqlite":
            stmt = stmt.with_for_update()
        rows = {r[0]: r for r in conn.execute(stmt)}
        starts = {b.id: period_bounds(b.period, now)[0] for b in budgets}
        missing = [i for i in ids if i not in rows]
        if missing:  # first use: create (racing workers may too), then lock what exists
            ins = (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(COUNTER)
            conn.execute(
                ins.on_conflict_do_nothing(),
                [{"budget_id": i, "period_start": starts[i]} for i in missing],
            )
            rows = {r[0]: r for r in conn.execute(stmt)}
        out: dict[int, tuple[Level, datetime]] = {}
        for i in ids:
            r = rows.get(i)
            level = Level() if r is None else Level(int(r[2]), int(r[3]), int(r[4]), int(r[5]))
            stored = starts[i] if r is None else utc(r[1])
            out[i] = (rolled(level, stored, starts[i]), max(stored, starts[i]))
        return out

    def _write(self, conn: Connection, levels: dict[int, tuple[Level, datetime]]) -> None:
        c = COUNTER.c
        for bid, (lv, start) in levels.items():
            conn.execute(
                update(COUNTER)
                .where(c.budget_id == bid)
                .values(
                    period_start=start,
                    spent_micros=lv.spent_micros,
                    spent_tokens=lv.spent_tokens,
                    reserved_micros=lv.reserved_micros,
                    reserved_tokens=lv.reserved_tokens,
                )
            )

    def reserve(
        self,
        key: str,
        budgets: Sequence[Budget],
        *,
        customer: str,
        model: str,
        request_type: str,
        est_micros: int,
        est_tokens: int,
        now: datetime,
        ttl_s: float,
    ) -> Reserved:
        """See ReservationBackend.reserve."""
        with locked(self.engine) as conn:
            old = conn.execute(select(RES.c.status).where(RES.c.key == key)).first()
            if old is not None:
                held = old[0] == HELD
                d = ALLOW if held else Decision(False, "reservation_settled", detail=key)
                return Reserved(d, (), duplicate=True)
            locks = self._lock_counters(conn, budgets, now)
            pairs = tuple((b, locks[b.id][0]) for b in budgets)
            decision = decide_budgets(pairs, est_micros, est_tokens, now)
            if not decision.allowed:
                return Reserved(decision, pairs)
            conn.execute(
                insert(RES).values(
                    key=key,
                    budget_ids=ids_text([b.id for b in budgets]),
                    customer=customer,
                    model=model,
                    request_type=request_type,
                    est_micros=est_micros,
                    est_tokens=est_tokens,
                    status=HELD,
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl_s),
                )
            )
            self._write(
                conn,
                {
                    i: (lv.add(est_micros, est_tokens, reserved=True), start)
                    for i, (lv, start) in locks.items()
                },
            )
        return Reserved(decision, pairs)

    def _unhold(
        self,
        conn: Connection,
        rows: Sequence[tuple[str, str, int, int]],
        status: str,
        now: datetime,
    ) -> None:
        """Take held reservations (key, budget_ids, est_micros, est_tokens) off their counters."""
        if not rows:
            return
        per: dict[int, tuple[int, int]] = {}
        for _key, bids, m, t in rows:
            for b in parse_ids(bids):
                pm, pt = per.get(b, (0, 0))
                per[b] = (pm + int(m), pt + int(t))
        c = COUNTER.c
        for bid in sorted(per):
            m, t = per[bid]
            conn.execute(
                update(COUNTER)
                .where(c.budget_id == bid)
                .values(
                    reserved_micros=c.reserved_micros - m, reserved_tokens=c.reserved_tokens - t
                )
            )
        conn.execute(update(RES).where(RES.c.key.in_([r[0] for r in rows])).values(status=status))

    def release(self, key: str, now: datetime) -> bool:
        """See ReservationBackend.release."""
        r = RES.c
        with locked(self.engine) as conn:
            stmt = select(r.key, r.budget_ids, r.est_micros, r.est_tokens).where(
                r.key == key, r.status == HELD
            )
            if conn.dialect.name != "sqlite":
                stmt = stmt.with_for_update()
            rows = [tuple(x) for x in conn.execute(stmt)]
            self._unhold(conn, rows, ReservationStatus.released.value, now)  # type: ignore[arg-type]
        return bool(rows)

    def expire(self, now: datetime) -> int:
        """See ReservationBackend.expire."""
        r = RES.c
        with locked(self.engine) as conn:
            stmt = (
                select(r.key, r.budget_ids, r.est_micros, r.est_tokens)
                .where(r.status == HELD, r.expires_at < now)
                .order_by(r.key)
            )
            if conn.dialect.name != "sqlite":
                stmt = stmt.with_for_update(skip_locked=True)
            rows = [tuple(x) for x in conn.execute(stmt)]
            self._unhold(conn, rows, ReservationStatus.expired.value, now)  # type: ignore[arg-type]
        return len(rows)

    def settle(
        self, charges: Sequence[Charge], budgets: Sequence[Budget], now: datetime
    ) -> SettleResult:
        """See ReservationBackend.settle."""
        if not charges:
            return SettleResult()
        by_id = {b.id: b for b in budgets}
        r = RES.c
        keys = sorted({ch.key for ch in charges})
        with locked(self.engine) as conn:
            stmt = (
                select(r.key, r.status, r.budget_ids, r.est_micros, r.est_tokens)
                .where(r.key.in_(keys))
                .order_by(r.key)
            )
            if conn.dialect.name != "sqlite":
                stmt = stmt.with_for_update()
            known = {row[0]: row for row in conn.execute(stmt)}
            # budget id -> (reserved micros/tokens to drop, (micros, tokens, ts) to add)
            unhold: dict[int, list[int]] = {}
            adds: dict[int, list[tuple[int, int, datetime]]] = {}
            new_rows, settled, seen = [], [], set()
            reconciled = charged = dup = 0
            for ch in charges:
                row = known.get(ch.key)
                if ch.key in seen or (
                    row is not None and row[1] not in (HELD, ReservationStatus.expired.value)
                ):
                    dup += 1
                    continue
                seen.add(ch.key)
                if row is not None:
                    reconciled += 1
                    bids = parse_ids(row[2])
                    if row[1] == HELD:
                        for b in bids:
                            u = unhold.setdefault(b, [0, 0])
                            u[0] += int(row[3])
                            u[1] += int(row[4])
                    settled.append({"k": ch.key, "m": ch.micros, "t": ch.tokens})
                else:
                    bids = [
                        b.id
                        for b in budgets
                        if b.scope.matches(ch.customer, ch.model, ch.request_type)
                    ]
                    if not bids:
                        continue
                    charged += 1
                    new_rows.append(
                        {
                            "key": ch.key,
                            "budget_ids": ids_text(bids),
                            "customer": ch.customer,
                            "model": ch.model,
                            "request_type": ch.request_type,
                            "est_micros": 0,
                            "est_tokens": 0,
                            "actual_micros": ch.micros,
                            "actual_tokens": ch.tokens,
                            "status": ReservationStatus.charged.value,
                            "created_at": now,
                            "expires_at": now,
                        }
                    )
                for b in bids:
                    adds.setdefault(b, []).append((ch.micros, ch.tokens, ch.ts))
            for s in settled:
                conn.execute(
                    update(RES)
                    .where(r.key == s["k"])
                    .values(
                        status=ReservationStatus.reconciled.value,
                        actual_micros=s["m"],
                        actual_tokens=s["t"],
                    )
                )
            if new_rows:
                conn.execute(insert(RES), new_rows)
            touched = sorted(set(unhold) | set(adds))
            live = [by_id[i] for i in touched if i in by_id]
            locks = self._lock_counters(conn, live, now)
            for i in touched:
                if i not in locks:  # a deleted budget: nothing to count
                    continue
                lv, start = locks[i]
                um, ut = unhold.get(i, [0, 0])
                lv = replace(
                    lv,
                    reserved_micros=lv.reserved_micros - um,
                    reserved_tokens=lv.reserved_tokens - ut,
                )
                for m, t, ts in adds.get(i, []):
                    if utc(ts) >= start:
                        lv = lv.add(m, t, reserved=False)
                locks[i] = (lv, start)
            self._write(conn, locks)
        return SettleResult(reconciled, charged, dup, frozenset(locks))

    def levels(self, budgets: Sequence[Budget], now: datetime) -> dict[int, Level]:
        """See ReservationBackend.levels."""
        c = COUNTER.c
        ids = [b.id for b in budgets]
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = {
                row[0]: row
                for row in conn.execute(
                    select(
                        c.budget_id,
                        c.period_start,
                        c.spent_micros,
                        c.spent_tokens,
                        c.reserved_micros,
                        c.reserved_tokens,
                    ).where(c.budget_id.in_(ids))
                )
            }
        out = {}
        for b in budgets:
            row = rows.get(b.id)
            start = period_bounds(b.period, now)[0]
            if row is None:
                out[b.id] = Level()
                continue
            lv = Level(int(row[2]), int(row[3]), int(row[4]), int(row[5]))
            out[b.id] = rolled(lv, utc(row[1]), start)
        return out

    def adjust(self, budget: Budget, micros: int, tokens: int, now: datetime) -> None:
        """See ReservationBackend.adjust."""
        with locked(self.engine) as conn:
            locks = self._lock_counters(conn, [budget], now)
            lv, start = locks[budget.id]
            self._write(conn, {budget.id: (lv.add(micros, tokens, reserved=False), start)})

    def in_flight(self) -> int:
        """See ReservationBackend.in_flight."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(RES).where(and_(RES.c.status == HELD))
                ).scalar_one()
            )

    def forget(self, budget_id: int) -> None:
        """See ReservationBackend.forget."""
        with self.engine.begin() as conn:
            conn.execute(delete(COUNTER).where(COUNTER.c.budget_id == budget_id))
