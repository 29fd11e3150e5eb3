"""SQL time expressions that mean the same on SQLite (UTC text) and PostgreSQL (timestamptz).

Every expression is in UTC whatever the session's time zone: PostgreSQL's ``date_trunc`` and
``to_char`` would otherwise cut at the session zone's hours (Asia/Kolkata: at :30 UTC).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Float, Integer, cast, func
from sqlalchemy.engine import Connection


def bucket_expr(conn: Connection, column: Any, resolution_s: int) -> ColumnElement[Any]:
    """Start of the epoch-aligned ``resolution_s`` bucket of ``column`` (UTC).

    Returns: SQLite text 'YYYY-MM-DD HH:MM:SS'; PostgreSQL timestamptz.
    """
    if conn.dialect.name == "sqlite":
        if resolution_s == 3600:
            return func.strftime("%Y-%m-%d %H:00:00", column)
        secs = cast(func.strftime("%s", column), Integer)
        return func.datetime(secs // resolution_s * resolution_s, "unixepoch")
    if resolution_s == 3600:
        return func.date_trunc("hour", column, "UTC")
    epoch = func.extract("epoch", column)
    return func.to_timestamp(func.floor(epoch / resolution_s) * resolution_s)


def hour_text_expr(conn: Connection, column: Any) -> ColumnElement[Any]:
    """The UTC hour of ``column`` in the stored form: SQLite text with microseconds, or PG."""
    if conn.dialect.name == "sqlite":
        return func.strftime("%Y-%m-%d %H:00:00.000000", column)
    return func.date_trunc("hour", column, "UTC")


def day_expr(conn: Connection, column: Any) -> ColumnElement[Any]:
    """The UTC day of ``column`` as text 'YYYY-MM-DD'."""
    if conn.dialect.name == "sqlite":
        return func.strftime("%Y-%m-%d", column)
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")


def epoch_expr(conn: Connection, column: Any) -> ColumnElement[Any]:
    """Seconds since the epoch of ``column`` (float, microseconds kept)."""
    if conn.dialect.name == "sqlite":
        # 'YYYY-MM-DD HH:MM:SS.ffffff': whole seconds from strftime, the fraction from the text
        whole = cast(func.strftime("%s", column), Float)
        return whole + cast(func.substr(column, 20), Float)
    return cast(func.extract("epoch", column), Float)


def greatest(conn: Connection, *args: Any) -> ColumnElement[Any]:
    """The largest argument (SQLite's multi-argument max, PostgreSQL's GREATEST)."""
    if conn.dialect.name == "sqlite":
        return func.max(*args)
    return func.greatest(*args)


def least(conn: Connection, *args: Any) -> ColumnElement[Any]:
    """The smallest argument (SQLite's multi-argument min, PostgreSQL's LEAST)."""
    if conn.dialect.name == "sqlite":
        return func.min(*args)
    return func.least(*args)
