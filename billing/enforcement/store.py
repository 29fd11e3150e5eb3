"""The policy store edge: budgets, rate limits, kill-switches and the audit log in the database.

Every mutation writes its audit row in the same transaction. Keyword-only service functions;
routes and the CLI call these, never ``session.commit()`` themselves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.engine import Engine

from billing.enforcement.domain import Budget, RateRule, Scope
from billing.enforcement.models import (
    MICROS,
    AuditRow,
    Basis,
    BudgetAction,
    BudgetCounter,
    BudgetRow,
    KillScope,
    KillSwitchRow,
    Period,
    RateLimitRow,
)
from billing.enforcement.schemas import (
    AuditPublic,
    BudgetCreate,
    BudgetPublic,
    KillSwitchPublic,
    RateLimitCreate,
    RateLimitPublic,
)
from billing.enforcement.sql_backend import utc
from billing.models import table_of

BUDGET = table_of(BudgetRow)
RATE = table_of(RateLimitRow)
KILL = table_of(KillSwitchRow)
AUDIT = table_of(AuditRow)
COUNTER = table_of(BudgetCounter)


def audit(
    conn: Connection,
    *,
    actor: str,
    action: str,
    subject: str,
    reason: str = "",
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an audit entry (inside the caller's transaction)."""
    conn.execute(
        insert(AUDIT).values(
            ts=now,
            actor=actor[:200],
            action=action,
            subject=subject[:300],
            reason=reason[:1000],
            detail=json.dumps(detail or {}, default=str)[:4000],
        )
    )


def _scope(row: Any) -> Scope:
    return Scope(row.customer, row.model, row.request_type)


def _budget_public(row: Any) -> BudgetPublic:
    return BudgetPublic(
        id=row.id,
        name=row.name,
        customer=row.customer,
        model=row.model,
        request_type=row.request_type,
        period=Period(row.period),
        limit_usd=None if row.limit_micros is None else row.limit_micros / MICROS,
        limit_tokens=row.limit_tokens,
        soft_ratio=row.soft_ratio,
        action=BudgetAction(row.action),
        basis=Basis(row.basis),
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
    )


def budget_of(row: Any) -> Budget:
    """The pure Budget of a stored row."""
    return Budget(
        id=int(row.id),
        name=row.name,
        scope=_scope(row),
        period=Period(row.period),
        limit_micros=row.limit_micros,
        limit_tokens=row.limit_tokens,
        soft_ratio=float(row.soft_ratio),
        action=BudgetAction(row.action),
        basis=Basis(row.basis),
    )


def list_budgets(engine: Engine, *, customer: str | None = None) -> list[BudgetPublic]:
    """Every budget (only ``customer``'s when given), by name."""
    stmt = select(BUDGET).order_by(BUDGET.c.name)
    if customer is not None:
        stmt = stmt.where(BUDGET.c.customer == customer)
    with engine.connect() as conn:
        return [_budget_public(r) for r in conn.execute(stmt)]


def set_budget(
    engine: Engine, *, name: str, spec: BudgetCreate, actor: str, now: datetime
) -> tuple[BudgetPublic, bool, bool]:
    """Create or replace a budget; returns it, whether it was created, whether counters reset.

    Changing the period, scope or basis restarts its counters (they would count another
    thing); the caller then seeds them with the period's spend (``Enforcer.seed``).
    """
    values = {
        "customer": spec.customer,
        "model": spec.model,
        "request_type": spec.request_type,
        "period": spec.period.value,
        "limit_micros": None if spec.limit_usd is None else round(spec.limit_usd * MICROS),
        "limit_tokens": spec.limit_tokens,
        "soft_ratio": spec.soft_ratio,
        "action": spec.action.value,
        "basis": spec.basis.value,
        "updated_at": now,
    }
    with engine.begin() as conn:
        old = conn.execute(select(BUDGET).where(BUDGET.c.name == name)).first()
        reset = False
        if old is None:
            conn.execute(insert(BUDGET).values(name=name, created_at=now, **values))
        else:
            conn.execute(update(BUDGET).where(BUDGET.c.id == old.id).values(**values))
            reset = (old.period, old.customer, old.model, old.request_type, old.basis) != (
                values["period"],
                values["customer"],
                values["model"],
                values["request_type"],
                values["basis"],
            )
            if reset:
                conn.execute(delete(COUNTER).where(COUNTER.c.budget_id == old.id))
        audit(
            conn,
            actor=actor,
            action="budget.create" if old is None else "budget.update",
            subject=f"budget:{name}",
            now=now,
            detail=spec.model_dump(mode="json"),
        )
        row = conn.execute(select(BUDGET).where(BUDGET.c.name == name)).one()
    return _budget_public(row), old is None, reset


def delete_budget(engine: Engine, *, name: str, actor: str, now: datetime) -> int | None:
    """Delete a budget and its counters; returns its id, or None if there was none."""
    with engine.begin() as conn:
        old = conn.execute(select(BUDGET.c.id).where(BUDGET.c.name == name)).first()
        if old is None:
            return None
        conn.execute(delete(COUNTER).where(COUNTER.c.budget_id == old[0]))
        conn.execute(delete(BUDGET).where(BUDGET.c.id == old[0]))
        audit(conn, actor=actor, action="budget.delete", subject=f"budget:{name}", now=now)
    return int(old[0])


def _rate_public(row: Any) -> RateLimitPublic:
    return RateLimitPublic(
        id=row.id,
        name=row.name,
        customer=row.customer,
        model=row.model,
        request_type=row.request_type,
        rpm=row.rpm,
        tpm=row.tpm,
        per=[p for p in row.per.split(",") if p],
        updated_at=utc(row.updated_at),
    )


def list_rate_limits(engine: Engine) -> list[RateLimitPublic]:
    """Every rate limit, by name."""
    with engine.connect() as conn:
        return [_rate_public(r) for r in conn.execute(select(RATE).order_by(RATE.c.name))]


def set_rate_limit(
    engine: Engine, *, name: str, spec: RateLimitCreate, actor: str, now: datetime
) -> tuple[RateLimitPublic, bool]:
    """Create or replace a rate limit; returns it and whether it was created."""
    values = {
        "customer": spec.customer,
        "model": spec.model,
        "request_type": spec.request_type,
        "rpm": spec.rpm,
        "tpm": spec.tpm,
        "per": ",".join(spec.per),
        "updated_at": now,
    }
    with engine.begin() as conn:
        old = conn.execute(select(RATE.c.id).where(RATE.c.name == name)).first()
        if old is None:
            conn.execute(insert(RATE).values(name=name, **values))
        else:
            conn.execute(update(RATE).where(RATE.c.id == old[0]).values(**values))
        audit(
            conn,
            actor=actor,
            action="ratelimit.set",
            subject=f"ratelimit:{name}",
            now=now,
            detail=spec.model_dump(mode="json"),
        )
        row = conn.execute(select(RATE).where(RATE.c.name == name)).one()
    return _rate_public(row), old is None


def delete_rate_limit(engine: Engine, *, name: str, actor: str, now: datetime) -> bool:
    """Delete a rate limit; False if there was none."""
    with engine.begin() as conn:
        n = conn.execute(delete(RATE).where(RATE.c.name == name)).rowcount
        if n:
            audit(
                conn, actor=actor, action="ratelimit.delete", subject=f"ratelimit:{name}", now=now
            )
    return bool(n)


def _kill_public(row: Any) -> KillSwitchPublic:
    return KillSwitchPublic(
        id=row.id,
        scope=KillScope(row.scope),
        target=row.target,
        active=row.active,
        reason=row.reason,
        actor=row.actor,
        created_at=utc(row.created_at),
        revived_at=None if row.revived_at is None else utc(row.revived_at),
        previous_replicas=row.previous_replicas,
    )


def list_kill_switches(engine: Engine, *, active_only: bool = True) -> list[KillSwitchPublic]:
    """Kill-switches (active ones, or the whole history), newest first."""
    stmt = select(KILL).order_by(KILL.c.id.desc())
    if active_only:
        stmt = stmt.where(KILL.c.active.is_(True))
    with engine.connect() as conn:
        return [_kill_public(r) for r in conn.execute(stmt)]


def insert_kill(
    engine: Engine, *, scope: KillScope, target: str, reason: str, actor: str, now: datetime
) -> tuple[KillSwitchPublic, bool]:
    """Activate a kill-switch (a no-op if one is active on that scope); returns it and created."""
    with engine.begin() as conn:
        old = conn.execute(
            select(KILL).where(
                KILL.c.scope == scope.value, KILL.c.target == target, KILL.c.active.is_(True)
            )
        ).first()
        if old is not None:
            return _kill_public(old), False
        conn.execute(
            insert(KILL).values(
                scope=scope.value,
                target=target,
                active=True,
                reason=reason,
                actor=actor,
                created_at=now,
            )
        )
        audit(
            conn,
            actor=actor,
            action="kill",
            subject=f"{scope.value}:{target}",
            reason=reason,
            now=now,
        )
        row = conn.execute(
            select(KILL).where(
                KILL.c.scope == scope.value, KILL.c.target == target, KILL.c.active.is_(True)
            )
        ).one()
    return _kill_public(row), True


def note_replicas(
    engine: Engine, *, kill_id: int, previous: int, actor: str, now: datetime
) -> None:
    """Remember the replica count a model kill-switch scaled down from (revive restores it)."""
    with engine.begin() as conn:
        conn.execute(update(KILL).where(KILL.c.id == kill_id).values(previous_replicas=previous))
        row = conn.execute(select(KILL.c.scope, KILL.c.target).where(KILL.c.id == kill_id)).one()
        audit(
            conn,
            actor=actor,
            action="scale",
            subject=f"{row[0]}:{row[1]}",
            now=now,
            detail={"replicas": 0, "previous": previous},
        )


def deactivate_kill(
    engine: Engine, *, scope: KillScope, target: str, reason: str, actor: str, now: datetime
) -> KillSwitchPublic | None:
    """Revive a scope; returns the kill-switch that was active, or None."""
    with engine.begin() as conn:
        old = conn.execute(
            select(KILL).where(
                KILL.c.scope == scope.value, KILL.c.target == target, KILL.c.active.is_(True)
            )
        ).first()
        if old is None:
            return None
        conn.execute(update(KILL).where(KILL.c.id == old.id).values(active=False, revived_at=now))
        audit(
            conn,
            actor=actor,
            action="revive",
            subject=f"{scope.value}:{target}",
            reason=reason,
            now=now,
        )
        row = conn.execute(select(KILL).where(KILL.c.id == old.id)).one()
    return _kill_public(row)


def audit_note(
    engine: Engine, *, actor: str, action: str, subject: str, now: datetime, **detail: Any
) -> None:
    """A stand-alone audit entry (e.g. a failed scale)."""
    with engine.begin() as conn:
        audit(conn, actor=actor, action=action, subject=subject, now=now, detail=detail)


def list_audit(engine: Engine, *, limit: int = 100) -> list[AuditPublic]:
    """The newest audit entries first."""
    with engine.connect() as conn:
        rows = conn.execute(select(AUDIT).order_by(AUDIT.c.id.desc()).limit(limit))
        return [
            AuditPublic(
                ts=utc(r.ts),
                actor=r.actor,
                action=r.action,
                subject=r.subject,
                reason=r.reason,
                detail=r.detail,
            )
            for r in rows
        ]


@dataclass(frozen=True)
class Policy:
    """What authorize reads from the store: budgets, rate rules, active kill-switches."""

    budgets: tuple[Budget, ...]
    rules: tuple[RateRule, ...]
    kills: frozenset[tuple[KillScope, str]]


def load_policy(engine: Engine) -> Policy:
    """Read the whole policy in one connection (small tables)."""
    with engine.connect() as conn:
        budgets = tuple(budget_of(r) for r in conn.execute(select(BUDGET).order_by(BUDGET.c.id)))
        rules = tuple(
            RateRule(
                id=int(r.id),
                name=r.name,
                scope=_scope(r),
                rpm=r.rpm,
                tpm=r.tpm,
                per=tuple(p for p in r.per.split(",") if p),
            )
            for r in conn.execute(select(RATE).order_by(RATE.c.id))
        )
        kills = frozenset(
            (KillScope(r.scope), r.target)
            for r in conn.execute(
                select(KILL.c.scope, KILL.c.target).where(KILL.c.active.is_(True))
            )
        )
    return Policy(budgets, rules, kills)


def matching_budgets(
    budgets: Sequence[Budget], customer: str, model: str, request_type: str
) -> list[Budget]:
    """The budgets whose scope covers a request, by id."""
    return [b for b in budgets if b.scope.matches(customer, model, request_type)]
