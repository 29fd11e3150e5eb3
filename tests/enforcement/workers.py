"""Worker processes for the concurrency tests: hammer one budget through a real backend."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from billing.enforcement.backend import ReservationBackend
from billing.enforcement.domain import Budget, Charge


@dataclass(frozen=True)
class Spec:
    """Where the backend is and what to do."""

    kind: str  # "sql" or "redis"
    url: str
    schema: str | None
    budget: Budget
    est_micros: int
    iterations: int
    seed: int


def backend(spec: Spec) -> ReservationBackend:
    """A fresh backend in this process (its own engine / Redis connection)."""
    if spec.kind == "redis":
        from billing.enforcement.redis_backend import RedisReservations

        return RedisReservations(spec.url)
    from billing.db import make_engine
    from billing.enforcement.sql_backend import SqlReservations

    return SqlReservations(make_engine(spec.url, schema=spec.schema))


def hammer(spec: Spec, out: Any) -> None:
    """Reserve, then settle (actual <= estimate), release, or abandon; report counts."""
    rng = random.Random(spec.seed)
    be = backend(spec)
    allowed = denied = settled_micros = 0
    for _ in range(spec.iterations):
        now = datetime.now(UTC)
        key = uuid.uuid4().hex
        got = be.reserve(
            key,
            [spec.budget],
            customer="acme",
            model="llama",
            request_type="chat",
            est_micros=spec.est_micros,
            est_tokens=100,
            now=now,
            ttl_s=300,
        )
        if not got.decision.allowed:
            denied += 1
            continue
        allowed += 1
        roll = rng.random()
        if roll < 0.7:
            actual = rng.randint(spec.est_micros // 2, spec.est_micros)
            be.settle([Charge(key, "acme", "llama", "chat", actual, 100, now)], [spec.budget], now)
            settled_micros += actual
        elif roll < 0.9:
            be.release(key, now)
        # else: abandoned, held until it expires
    out.put({"allowed": allowed, "denied": denied, "settled_micros": settled_micros})


@dataclass(frozen=True)
class OutageSpec:
    """A worker of the Redis kill/restart test: the database, Redis and the one budget."""

    db_url: str
    schema: str | None
    redis_url: str
    budget: Budget
    seed: int


def through_outage(spec: OutageSpec, go: Any, stop: Any, denied_total: Any, out: Any) -> None:
    """Reserve, store the usage event, settle; through the production failover backends.

    Starts when ``go`` is set, runs until ``stop`` is set; counts denials in ``denied_total``
    (shared). Reports counts, the fallbacks this worker saw and the rebuilds it did.
    """
    import math

    from sqlalchemy import insert

    from billing.db import make_engine
    from billing.enforcement.config import EnforcementConfig
    from billing.enforcement.failover import EnforcementUnavailable
    from billing.enforcement.service import build_backends
    from billing.models import UsageEvent, table_of

    rng = random.Random(spec.seed)
    engine = make_engine(spec.db_url, schema=spec.schema)
    config = EnforcementConfig(redis_retry_s=0.05)
    res, _, _, health = build_backends(engine, config, spec.redis_url, lambda: [spec.budget])
    assert health is not None
    usage = table_of(UsageEvent)
    allowed = denied = 0
    go.wait()
    while not stop.is_set():
        now = datetime.now(UTC)
        key = uuid.uuid4().hex
        try:
            got = res.reserve(
                key,
                [spec.budget],
                customer="acme",
                model="llama",
                request_type="chat",
                est_micros=1500,
                est_tokens=1000,
                now=now,
                ttl_s=300,
            )
            ok = got.decision.allowed
        except EnforcementUnavailable:  # what the Enforcer answers as a denial
            ok = False
        if not ok:
            denied += 1
            with denied_total.get_lock():
                denied_total.value += 1
            stop.wait(0.005)
            continue
        allowed += 1
        tokens = rng.randrange(500, 1001, 2)  # even: exactly 1.5 µUSD per token
        with engine.begin() as conn:
            conn.execute(
                insert(usage).values(
                    source="gw",
                    event_id=key,
                    ts=now,
                    model="llama",
                    customer="acme",
                    request_type="chat",
                    input_tokens=0,
                    output_tokens=tokens,
                )
            )
        micros = math.ceil(tokens * 1.5)
        res.settle([Charge(key, "acme", "llama", "chat", micros, tokens, now)], [spec.budget], now)
    out.put(
        {
            "allowed": allowed,
            "denied": denied,
            "fallbacks": health.fallbacks,
            "rebuilds": health.primary.rebuilds,
        }
    )
    engine.dispose()
