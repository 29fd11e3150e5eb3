"""The enforcement edge: authorize, reconcile, kill/revive, wired to store, backends and clock.

One ``Enforcer`` per API worker. It caches the policy (budgets, rate rules, kill-switches) and
refreshes it on every change notice (Redis pub/sub) and at least every ``refresh_s`` (the
database is the source of truth). Authorize runs the one rule, domain.authorize_rule
(kill-switch -> rate limits with load shedding -> budget reservation -> throttle of 'throttle'
budgets past their soft line), with the bucket and reservation backends as its atomic steps.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from billing.enforcement.alerts import raise_alerts
from billing.enforcement.backend import (
    BucketBackend,
    DeploymentScaler,
    Publisher,
    ReservationBackend,
)
from billing.enforcement.config import EnforcementConfig
from billing.enforcement.domain import (
    AuthorizeRequest,
    BucketSpec,
    Budget,
    Charge,
    Decision,
    Reserved,
    SettleResult,
    actual_micros,
    authorize_rule,
)
from billing.enforcement.failover import (
    UNAVAILABLE,
    EnforcementUnavailable,
    FailoverBuckets,
    FailoverReservations,
    RedisHealth,
)
from billing.enforcement.killswitch import CHANNEL, kill
from billing.enforcement.local import LocalBuckets
from billing.enforcement.metrics import EnforcementMetrics
from billing.enforcement.rebuild import RebuildState, rebuild_state
from billing.enforcement.redis_backend import (
    Listener,
    RedisBuckets,
    RedisPublisher,
    RedisReservations,
)
from billing.enforcement.sql_backend import SqlReservations
from billing.enforcement.store import Policy, load_policy
from billing.schemas import UsageEventIn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Authorized:
    """A decision plus the reservation it made."""

    decision: Decision
    key: str | None = None
    reserved_micros: int = 0
    expires_at: datetime | None = None


def build_backends(
    engine: Engine,
    config: EnforcementConfig,
    redis_url: str | None,
    budgets: Callable[[], Sequence[Budget]] = tuple,
) -> tuple[ReservationBackend, BucketBackend, Publisher | None, RedisHealth | None]:
    """The backends ``config.backend`` asks for (auto: Redis when a URL is given).

    With Redis, reservations and buckets fail over to SQL / in-process buckets while Redis is
    unreachable (``RedisHealth``); ``budgets`` names every budget a counter rebuild loads.
    """
    use_redis = config.backend == "redis" or (config.backend == "auto" and redis_url)
    if use_redis:
        if not redis_url:
            raise ValueError("enforcement.backend=redis needs a redis_url")
        sql = SqlReservations(engine)

        def from_db(now: datetime) -> RebuildState:
            return rebuild_state(engine, config, budgets(), now)

        def redis_from_db(now: datetime) -> RebuildState:
            if config.redis_unavailable == "sql":  # no SQL admission once Redis counts again
                sql.fence([b.id for b in budgets()], now)
            return from_db(now)

        def sql_from_db(now: datetime) -> None:
            sql.rebuild(
                lambda: [
                    (c.budget_id, c.period_start, c.spent_micros, c.spent_tokens)
                    for c in from_db(now).counters
                ]
            )

        primary = RedisReservations(redis_url, rebuild=redis_from_db)
        health = RedisHealth(
            primary,
            mode=config.redis_unavailable,
            retry_s=config.redis_retry_s,
            on_fallback=sql_from_db,
        )
        return (
            FailoverReservations(health, sql),
            FailoverBuckets(health, RedisBuckets(redis_url)),
            RedisPublisher(redis_url, CHANNEL),
            health,
        )
    publisher = RedisPublisher(redis_url, CHANNEL) if redis_url else None
    return SqlReservations(engine), LocalBuckets(), publisher, None


class Enforcer:
    """Authorize and reconcile for one worker (thread-safe)."""

    def __init__(
        self,
        engine: Engine,
        config: EnforcementConfig,
        *,
        redis_url: str | None = None,
        clock: Callable[[], datetime],
        scaler: DeploymentScaler | None = None,
        reservations: ReservationBackend | None = None,
        buckets: BucketBackend | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.engine, self.config, self.redis_url, self.clock = engine, config, redis_url, clock
        self.scaler = scaler
        res, bkt, pub, health = build_backends(
            engine, config, redis_url, lambda: self.policy().budgets
        )
        self.reservations = reservations or res
        self.buckets = buckets or bkt
        self.publisher = publisher or pub
        self.health = health if reservations is None and buckets is None else None
        self.metrics = EnforcementMetrics()
        self._policy: Policy | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()
        self._bucket_keys: set[str] = set()
        self.listener: Listener | None = None
        self.metrics.attach(
            self.reservations,
            self.buckets,
            lambda: sorted(self._bucket_keys),
            lambda: len(self.policy().kills),
            clock,
            customer_labels=config.metrics_customer_labels,
            mode=self.mode,
        )

    def mode(self) -> str:
        """Where authorize reserves now: ``sql``, ``redis``, ``sql-fallback`` or ``deny``."""
        return self.health.state() if self.health is not None else self.reservations.name

    # -- policy cache -------------------------------------------------------------------
    def refresh(self) -> Policy:
        """Reload budgets, rate rules and kill-switches from the database now."""
        policy = load_policy(self.engine)
        with self._lock:
            self._policy, self._loaded_at = policy, time.monotonic()
        return policy

    def policy(self) -> Policy:
        """The cached policy; reloaded inline only if no listener kept it fresh."""
        p = self._policy
        if p is None or time.monotonic() - self._loaded_at > self.config.refresh_s * 2:
            return self.refresh()
        return p

    def start(self) -> None:
        """Listen for change notices (Redis pub/sub when configured) and poll as a fallback."""
        if self.listener is None:
            self.refresh()
            self.listener = Listener(self.redis_url, CHANNEL, self._reload, self.config.refresh_s)
            self.listener.start()

    def _reload(self) -> None:
        self.refresh()

    def stop(self) -> None:
        """Stop the listener."""
        if self.listener is not None:
            self.listener.stop()
            self.listener = None

    def changed(self, what: str) -> None:
        """Policy changed here: reload now and tell the other workers."""
        self.refresh()
        if self.publisher is not None:
            self.publisher.publish(what)

    # -- authorize ------------------------------------------------------------------------
    def authorize(self, req: AuthorizeRequest, now: datetime) -> Authorized:
        """Decide and reserve (see the module docstring for the order)."""
        t0 = time.perf_counter()
        try:
            if self.health is not None and self.health.refuses(now):
                raise EnforcementUnavailable(UNAVAILABLE)
            result = self._authorize(req, now)
        except EnforcementUnavailable:
            result = Authorized(Decision(False, UNAVAILABLE, self.config.redis_retry_s))
        d = result.decision
        self.metrics.decisions.labels(
            "allow" if d.allowed else "deny", d.reason.split(":")[0]
        ).inc()
        self.metrics.latency.observe(time.perf_counter() - t0)
        return result

    def _authorize(self, req: AuthorizeRequest, now: datetime) -> Authorized:
        policy = self.policy()
        key = req.request_id or uuid.uuid4().hex

        def take(
            specs: Sequence[BucketSpec], reserve: float
        ) -> tuple[bool, BucketSpec | None, float | None]:
            self._bucket_keys.update(s.key for s in specs)
            return self.buckets.take(specs, reserve, now)

        def reserve(budgets: Sequence[Budget], est_micros: int, est_tokens: int) -> Reserved:
            return self.reservations.reserve(
                key,
                budgets,
                customer=req.customer,
                model=req.model,
                request_type=req.request_type,
                est_micros=est_micros,
                est_tokens=est_tokens,
                now=now,
                ttl_s=self.config.reservation_ttl_s,
            )

        def release() -> None:
            self.reservations.release(key, now)

        ruling = authorize_rule(
            policy.kills,
            policy.rules,
            policy.budgets,
            req,
            self.config,
            take=take,
            reserve=reserve,
            release=release,
        )
        d = ruling.decision
        if not d.allowed:
            if d.kill is not None:
                self._trip(d, policy, now)
            return Authorized(d)
        if ruling.reserved is None:  # no budget covers the request: nothing reserved
            return Authorized(d, key, 0, None)
        expires = now + timedelta(seconds=self.config.reservation_ttl_s)
        return Authorized(d, key, ruling.est_micros, expires)

    def _trip(self, d: Decision, policy: Policy, now: datetime) -> None:
        assert d.kill is not None
        if d.kill in policy.kills:
            return
        scope, target = d.kill
        kill(
            self.engine,
            scope=scope,
            target=target,
            reason=f"budget {d.budget} reached its hard limit ({d.reason})",
            actor=f"budget:{d.budget}",
            now=now,
            publisher=self.publisher,
            scaler=self.scaler,
        )
        self.refresh()

    def release(self, key: str, now: datetime) -> bool:
        """Cancel a reservation (the request never ran)."""
        return self.reservations.release(key, now)

    # -- reconcile --------------------------------------------------------------------------
    def charges(self, events: Sequence[UsageEventIn]) -> list[Charge]:
        """Usage events as charges priced by the rate card."""
        return [
            Charge(
                key=e["id"],
                customer=e["customer"],
                model=e["model"],
                request_type=e["request_type"],
                micros=actual_micros(
                    self.config.price(e["model"]), e["input_tokens"], e["output_tokens"]
                ),
                tokens=e["input_tokens"] + e["output_tokens"],
                ts=e["time"],
            )
            for e in events
        ]

    def reconcile(self, events: Sequence[UsageEventIn], now: datetime) -> SettleResult:
        """Settle the reservations of ingested usage events, charge the others, evaluate."""
        policy = self.policy()
        result = self.reservations.settle(self.charges(events), policy.budgets, now)
        touched = [b for b in policy.budgets if b.id in result.touched]
        if touched:
            self.evaluate(touched, now)
        return result

    def evaluate(self, budgets: Sequence[Budget], now: datetime) -> list[dict[str, object]]:
        """Alert on budgets past their soft or hard line (once per period and level)."""
        levels = self.reservations.levels(budgets, now)
        sent = raise_alerts(self.engine, self.config, [(b, levels[b.id]) for b in budgets], now)
        for a in sent:
            self.metrics.alerts.labels(str(a["level"])).inc()
        return sent
