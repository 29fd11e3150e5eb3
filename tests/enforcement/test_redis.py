"""The Redis backends: Lua mirrors the Python rules; API on Redis; kill propagation via pub/sub."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from billing.enforcement.config import EnforcementConfig
from billing.enforcement.domain import (
    AuthorizeRequest,
    BucketSpec,
    Budget,
    Charge,
    Level,
    Scope,
    budget_verdict,
)
from billing.enforcement.killswitch import kill, revive
from billing.enforcement.local import LocalBuckets
from billing.enforcement.models import KillScope, Period
from billing.enforcement.redis_backend import RedisBuckets, RedisPublisher, RedisReservations
from billing.enforcement.service import Enforcer
from tests.enforcement.conftest import NOW, Clock, authorize, make_enf_api, usage

pytestmark = pytest.mark.redis


def _budget(bid: int = 1, **kw: object) -> Budget:
    base: dict[str, object] = {
        "id": bid,
        "name": f"b{bid}",
        "scope": Scope(customer="acme"),
        "period": Period.daily,
        "limit_micros": 10_000,
        "limit_tokens": None,
    }
    base.update(kw)
    return Budget(**base)  # type: ignore[arg-type]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    spent=st.integers(0, 20_000),
    est=st.integers(0, 20_000),
    limit=st.integers(0, 30_000),
    tok_limit=st.one_of(st.none(), st.integers(0, 500)),
    tokens=st.integers(0, 300),
)
def test_lua_reserve_agrees_with_budget_verdict(
    redis_url: str, spent: int, est: int, limit: int, tok_limit: int | None, tokens: int
) -> None:
    be = RedisReservations(redis_url)
    be.r.flushdb()
    b = _budget(limit_micros=limit, limit_tokens=tok_limit)
    be.settle([Charge("seed", "acme", "m", "chat", spent, tokens, NOW)], [b], NOW)
    lv = be.levels([b], NOW)[1]
    assert lv == Level(spent, tokens, 0, 0)
    got = be.reserve(
        "k",
        [b],
        customer="acme",
        model="m",
        request_type="chat",
        est_micros=est,
        est_tokens=tokens,
        now=NOW,
        ttl_s=60,
    )
    expected = budget_verdict(b, lv, est, tokens)
    assert got.decision.allowed == (expected is None)
    if expected is not None:
        assert got.decision.reason == expected


def test_lua_buckets_agree_with_local(redis_url: str) -> None:
    red, loc = RedisBuckets(redis_url), LocalBuckets()
    spec = BucketSpec("b", capacity=10, rate_per_s=2, cost=1, reason="rate_limited_requests")
    t = NOW
    seq_r, seq_l = [], []
    for i in range(40):
        t += timedelta(milliseconds=100 * (i % 3))
        reserve = (0.0, 0.2, 0.5)[i % 3]
        ok_r, _, retry_r = red.take([spec], reserve, t)
        ok_l, _, retry_l = loc.take([spec], reserve, t)
        seq_r.append(ok_r)
        seq_l.append(ok_l)
        assert (retry_r is None) == (retry_l is None)
        if retry_r is not None and retry_l is not None:
            assert retry_r == pytest.approx(retry_l, abs=1e-3)
    assert seq_r == seq_l
    assert seq_r.count(False) > 0  # the bucket did run dry


def test_lua_take_is_all_or_nothing(redis_url: str) -> None:
    red = RedisBuckets(redis_url)
    a = BucketSpec("a", 5, 1, 1, "rate_limited_requests")
    b = BucketSpec("b", 5, 1, 3, "rate_limited_tokens")
    assert red.take([a, b], 0, NOW)[0] is True  # a: 4, b: 2
    ok, refusing, retry = red.take([a, b], 0, NOW)
    assert (ok, refusing, retry) == (False, b, 1.0)  # b needs 3, has 2, refills 1/s
    assert red.levels(["a", "b"], NOW) == {"a": 4.0, "b": 2.0}  # a untouched


def test_redis_expiry_settle_and_dedupe(redis_url: str) -> None:
    be = RedisReservations(redis_url)
    b = _budget()
    kw = {"customer": "acme", "model": "m", "request_type": "chat", "est_tokens": 10}
    assert be.reserve("r1", [b], est_micros=4000, now=NOW, ttl_s=60, **kw).decision.allowed
    assert be.reserve("r2", [b], est_micros=4000, now=NOW, ttl_s=60, **kw).decision.allowed
    assert not be.reserve("r3", [b], est_micros=4000, now=NOW, ttl_s=60, **kw).decision.allowed
    assert be.in_flight() == 2
    res = be.settle([Charge("r1", "acme", "m", "chat", 3000, 20, NOW)] * 2, [b], NOW)
    assert (res.reconciled, res.duplicates) == (1, 1)
    assert be.levels([b], NOW)[1] == Level(3000, 20, 4000, 10)
    assert be.expire(NOW + timedelta(seconds=61)) == 1
    assert be.levels([b], NOW)[1] == Level(3000, 20, 0, 0)
    # a late usage event for the expired reservation still counts, once
    res = be.settle([Charge("r2", "acme", "m", "chat", 1000, 5, NOW)], [b], NOW)
    assert res.reconciled == 1
    assert be.levels([b], NOW)[1] == Level(4000, 25, 0, 0)
    # next day: spent restarts, the period rolls inside the script
    assert be.levels([b], NOW + timedelta(days=1))[1] == Level()


def test_api_on_redis_backend(engine: Engine, redis_url: str) -> None:
    api, _ = make_enf_api(engine, redis_url=redis_url)
    r = api.client.put(
        "/v1/budgets/acme",
        json={"customer": "acme", "period": "daily", "limit_usd": 0.003},
        headers=api.h("admin"),
    )
    assert r.status_code == 201
    a = authorize(api)
    assert a["allowed"] and authorize(api)["allowed"]
    assert authorize(api)["reason"] == "budget_usd"
    ok = api.client.post(
        "/v1/usage", json=[usage(str(a["reservation_id"]), 0, 500)], headers=api.h("ingest")
    )
    assert ok.status_code == 200
    burn = api.client.get("/v1/budgets/burn", headers=api.h("admin")).json()[0]
    assert (burn["spent_usd"], burn["reserved_usd"]) == (0.00075, 0.0015)
    assert "costctl_reservations_in_flight 1.0" in api.client.get("/metrics").text


def test_kill_propagates_to_every_worker(engine: Engine, redis_url: str) -> None:
    """Three Enforcers (as three workers) listen; a kill from elsewhere reaches all at once."""
    cfg = EnforcementConfig(refresh_s=30)  # the poll cannot be what delivers it
    workers = [Enforcer(engine, cfg, redis_url=redis_url, clock=Clock()) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        req = AuthorizeRequest("acme", "llama-70b", "chat", 10)
        time.sleep(0.2)  # subscribed
        assert all(w.authorize(req, NOW).decision.allowed for w in workers)
        t0 = time.monotonic()
        kill(
            engine,
            scope=KillScope.model,
            target="llama-70b",
            reason="test",
            actor="t",
            now=datetime.now(UTC),
            publisher=RedisPublisher(redis_url, "costctl:enforcement"),
        )
        pending = set(range(3))
        while pending and time.monotonic() - t0 < 5:
            pending = {i for i in pending if workers[i].authorize(req, NOW).decision.allowed}
            time.sleep(0.005)
        assert not pending, f"workers {pending} still allow after 5 s"
        assert time.monotonic() - t0 < 5
        revive(
            engine,
            scope=KillScope.model,
            target="llama-70b",
            reason="ok",
            actor="t",
            now=datetime.now(UTC),
            publisher=RedisPublisher(redis_url, "costctl:enforcement"),
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(
            w.authorize(req, NOW).decision.allowed for w in workers
        ):
            time.sleep(0.005)
        assert all(w.authorize(req, NOW).decision.allowed for w in workers)
    finally:
        for w in workers:
            w.stop()
