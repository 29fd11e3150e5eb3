"""Tables of enforcement: budgets and their counters, rate limits, reservations, kill-switches,
alerts and the audit log.

Money is integer micro-USD (``*_micros``) so counters add up exactly; the API speaks USD.
A scope column that is NULL matches any value ("*" in the CLI); all NULL is the global scope.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from billing import limits as L
from billing.enforcement.enums import Basis, BudgetAction, KillScope, Period, ReservationStatus
from billing.models import ID_TYPE
from billing.utc import UTCDateTime

MICROS = 1_000_000

__all__ = [
    "MICROS",
    "AuditRow",
    "Basis",
    "BudgetAction",
    "BudgetAlertRow",
    "BudgetCounter",
    "BudgetRow",
    "KillScope",
    "KillSwitchRow",
    "Period",
    "RateLimitRow",
    "ReservationRow",
    "ReservationStatus",
]


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def _big(default: int = 0) -> Any:
    return Field(default=default, sa_column=Column(BigInteger, nullable=False, default=default))


def _id() -> Any:
    return Field(default=None, sa_column=Column(ID_TYPE, primary_key=True, autoincrement=True))


class BudgetRow(SQLModel, table=True):
    """A budget over one scope and period, with a soft (alert) and a hard (action) line."""

    __tablename__ = "enf_budget"

    id: int | None = _id()
    name: str = Field(max_length=L.OBJ_NAME_LEN, unique=True, index=True)
    customer: str | None = Field(default=None, max_length=L.NAME_LEN)
    model: str | None = Field(default=None, max_length=L.NAME_LEN)
    request_type: str | None = Field(default=None, max_length=L.REQUEST_TYPE_LEN)
    period: str = Field(max_length=16)
    limit_micros: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    limit_tokens: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    soft_ratio: float = 0.8
    action: str = Field(default=BudgetAction.block.value, max_length=16)
    basis: str = Field(default=Basis.cost.value, max_length=8)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class BudgetCounter(SQLModel, table=True):
    """What a budget has spent and holds reserved in its current period (sql backend).

    Invariant: reserved_* = the sum of held reservations naming this budget.
    """

    __tablename__ = "enf_budget_counter"

    budget_id: int = Field(sa_column=Column(ID_TYPE, primary_key=True, autoincrement=False))
    period_start: datetime = _ts()
    spent_micros: int = _big()
    spent_tokens: int = _big()
    reserved_micros: int = _big()
    reserved_tokens: int = _big()


class RateLimitRow(SQLModel, table=True):
    """Requests/min and tokens/min allowed to a scope (token buckets, one per scope value)."""

    __tablename__ = "enf_rate_limit"

    id: int | None = _id()
    name: str = Field(max_length=L.OBJ_NAME_LEN, unique=True, index=True)
    customer: str | None = Field(default=None, max_length=L.NAME_LEN)
    model: str | None = Field(default=None, max_length=L.NAME_LEN)
    request_type: str | None = Field(default=None, max_length=L.REQUEST_TYPE_LEN)
    per: str = Field(
        default="", max_length=64, description="Comma list of dims with one bucket per value."
    )
    rpm: float | None = None
    tpm: float | None = None
    updated_at: datetime = _ts()


class ReservationRow(SQLModel, table=True):
    """A reservation, keyed by the id the usage event will carry (also the charge journal)."""

    __tablename__ = "enf_reservation"
    __table_args__ = (Index("ix_enf_reservation_status_exp", "status", "expires_at"),)

    key: str = Field(primary_key=True, max_length=L.NAME_LEN)
    budget_ids: str = Field(default="", max_length=2000, description="Comma list of budget ids.")
    customer: str = Field(max_length=L.NAME_LEN)
    model: str = Field(max_length=L.NAME_LEN)
    request_type: str = Field(max_length=L.REQUEST_TYPE_LEN)
    est_micros: int = _big()
    est_tokens: int = _big()
    actual_micros: int = _big()
    actual_tokens: int = _big()
    status: str = Field(max_length=16)
    created_at: datetime = _ts()
    expires_at: datetime = _ts()


class KillSwitchRow(SQLModel, table=True):
    """A kill-switch; the row stays after revive (active=False) as history."""

    __tablename__ = "enf_kill_switch"
    __table_args__ = (Index("ix_enf_kill_switch_active", "active"),)

    id: int | None = _id()
    scope: str = Field(max_length=16)
    target: str = Field(max_length=L.NAME_LEN)
    active: bool = True
    reason: str = Field(max_length=L.REASON_LEN)
    actor: str = Field(max_length=200)
    created_at: datetime = _ts()
    revived_at: datetime | None = _ts(nullable=True)
    previous_replicas: int | None = None


class AuditRow(SQLModel, table=True):
    """Who changed what enforcement state, when and why."""

    __tablename__ = "enf_audit"

    id: int | None = _id()
    ts: datetime = _ts(index=True)
    actor: str = Field(max_length=200)
    action: str = Field(max_length=64)
    subject: str = Field(max_length=300)
    reason: str = Field(default="", max_length=1000)
    detail: str = Field(default="{}", max_length=4000)


class BudgetAlertRow(SQLModel, table=True):
    """An alert sent once per budget, period and level (soft/hard)."""

    __tablename__ = "enf_budget_alert"
    __table_args__ = (UniqueConstraint("budget_id", "period_start", "level", name="uq_enf_alert"),)

    id: int | None = _id()
    budget_id: int = Field(sa_column=Column(ID_TYPE, nullable=False))
    period_start: datetime = _ts()
    level: str = Field(max_length=8)
    ts: datetime = _ts()
    spent_micros: int = _big()
    delivered: bool = False
