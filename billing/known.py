"""Which filter values were ever seen, so "no spend" and "no such name" read differently."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing.models import Allocation, LedgerEntry, UsageEvent, table_of

DIMENSIONS = ("model", "customer", "request_type")


def unknown_values(engine: Engine, filters: Mapping[str, str]) -> dict[str, list[str]]:
    """The model/customer/request_type filter values no ledger row or usage event ever carried."""
    unknown: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for dim, value in filters.items():
            if dim not in DIMENSIONS:
                continue
            seen = any(
                conn.execute(
                    select(table_of(m).c[dim]).where(table_of(m).c[dim] == value).limit(1)
                ).first()
                for m in (LedgerEntry, UsageEvent)
            )
            if not seen:
                unknown[dim] = [value]
    return unknown


def model_seen(engine: Engine, model: str) -> bool:
    """True when a usage event, an allocation or a ledger row ever named ``model``."""
    with engine.connect() as conn:
        return any(
            conn.execute(
                select(table_of(m).c.model).where(table_of(m).c.model == model).limit(1)
            ).first()
            for m in (UsageEvent, Allocation, LedgerEntry)
        )
