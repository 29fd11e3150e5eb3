"""The enforcement edge: authorize, reconcile, kill/revive, wired to store, backends and clock.

One ``Enforcer`` per API worker. It caches the policy (budgets, rate rules, kill-switches) and
refreshes it on every change notice (Redis pub/sub) and at least every ``refresh_s`` (the
database is the source of truth). Authorize order: kill-switch (memory) -> rate limits with
load shedding (bucket backend) -> budget reservation (reservation backend, atomic) ->
throttle of 'throttle' budgets past their soft line (releasing the reservation on refusal).

Amounts are priced per budget basis (``billing.enforcement.rates``): 'cost' budgets at the
model's measured cost rate (re-measured every ``rates_refresh_s``), 'price' budgets at the rate
card. A request matching budgets of both bases holds one reservation per basis
(``basis_key``); its usage event settles both.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
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
    ALLOW,
    AuthorizeRequest,
    Budget,
    Charge,
    Decision,
    Level,
    SettleResult,
    actual_micros,
    bucket_specs,
    decide_kill,
    estimate_micros,
    throttled,
)
from billing.enforcement.enums import Basis
from billing.enforcement.killswitch import CHANNEL, kill
from billing.enforcement.local import LocalBuckets
from billing.enforcement.metrics import EnforcementMetrics
from billing.enforcement.rates import Rates, load_rates
from billing.enforcement.redis_backend import (
    Listener,
    RedisBuckets,
    RedisPublisher,
    RedisReservations,
)
from billing.enforcement.spend import seed_counters
from billing.enforcement.sql_backend import SqlReservations
from billing.enforcement.store import Policy, load_policy, matching_budgets
from billing.limits import NAME_LEN
from billing.schemas import UsageEventIn

log = logging.getLogger(__name__)

# One used request as settle reads it: (key, customer, model, request_type, in, out, ts).
Used = tuple[str, str, str, str, int, int, datetime]
BASES = (Basis.cost, Basis.price)


def basis_key(key: str, basis: Basis) -> str:
    """The reservation key of a request on its budgets of ``basis`` ('cost': the key itself)."""
    if basis == Basis.cost:
        return key
    if len(key) + 6 > NAME_LEN:
        key = hashlib.sha256(key.encode()).hexdigest()
    return f"{key}:price"


@dataclass(frozen=True)
class Authorized:
    """A decision plus the reservation it made."""

    decision: Decision
    key: str | None = None
    reserved_micros: int = 0
    expires_at: datetime | None = None


def build_backends(
    engine: Engine, config: EnforcementConfig, redis_url: str | None
) -> tuple[ReservationBackend, BucketBackend, Publisher | None]:
    """The backends ``config.backend`` asks for (auto: Redis when a URL is given)."""
    use_redis = config.backend == "redis" or (config.backend == "auto" and redis_url)
    if use_redis:
        if not redis_url:
            raise ValueError("enforcement.backend=redis needs a redis_url")
        return (
            RedisReservations(redis_url),
            RedisBuckets(redis_url),
            RedisPublisher(redis_url, CHANNEL),
        )
    publisher = RedisPublisher(redis_url, CHANNEL) if redis_url else None
    return SqlReservations(engine), LocalBuckets(), publisher


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
        res, bkt, pub = build_backends(engine, config, redis_url)
        self.reservations = reservations or res
        self.buckets = buckets or bkt
        self.publisher = publisher or pub
        self.metrics = EnforcementMetrics()
        self._policy: Policy | None = None
        self._loaded_at = 0.0
        self._rates: Rates | None = None
        self._rates_at = 0.0
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
        )

    # -- policy cache -------------------------------------------------------------------
    def refresh(self) -> Policy:
        """Reload budgets, rate rules and kill-switches from the database now (and the cost
        rates when they are older than ``rates_refresh_s``)."""
        policy = load_policy(self.engine)
        with self._lock:
            self._policy, self._loaded_at = policy, time.monotonic()
        if time.monotonic() - self._rates_at > self.config.rates_refresh_s:
            self.rates(fresh=True)
        return policy

    def policy(self) -> Policy:
        """The cached policy; reloaded inline only if no listener kept it fresh."""
        p = self._policy
        if p is None or time.monotonic() - self._loaded_at > self.config.refresh_s * 2:
            return self.refresh()
        return p

    def rates(self, now: datetime | None = None, *, fresh: bool = False) -> Rates:
        """The pricing snapshot (cost rates re-measured from the ledger by ``refresh``, i.e. off
        the authorize path, every rates_refresh_s; inline only on first use or ``fresh``)."""
        r = self._rates
        if fresh or r is None:
            r = load_rates(self.engine, self.config, now or self.clock())
            with self._lock:
                self._rates, self._rates_at = r, time.monotonic()
        return r

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
        result = self._authorize(req, now)
        d = result.decision
        self.metrics.decisions.labels(
            "allow" if d.allowed else "deny", d.reason.split(":")[0]
        ).inc()
        self.metrics.latency.observe(time.perf_counter() - t0)
        return result

    def _authorize(self, req: AuthorizeRequest, now: datetime) -> Authorized:
        policy = self.policy()
        killed = decide_kill(policy.kills, req)
        if killed is not None:
            return Authorized(killed)
        specs = bucket_specs(policy.rules, req, (), self.config.throttle_rpm)
        if specs:
            self._bucket_keys.update(s.key for s in specs)
            ok, spec, retry = self.buckets.take(specs, self.config.shed_reserve[req.priority], now)
            if not ok and spec is not None:
                return Authorized(Decision(False, spec.reason, retry, detail=spec.key))
        budgets = matching_budgets(policy.budgets, req.customer, req.model, req.request_type)
        key = req.request_id or uuid.uuid4().hex
        if not budgets:
            return Authorized(ALLOW, key, 0, None)
        rates = self.rates(now)
        expires = now + timedelta(seconds=self.config.reservation_ttl_s)
        held: list[str] = []
        levels: list[tuple[Budget, Level]] = []
        reserved = 0
        for basis in BASES:
            group = [b for b in budgets if b.basis == basis]
            if not group:
                continue
            est = estimate_micros(
                rates.rate(basis, req.model, req.customer),
                req.estimated_tokens,
                req.estimated_input_tokens,
            )
            got = self.reservations.reserve(
                basis_key(key, basis),
                group,
                customer=req.customer,
                model=req.model,
                request_type=req.request_type,
                est_micros=est,
                est_tokens=req.estimated_tokens,
                now=now,
                ttl_s=self.config.reservation_ttl_s,
            )
            if got.duplicate:
                if not got.decision.allowed:
                    return Authorized(got.decision, key, 0, expires)
                reserved += est
                continue
            if not got.decision.allowed:
                for k in held:
                    self.reservations.release(k, now)
                if got.decision.kill is not None:
                    self._trip(got.decision, policy, now)
                return Authorized(got.decision, None)
            held.append(basis_key(key, basis))
            levels += got.levels
            reserved += est
        if not held:  # a repeated authorize of a request that holds its reservations
            return Authorized(ALLOW, key, reserved, expires)
        slow = throttled(levels)
        if slow:
            tspecs = bucket_specs((), req, slow, self.config.throttle_rpm)
            self._bucket_keys.update(s.key for s in tspecs)
            ok, spec, retry = self.buckets.take(tspecs, 0.0, now)
            if not ok and spec is not None:
                for k in held:
                    self.reservations.release(k, now)
                return Authorized(Decision(False, "budget_throttled", retry, budget=spec.key))
        return Authorized(ALLOW, key, reserved, expires)

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
        """Cancel a request's reservations (the request never ran)."""
        return any([self.reservations.release(basis_key(key, b), now) for b in BASES])

    # -- reconcile --------------------------------------------------------------------------
    def settle(
        self, used: Iterable[Used], budgets: Sequence[Budget], now: datetime
    ) -> SettleResult:
        """Settle used requests on ``budgets``: per basis, priced at that basis's rate."""
        used = list(used)
        rates = self.rates(now)
        total = SettleResult()
        for basis in BASES:
            group = [b for b in budgets if b.basis == basis]
            if not group or not used:
                continue
            charges = []
            for key, customer, model, rtype, inp, out, ts in used:
                rate = rates.rate(basis, model, customer)
                charges.append(
                    Charge(
                        key=basis_key(key, basis),
                        customer=customer,
                        model=model,
                        request_type=rtype,
                        micros=actual_micros(rate, inp, out),
                        tokens=inp + out,
                        ts=ts,
                    )
                )
            r = self.reservations.settle(charges, group, now)
            total = SettleResult(
                total.reconciled + r.reconciled,
                total.charged + r.charged,
                total.duplicates + r.duplicates,
                total.touched | r.touched,
            )
        return total

    def reconcile(self, events: Sequence[UsageEventIn], now: datetime) -> SettleResult:
        """Settle the reservations of ingested usage events, charge the others, evaluate."""
        policy = self.policy()
        used = [
            (
                e["id"],
                e["customer"],
                e["model"],
                e["request_type"],
                e["input_tokens"],
                e["output_tokens"],
                e["time"],
            )
            for e in events
        ]
        result = self.settle(used, policy.budgets, now)
        touched = [b for b in policy.budgets if b.id in result.touched]
        if touched:
            self.evaluate(touched, now)
        return result

    def seed(
        self, budgets: Sequence[Budget], now: datetime, *, resolution_s: int = 3600
    ) -> dict[str, int]:
        """Set the counters' spent to the database's period spend (``period_spent``).

        Returns: the correction (µUSD, truth - counter) per budget name that needed one. Run on
        a new or reset budget (so a budget created mid-period counts the period's earlier
        spend) and by the budget job on 'cost' budgets after each rollup.
        """
        return seed_counters(
            self.engine, self.reservations, budgets, self.rates(now), now, resolution_s=resolution_s
        )

    def evaluate(self, budgets: Sequence[Budget], now: datetime) -> list[dict[str, object]]:
        """Alert on budgets past their soft or hard line (once per period and level)."""
        levels = self.reservations.levels(budgets, now)
        sent = raise_alerts(self.engine, self.config, [(b, levels[b.id]) for b in budgets], now)
        for a in sent:
            self.metrics.alerts.labels(str(a["level"])).inc()
        return sent
