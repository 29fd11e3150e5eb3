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
