"""Redis is a cache: killed, flushed or restarted, the budgets hold and authorize never 5xxs.

Each test runs its own redis-server (tests/utils/redis_server.py) and kills or flushes it.
"""

from __future__ import annotations

import time

import pytest
import redis
from sqlalchemy.engine import Engine

from billing.enforcement.config import EnforcementConfig
from tests.enforcement.conftest import NOW, make_enf_api, usage
from tests.enforcement.test_api import _enf, _put
from tests.utils.api import Api
from tests.utils.redis_server import RedisServer

EST = 1500  # µUSD: 1000 estimated tokens, all at the output price (1.5 µUSD/token)
BODY = {"customer": "acme", "model": "llama-70b", "request_type": "chat", "estimated_tokens": 1000}


def _auth(api: Api, rid: str) -> dict[str, object]:
    r = api.client.post("/v1/authorize", json={**BODY, "request_id": rid}, headers=api.h("ingest"))
    assert r.status_code == 200, (r.status_code, r.text)  # never a 5xx
    out: dict[str, object] = r.json()
    return out


def _used(api: Api, *rids: str) -> None:
    ev = [usage(rid, 0, 1000) for rid in rids]  # 1000 output tokens = 1500 µUSD each
    r = api.client.post("/v1/usage", json=ev, headers=api.h("ingest"))
    assert r.status_code == 200, r.text


def _ready(api: Api) -> str:
    r = api.client.get("/readyz")
    assert r.status_code == 200, r.text
    return str(r.json()["enforcement"])


def _metric_mode(api: Api) -> str:
    text = api.client.get("/metrics").text
    on = [
        line.split('mode="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("costctl_enforcement_backend{") and line.endswith(" 1.0")
    ]
    assert len(on) == 1, text
    return on[0]


@pytest.mark.slow
def test_sql_fallback_keeps_the_budget_and_redis_is_rebuilt_when_back(
    engine: Engine, redis_server: RedisServer
) -> None:
    cfg = EnforcementConfig(redis_retry_s=0.05)
    api, _ = make_enf_api(engine, redis_url=redis_server.url, config=cfg)
    _put(api, "acme", customer="acme", period="daily", limit_usd=0.01)  # 10_000 µUSD
    assert _auth(api, "r0")["allowed"] is True
    _used(api, "r0")  # spent 1500 (in the database and in Redis)
    assert _ready(api) == "redis"

    redis_server.kill()
    got = [_auth(api, f"f{i}") for i in range(8)]
    # the SQL counters were rebuilt from the database: 10_000 - 1500 leaves room for 5
    assert [g["allowed"] for g in got] == [True] * 5 + [False] * 3
    assert {g["reason"] for g in got[5:]} == {"budget_usd"}
    assert _ready(api) == "sql-fallback"
    assert _metric_mode(api) == "sql-fallback"
    _used(api, "f0", "f1")  # settled in SQL while Redis is down

    redis_server.start()  # empty: no epoch, no counters
    time.sleep(0.1)  # past redis_retry_s
    d = _auth(api, "after")
    assert _ready(api) == "redis"
    assert _metric_mode(api) == "redis"
    # rebuilt: spent 3 x 1500 from the usage events, 3 x 1500 still held (f2..f4) -> 9000
    enf = _enf(api)
    lv = enf.reservations.levels(enf.policy().budgets, NOW)[enf.policy().budgets[0].id]
    assert (lv.spent_micros, lv.reserved_micros) == (3 * EST, 3 * EST)
    assert (d["allowed"], d["reason"]) == (False, "budget_usd")
    _used(api, "f2")  # an imported reservation settles in Redis: reserved -> spent
    lv = enf.reservations.levels(enf.policy().budgets, NOW)[enf.policy().budgets[0].id]
    assert (lv.spent_micros, lv.reserved_micros) == (4 * EST, 2 * EST)
    api.client.close()


@pytest.mark.slow
def test_deny_mode_answers_enforcement_unavailable(
    engine: Engine, redis_server: RedisServer
) -> None:
    cfg = EnforcementConfig(redis_retry_s=0.05, redis_unavailable="deny")
    api, _ = make_enf_api(engine, redis_url=redis_server.url, config=cfg)
    _put(api, "acme", customer="acme", period="daily", limit_usd=0.01)
    assert _auth(api, "r0")["allowed"] is True
    redis_server.kill()
    for i in range(5):
        d = _auth(api, f"d{i}")
        assert (d["allowed"], d["reason"]) == (False, "enforcement-unavailable")
    _used(api, "r0")  # usage is still accepted (the rebuild counts it)
    assert _ready(api) == "deny"
    assert _metric_mode(api) == "deny"
    redis_server.start()
    time.sleep(0.1)
    assert _auth(api, "back")["allowed"] is True
    assert _ready(api) == "redis"
    enf = _enf(api)
    b = enf.policy().budgets[0]
    lv = enf.reservations.levels([b], NOW)[b.id]
    assert (lv.spent_micros, lv.reserved_micros) == (EST, EST)
    api.client.close()


@pytest.mark.slow
def test_flush_rebuilds_the_counters_once_from_the_database(
    engine: Engine, redis_server: RedisServer
) -> None:
    api, _ = make_enf_api(engine, redis_url=redis_server.url)
    _put(api, "acme", customer="acme", period="daily", limit_usd=0.01)
    for i in range(3):
        assert _auth(api, f"r{i}")["allowed"] is True
    _used(api, "r0", "r1")
    redis.Redis.from_url(redis_server.url).flushall()
    enf = _enf(api)
    b = enf.policy().budgets[0]
    before = enf.reservations.redis.rebuilds  # type: ignore[attr-defined]
    assert _auth(api, "x")["allowed"] is True  # rebuilds first: 2 spent, then reserves 1
    assert enf.reservations.redis.rebuilds == before + 1  # type: ignore[attr-defined]
    lv = enf.reservations.levels([b], NOW)[b.id]
    # r2's Redis reservation was lost with the flush (it is the in-flight overshoot bound)
    assert (lv.spent_micros, lv.reserved_micros) == (2 * EST, EST)
    _used(api, "r1")  # a re-sent event is not counted twice (dated before the rebuild)
    lv = enf.reservations.levels([b], NOW)[b.id]
    assert lv.spent_micros == 2 * EST
    api.client.close()
