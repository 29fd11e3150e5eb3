"""Touched-hours bookkeeping: which hours' inputs changed since the rollup computed them.

Every writer of rollup inputs (usage events, GPU and process samples, allocations, prices)
marks the hours its rows touch in the same transaction as the rows. A mark is an upsert of
(hour, marked_at): a second write to a marked hour moves ``marked_at`` on. The rollup job
reads the marks, recomputes those hours, then deletes each mark only where ``marked_at`` is
still what it read, so a write that lands while the rollup runs keeps its mark for the next run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from billing.models import DirtyHour, table_of
from billing.windows import floor_hour

HOUR = timedelta(hours=1)
_T = table_of(DirtyHour)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _as_hour(value: Any) -> datetime:
    """The UTC hour of an aware datetime or of SQLite's UTC text ('YYYY-MM-DD HH:...')."""
    if isinstance(value, str):
        return datetime.fromisoformat(value[:13] + ":00:00+00:00")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return floor_hour(value.astimezone(UTC))


def mark_hours(conn: Connection, hours: Iterable[datetime], *, marked_at: datetime) -> int:
    """Upsert a mark for each hour (deduplicated, in ascending order); returns how many."""
    rows = [{"hour": h, "marked_at": marked_at} for h in sorted(set(hours))]
    if not rows:
        return 0
    ins = sqlite_insert(_T) if conn.dialect.name == "sqlite" else pg_insert(_T)
    stmt = ins.on_conflict_do_update(
        index_elements=[_T.c.hour], set_={"marked_at": ins.excluded.marked_at}
    )
    conn.execute(stmt, rows)
    return len(rows)


def mark_dirty_hours(
    conn: Connection, start: datetime, end: datetime, *, marked_at: datetime | None = None
) -> int:
    """Mark every hour that [start, end) overlaps (at least ``start``'s hour).

    For an allocation: [start, end), or [start, now) while it is open; when an open one is
    closed, [end, now) (the hours it no longer holds).
    """
    first, hours = _as_hour(start), list[datetime]()
    while first < end or not hours:
        hours.append(first)
        first += HOUR
    return mark_hours(conn, hours, marked_at=marked_at or datetime.now(UTC))


def hours_of_instants(values: Iterable[Any]) -> set[datetime]:
    """The hours of instants (aware datetimes or SQLite UTC text)."""
    texts: set[str] = set()
    epoch_hours: set[int] = set()
    for v in values:
        if isinstance(v, str):
            texts.add(v[:13])
        else:
            epoch_hours.add(int((v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp()) // 3600)
    out = {datetime.fromisoformat(t + ":00:00+00:00") for t in texts}
    return out | {_EPOCH + h * HOUR for h in epoch_hours}


def hours_of_intervals(starts: Sequence[datetime], seconds: Sequence[float]) -> set[datetime]:
    """The hours that the intervals [start, start + seconds) overlap (seconds <= 3600)."""
    out = set()
    for ts, s in zip(starts, seconds, strict=True):
        first = _as_hour(ts)
        out.add(first)
        if ts + timedelta(seconds=s) > first + HOUR:
            out.add(first + HOUR)
    return out


def read_marks(conn: Connection) -> dict[datetime, datetime]:
    """Every mark, hour -> marked_at (aware UTC)."""
    return {h: m for h, m in conn.execute(select(_T.c.hour, _T.c.marked_at)).all()}


def clear_marks(conn: Connection, marks: dict[datetime, datetime]) -> int:
    """Delete the marks whose marked_at is still the value read; returns how many went."""
    if not marks:
        return 0
    gone = 0
    items = sorted(marks.items())
    for i in range(0, len(items), 500):
        chunk = items[i : i + 500]
        cond = or_(*(and_(_T.c.hour == h, _T.c.marked_at == m) for h, m in chunk))
        gone += int(conn.execute(delete(_T).where(cond)).rowcount or 0)
    return gone
