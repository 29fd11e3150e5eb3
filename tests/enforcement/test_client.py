"""costctl.client against the real ASGI app: authorize/settle, batcher flush, retries, dedupe."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing.models import UsageEvent, table_of
from costctl.client import AsyncCostctl, Costctl, RetryPolicy
from tests.enforcement.conftest import make_enf_api, usage

FAST = RetryPolicy(attempts=4, base_s=0.001, max_s=0.01)


def stored(engine: Engine) -> dict[str, int]:
    """event id -> rows stored with it."""
    u = table_of(UsageEvent).c
    with engine.connect() as c:
        rows = c.execute(select(u.event_id, func.count()).group_by(u.event_id)).all()
    return {str(i): int(n) for i, n in rows}


class Flaky(httpx.BaseTransport):
    """Forwards to the app; the tries numbered in ``drop`` fail before reaching it (connection
    error), those in ``lose`` reach it and then answer 503 (the ack is lost)."""

    def __init__(self, inner: httpx.BaseTransport, drop: set[int], lose: set[int]) -> None:
        self.inner, self.drop, self.lose = inner, drop, lose
        self.calls = 0
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls in self.drop:
            raise httpx.ConnectError("refused", request=request)
        self.bodies.append(request.read())
        r = self.inner.handle_request(request)
        if self.calls in self.lose:
            r.read()
            return httpx.Response(503, request=request)
        return r


class AsyncFlaky(httpx.AsyncBaseTransport):
    """Flaky over httpx.ASGITransport (the app in this event loop)."""

    def __init__(self, app: Any, lose: set[int]) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.lose = lose
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        n = self.calls
        r = await self.inner.handle_async_request(request)
        if n in self.lose:
            await r.aread()
            return httpx.Response(503, request=request)
        return r


def sync_client(api: Any, who: str, drop: set[int], lose: set[int]) -> tuple[Costctl, Flaky]:
    t = Flaky(api.client._transport, drop, lose)
    return Costctl("http://testserver", api.keys[who], retry=FAST, transport=t), t


def test_authorize_then_settle_holds_and_settles_one_reservation(engine: Engine) -> None:
    api, _ = make_enf_api(engine)
    api.client.put(
        "/v1/budgets/acme", json={"customer": "acme", "limit_usd": 100}, headers=api.h("admin")
    )
    with sync_client(api, "ingest", set(), set())[0] as c:
        got = c.authorize("acme", "llama-70b", 1000)
        assert got["allowed"] is True
        rid = got["reservation_id"]
        out = c.settle(rid, customer="acme", model="llama-70b", input_tokens=10, output_tokens=20)
        assert (out["inserted"], out["duplicates"]) == (1, 0)
        again = c.settle(rid, customer="acme", model="llama-70b", input_tokens=10, output_tokens=20)
        assert (again["inserted"], again["duplicates"]) == (0, 1)
        assert c.release(rid) is False  # settled: nothing held any more
    assert stored(engine) == {rid: 1}


def test_batcher_flushes_by_count_and_on_close(engine: Engine) -> None:
    api, _ = make_enf_api(engine)
    c, t = sync_client(api, "ingest", set(), set())
    b = c.usage_batcher(max_events=3, max_age_s=60)
    for i in range(7):
        b.add(usage(f"e{i}", 1, 2))
    b.flush()  # two full batches went by count; flush sends the 7th
    assert t.calls == 3
    b.close()
    assert (b.stats.posts, b.stats.inserted, b.stats.duplicates) == (3, 7, 0)
    assert stored(engine) == {f"e{i}": 1 for i in range(7)}


def test_batcher_flushes_by_age(engine: Engine) -> None:
    api, _ = make_enf_api(engine)
    c, t = sync_client(api, "ingest", set(), set())
    b = c.usage_batcher(max_events=1000, max_age_s=0.05)
    b.add(usage("only", 1, 2))
    for _ in range(400):  # bounded wait for the sender thread: no timing assertion
        if stored(engine):
            break
        asyncio.run(asyncio.sleep(0.01))
    assert stored(engine) == {"only": 1}
    assert t.calls == 1
    b.close()


def test_retry_after_connection_error_and_lost_ack_counts_each_event_once(
    engine: Engine,
) -> None:
    api, _ = make_enf_api(engine)
    # try 1: refused; try 2: stored but answered 503; try 3: the same ids again -> duplicates
    c, t = sync_client(api, "ingest", drop={1}, lose={2})
    b = c.usage_batcher(max_events=4, max_age_s=60)
    for i in range(4):
        b.add(usage(f"r{i}", 5, 5))
    b.close()
    assert t.calls == 3
    assert t.bodies[0] == t.bodies[1]  # the re-send carries the same event ids
    assert (b.stats.retries, b.stats.inserted, b.stats.duplicates) == (2, 0, 4)
    assert stored(engine) == {f"r{i}": 1 for i in range(4)}


def test_batcher_reports_events_it_could_not_deliver(engine: Engine) -> None:
    api, _ = make_enf_api(engine)
    c, _t = sync_client(api, "read", set(), set())  # a read key may not ingest: 403
    b = c.usage_batcher(max_events=2, max_age_s=60)
    b.add(usage("x0", 1, 1))
    b.add(usage("x1", 1, 1))
    with pytest.raises(Exception, match="2 usage events not delivered") as info:
        b.close()
    assert [e["id"] for e in info.value.events] == ["x0", "x1"]  # type: ignore[attr-defined]
    assert stored(engine) == {}


def test_async_batcher_retries_and_groups_concurrent_posts(engine: Engine) -> None:
    api, _ = make_enf_api(engine)
    app = api.client.app

    async def go() -> tuple[Any, Any, int]:
        t = AsyncFlaky(app, lose={1})
        async with AsyncCostctl("http://t", api.keys["ingest"], retry=FAST, transport=t) as c:
            b = c.usage_batcher(max_events=5, max_age_s=0.01, concurrency=2)
            for i in range(23):
                await b.add(usage(f"a{i}", 1, 1))
            await b.close()
            # single-event settles posted at once share the worker's group commit
            outs = await asyncio.gather(
                *(
                    c.settle(f"s{i}", customer="acme", model="m", input_tokens=1, output_tokens=1)
                    for i in range(20)
                )
            )
        return b.stats, outs, t.calls

    stats, outs, calls = asyncio.run(go())
    assert stats.retries == 1 and stats.inserted + stats.duplicates == 23
    assert stats.duplicates == 5  # the batch whose ack was lost, re-sent
    assert all((o["inserted"], o["duplicates"]) == (1, 0) for o in outs)
    assert calls == 5 + 1 + 20
    ids = stored(engine)
    assert ids == {**{f"a{i}": 1 for i in range(23)}, **{f"s{i}": 1 for i in range(20)}}
