"""Redis down: authorize falls back to the SQL reservations (or denies), and comes back.

``RedisHealth`` runs every Redis call of the enforcement backends: on a Redis error it marks
Redis down and answers from the fallback; while down it probes Redis at most every
``retry_s`` and, when it answers, rebuilds the Redis counters from the database (once per
outage across workers, see RedisReservations.rebuild) before using it again. Modes
(``enforcement.redis_unavailable``): ``sql`` (the SQL backend, its counters first rebuilt
from the database) or ``deny`` (authorize answers ``enforcement-unavailable``; usage is
counted by the rebuild when Redis is back). The mode in force is ``RedisHealth.state()``
(``redis``, ``sql-fallback`` or ``deny``), shown by /readyz and the metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Literal, TypeVar

import redis

from billing.enforcement.domain import (
    BucketSpec,
    Budget,
    Charge,
    Level,
    Reserved,
    SettleResult,
)
from billing.enforcement.local import LocalBuckets
from billing.enforcement.redis_backend import RedisBuckets, RedisReservations
from billing.enforcement.sql_backend import FENCE, SqlReservations

log = logging.getLogger(__name__)
T = TypeVar("T")
UNAVAILABLE = "enforcement-unavailable"


class EnforcementUnavailable(Exception):
    """Redis is down and the mode is ``deny``: the caller answers ``enforcement-unavailable``."""


class RedisHealth:
    """Whether Redis answers; what to do while it does not (thread-safe)."""

    def __init__(
        self,
        primary: RedisReservations,
        *,
        mode: Literal["sql", "deny"],
        retry_s: float,
        on_fallback: Callable[[datetime], None],
    ) -> None:
        self.primary, self.mode, self.retry_s = primary, mode, retry_s
        self.on_fallback = on_fallback
        self.up = True
        self.down_since: datetime | None = None
        self.fallbacks = 0  # outages this process saw
        self._probed = 0.0
        self._lock = threading.Lock()

    def state(self) -> str:
        """``redis``, ``sql-fallback`` or ``deny``."""
        if self.up:
            return "redis"
        return "sql-fallback" if self.mode == "sql" else "deny"

    def refuses(self, now: datetime) -> bool:
        """True while Redis is down (after a probe) and the mode is ``deny``."""
        return self.mode == "deny" and not self._usable(now)

    def call(self, primary: Callable[[], T], fallback: Callable[[], T], now: datetime | None) -> T:
        """``primary()`` while Redis answers, else ``fallback()`` (no probe without ``now``)."""
        if not self._usable(now):
            return fallback()
        try:
            return primary()
        except redis.RedisError as exc:
            self._down(now, exc)
            return fallback()

    def _usable(self, now: datetime | None, *, force: bool = False) -> bool:
        if self.up or now is None:
            return self.up
        with self._lock:
            if self.up:
                return True
            if not force and time.monotonic() - self._probed < self.retry_s:
                return False
            self._probed = time.monotonic()
            try:
                self.primary.r.ping()
                self.primary.rebuild(now, stale_before=self.down_since)
            except redis.RedisError:
                return False
            log.warning("Redis answers again: enforcement back on Redis")
            self.up, self.down_since = True, None
            return True

    def probe_now(self, now: datetime) -> bool:
        """Probe Redis now (ignoring ``retry_s``); True if it is used again."""
        return self._usable(now, force=True)

    def _down(self, now: datetime | None, exc: Exception) -> None:
        with self._lock:
            if not self.up:
                return
            self.up, self.down_since = False, now or datetime.now(UTC)
            self._probed = time.monotonic()
            self.fallbacks += 1
        log.warning("Redis unreachable (%s): enforcement falls back to %s", exc, self.state())
        if self.mode == "sql":
            try:
                self.on_fallback(self.down_since or datetime.now(UTC))
            except Exception:  # the SQL counters stay as they were; authorize still answers
                log.exception("rebuilding the SQL budget counters from the database failed")


class FailoverReservations:
    """ReservationBackend: Redis while it answers, else SQL (or ``deny``)."""

    def __init__(self, health: RedisHealth, sql: SqlReservations) -> None:
        self.health, self.redis, self.sql = health, health.primary, sql

    @property
    def name(self) -> str:
        """``redis`` while Redis answers, else ``sql``."""
        return "redis" if self.health.up else "sql"

    def _deny(self) -> Reserved:
        raise EnforcementUnavailable(UNAVAILABLE)

    def reserve(
        self,
        key: str,
        budgets: Sequence[Budget],
        *,
        customer: str,
        model: str,
        request_type: str,
        est_micros: int,
        est_tokens: int,
        now: datetime,
        ttl_s: float,
    ) -> Reserved:
        """See ReservationBackend.reserve."""
        kw = {
            "customer": customer,
            "model": model,
            "request_type": request_type,
            "est_micros": est_micros,
            "est_tokens": est_tokens,
            "now": now,
            "ttl_s": ttl_s,
        }

        def on_sql() -> Reserved:
            got = self.sql.reserve(key, budgets, **kw)  # type: ignore[arg-type]
            fenced = any(
                lv.reserved_micros >= FENCE // 2 or lv.reserved_tokens >= FENCE // 2
                for _, lv in got.levels
            )
            if not fenced:
                return got
            # another worker brought Redis back and fenced the SQL counters
            if self.health.probe_now(now):
                return self.redis.reserve(key, budgets, **kw)  # type: ignore[arg-type]
            raise EnforcementUnavailable(UNAVAILABLE)

        return self.health.call(
            lambda: self.redis.reserve(key, budgets, **kw),  # type: ignore[arg-type]
            on_sql if self.health.mode == "sql" else self._deny,
            now,
        )

    def release(self, key: str, now: datetime) -> bool:
        """See ReservationBackend.release (the SQL side too: a fallback reservation)."""
        done = self.health.call(lambda: self.redis.release(key, now), lambda: False, now)
        return self.sql.release(key, now) or done

    def settle(
        self, charges: Sequence[Charge], budgets: Sequence[Budget], now: datetime
    ) -> SettleResult:
        """See ReservationBackend.settle (``deny`` mode while down: the rebuild counts it)."""
        return self.health.call(
            lambda: self.redis.settle(charges, budgets, now),
            (lambda: self.sql.settle(charges, budgets, now))
            if self.health.mode == "sql"
            else SettleResult,
            now,
        )

    def adjust(self, budget: Budget, micros: int, tokens: int, now: datetime) -> None:
        """See ReservationBackend.adjust (the SQL counters while Redis is down in ``sql`` mode)."""
        self.health.call(
            lambda: self.redis.adjust(budget, micros, tokens, now),
            (lambda: self.sql.adjust(budget, micros, tokens, now))
            if self.health.mode == "sql"
            else (lambda: None),
            now,
        )

    def expire(self, now: datetime) -> int:
        """See ReservationBackend.expire: Redis's and the SQL fallback's reservations."""
        return self.health.call(lambda: self.redis.expire(now), lambda: 0, now) + self.sql.expire(
            now
        )

    def levels(self, budgets: Sequence[Budget], now: datetime) -> dict[int, Level]:
        """See ReservationBackend.levels."""
        return self.health.call(
            lambda: self.redis.levels(budgets, now), lambda: self.sql.levels(budgets, now), now
        )

    def in_flight(self) -> int:
        """See ReservationBackend.in_flight."""
        return self.health.call(self.redis.in_flight, self.sql.in_flight, None)

    def forget(self, budget_id: int) -> None:
        """See ReservationBackend.forget (both sides)."""
        self.sql.forget(budget_id)
        self.health.call(lambda: self.redis.forget(budget_id), lambda: None, None)


class FailoverBuckets:
    """BucketBackend: Redis while it answers, else in-process buckets (or ``deny``)."""

    def __init__(self, health: RedisHealth, primary: RedisBuckets) -> None:
        self.health, self.primary, self.local = health, primary, LocalBuckets()

    @property
    def name(self) -> str:
        """``redis`` while Redis answers, else ``local``."""
        return "redis" if self.health.up else self.local.name

    def take(
        self, specs: Sequence[BucketSpec], reserve: float, now: datetime
    ) -> tuple[bool, BucketSpec | None, float | None]:
        """See BucketBackend.take."""

        def fallback() -> tuple[bool, BucketSpec | None, float | None]:
            if self.health.mode == "deny":
                raise EnforcementUnavailable(UNAVAILABLE)
            return self.local.take(specs, reserve, now)

        return self.health.call(lambda: self.primary.take(specs, reserve, now), fallback, now)

    def levels(self, keys: Sequence[str], now: datetime) -> dict[str, float]:
        """See BucketBackend.levels."""
        return self.health.call(
            lambda: self.primary.levels(keys, now), lambda: self.local.levels(keys, now), now
        )
