"""The one write edge for time: every timestamp column stores and returns UTC.

``UTCDateTime`` is the column type of every timestamp in billing/models.py and
billing/enforcement/models.py. On bind it turns an aware datetime of any offset into UTC (a
naive one is taken as UTC already); on result it hands back an aware UTC datetime on both
backends. Without it SQLite's DateTime writes an aware value's *local* wall clock with the
offset dropped, so 10:00+05:30 was read back as 10:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def is_timestamp(sa_type: Any) -> bool:
    """True for a timestamp column type (``UTCDateTime`` or a plain ``DateTime``)."""
    return isinstance(sa_type, UTCDateTime | DateTime)


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (a naive value is taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that converts to UTC on the way in and out.

    Details: SQLite keeps the UTC wall clock as text (the form ``billing.schemas.utc_text``
    writes for bulk inserts, so both paths compare as text); PostgreSQL keeps timestamptz and
    gets an aware UTC value, so the session's time zone never shifts a bound instant.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        """Aware UTC for PostgreSQL; the UTC wall clock (naive) for SQLite."""
        if not isinstance(value, datetime):
            return value
        utc = as_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        """An aware UTC datetime (SQLite hands back naive UTC text parsed by the impl)."""
        if not isinstance(value, datetime):
            return value
        return as_utc(value)
