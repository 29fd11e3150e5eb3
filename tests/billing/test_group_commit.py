"""GroupCommit: concurrent usage posts of one worker share one transaction, each its own answer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing.api.group_commit import GroupCommit
from billing.db import init_db, make_engine
from billing.ingest import validate_usage_batch
from billing.models import UsageEvent, table_of
from billing.schemas import IngestResult, UsageEventIn

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def ev(i: str, customer: str = "acme") -> UsageEventIn:
    good, errors = validate_usage_batch(
        [
            {
                "id": i,
                "source": "gw",
                "time": NOW.isoformat(),
                "model": "m",
                "customer": customer,
                "request_type": "chat",
                "input_tokens": 1,
                "output_tokens": 2,
            }
        ]
    )
    assert not errors
    return good[0]


def engine_at(tmp: str) -> Engine:
    e = make_engine(f"sqlite:///{tmp}/g.db")
    init_db(e)
    return e


def count(e: Engine) -> int:
    with e.connect() as c:
        return int(c.execute(select(func.count()).select_from(table_of(UsageEvent))).scalar_one())


def test_concurrent_posts_share_one_commit_and_one_hook_call(tmp_path: object) -> None:
    e = engine_at(str(tmp_path))
    seen: list[list[str]] = []
    gc = GroupCommit(e, [lambda evs: seen.append([x["id"] for x in evs])], max_events=100)

    async def go() -> list[IngestResult]:
        # posts 0..9, and post 10 re-sends the id of post 3
        posts = [[ev(f"e{i}")] for i in range(10)] + [[ev("e3"), ev("e10")]]
        return await asyncio.gather(*(gc.submit(p) for p in posts))

    results = asyncio.run(go())
    assert gc.groups == 1  # all queued before the first store started
    assert [(r.inserted, r.duplicates) for r in results] == [(1, 0)] * 10 + [(1, 1)]
    assert count(e) == 11
    assert len(seen) == 1 and len(seen[0]) == 12  # the hook sees every post's events once


def test_groups_respect_max_events(tmp_path: object) -> None:
    e = engine_at(str(tmp_path))
    gc = GroupCommit(e, [], max_events=3)

    async def go() -> list[IngestResult]:
        return await asyncio.gather(*(gc.submit([ev(f"x{i}")]) for i in range(7)))

    assert all(r.inserted == 1 for r in asyncio.run(go()))
    assert gc.groups == 3  # 3 + 3 + 1
    assert count(e) == 7


def test_a_failing_post_fails_alone(tmp_path: object) -> None:
    e = engine_at(str(tmp_path))
    gc = GroupCommit(e, [], max_events=100)
    bad = ev("bad")
    bad["input_tokens"] = None  # type: ignore[typeddict-item]  # NOT NULL in the table

    async def go() -> list[IngestResult | BaseException]:
        posts = [[ev("ok1")], [bad], [ev("ok2")]]
        return await asyncio.gather(*(gc.submit(p) for p in posts), return_exceptions=True)

    ok1, err, ok2 = asyncio.run(go())
    assert isinstance(ok1, IngestResult) and ok1.inserted == 1
    assert isinstance(ok2, IngestResult) and ok2.inserted == 1
    assert isinstance(err, Exception)
    assert count(e) == 2
