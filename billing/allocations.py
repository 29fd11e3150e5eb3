"""The allocation store edge: observed and planned holdings of devices, idempotent per key.

Natural key (source, device_uuid, namespace, pod, container, start). A re-post of a key sets
``end`` when the stored row is still open and the post carries one; anything else about a
stored row is left as it is (the first writer of a key owns it). One transaction per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Connection, Engine

from billing.dirty import mark_dirty_hours
from billing.models import Allocation, table_of
from billing.schemas import AllocationIn, AllocationPublic, AllocationResult

KEY = ("source", "device_uuid", "namespace", "pod", "container", "start")
_T = table_of(Allocation)


def _row(item: AllocationIn) -> dict[str, Any]:
    return item.model_dump()


def _upsert(conn: Connection, item: AllocationIn, now: datetime) -> str:
    """'inserted', 'updated' or 'unchanged' for one item (inside the batch's transaction).

    Marks the hours whose attribution the change moves (``billing.dirty``): a new holding's
    [start, end or now), a closed one's [end, now) — so a holding that arrives late (an
    agent draining its spool after an outage) is re-attributed however old its hours are.
    """
    row = _row(item)
    where = and_(*(_T.c[k] == row[k] for k in KEY))
    found = conn.execute(select(_T.c.id, _T.c.end).where(where)).first()
    if found is None:
        conn.execute(_T.insert().values(**row))
        mark_dirty_hours(conn, item.start, max(item.end or now, item.start), marked_at=now)
        return "inserted"
    if found.end is None and item.end is not None:
        conn.execute(update(_T).where(_T.c.id == found.id).values(end=item.end))
        mark_dirty_hours(conn, item.end, max(now, item.end), marked_at=now)
        return "updated"
    return "unchanged"


def ingest_allocations(
    engine: Engine, items: Sequence[AllocationIn], *, now: datetime | None = None
) -> AllocationResult:
    """Store a batch of allocations in one transaction (re-sends are no-ops); ``now`` (the
    edge's clock by default) bounds the hours an open holding marks for the rollup."""
    at = now or datetime.now(UTC)
    counts = {"inserted": 0, "updated": 0, "unchanged": 0}
    with engine.begin() as conn:
        for item in items:
            counts[_upsert(conn, item, at)] += 1
    return AllocationResult(received=len(items), **counts)


def query_allocations(
    engine: Engine,
    *,
    node: str | None = None,
    model: str | None = None,
    device_uuid: str | None = None,
    source: str | None = None,
    open_only: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
) -> list[AllocationPublic]:
    """Allocations matching every given filter, oldest start first.

    ``since``/``until``: rows overlapping [since, until) (an open row overlaps any later time).
    """
    q = select(_T)
    for col, value in (
        ("node", node),
        ("model", model),
        ("device_uuid", device_uuid),
        ("source", source),
    ):
        if value is not None:
            q = q.where(_T.c[col] == value)
    if open_only:
        q = q.where(_T.c.end.is_(None))
    if since is not None:
        q = q.where((_T.c.end.is_(None)) | (_T.c.end > since))
    if until is not None:
        q = q.where(_T.c.start < until)
    q = q.order_by(_T.c.start, _T.c.id).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    return [AllocationPublic.model_validate(dict(r)) for r in rows]
