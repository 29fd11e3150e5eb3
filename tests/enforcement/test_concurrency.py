"""Several worker processes hammer one hard budget: spent + reserved never passes the limit.

The check and the add happen in one atomic step (PostgreSQL FOR UPDATE, SQLite BEGIN
IMMEDIATE, Redis Lua). A monitor samples the counters while the workers run; the assertion
is spent + reserved <= limit + one reservation at every sample and at the end, and the
budget must actually fill up (the test would pass trivially if everything were denied).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from billing.enforcement.backend import ReservationBackend
from billing.enforcement.domain import Budget, Scope
from billing.enforcement.models import Period
from billing.enforcement.redis_backend import RedisReservations
from billing.enforcement.sql_backend import SqlReservations
from tests.enforcement.workers import Spec, hammer

WORKERS = 4
EST = 1_000  # µUSD per reservation
LIMIT = 40 * EST
BUDGET = Budget(1, "hard", Scope(customer="acme"), Period.daily, LIMIT, None)


def _run(kind: str, url: str, schema: str | None, be: ReservationBackend) -> None:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=hammer,
            args=(Spec(kind, url, schema, BUDGET, EST, iterations=120, seed=i), out),
        )
        for i in range(WORKERS)
    ]
    peaks: list[int] = []
    stop = threading.Event()

    def monitor() -> None:
        while not stop.is_set():
            lv = be.levels([BUDGET], datetime.now(UTC))[1]
            peaks.append(lv.spent_micros + lv.reserved_micros)
            time.sleep(0.005)

    mon = threading.Thread(target=monitor)
    for p in procs:
        p.start()
    mon.start()
    results = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    stop.set()
    mon.join()
    final = be.levels([BUDGET], datetime.now(UTC))[1]
    allowed = sum(r["allowed"] for r in results)
    settled = sum(r["settled_micros"] for r in results)
    assert sum(r["denied"] for r in results) > 0, "the budget never filled: test is too weak"
    assert allowed >= LIMIT // EST
    assert final.spent_micros == settled  # counters equal the sum of what was settled
    assert final.spent_micros + final.reserved_micros <= LIMIT + EST
    assert max(peaks) <= LIMIT + EST, f"overshoot: peak {max(peaks)} > {LIMIT} + {EST}"
    assert len(peaks) > 10


@pytest.mark.slow
def test_sql_backend_across_processes(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    schema = None
    if engine.dialect.name == "postgresql":
        with engine.connect() as c:
            schema = c.execute(text("SELECT current_schema()")).scalar_one()
    _run("sql", url, schema, SqlReservations(engine))


@pytest.mark.slow
@pytest.mark.redis
def test_redis_backend_across_processes(redis_url: str) -> None:
    _run("redis", redis_url, None, RedisReservations(redis_url))
