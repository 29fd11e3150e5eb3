"""One budget rule: the production backends agree with ``domain.decide`` on generated states.

For each generated state (budgets with levels, a rate rule with a bucket level, a request),
``decide`` runs ``authorize_rule`` in memory; the same rule then runs over the Redis Lua
backends (RedisBuckets + RedisReservations) and over the SQL backend (SqlReservations +
LocalBuckets) seeded with that state. They must give the same admit/deny and reason, leave
the same reservations on every budget, and the same bucket levels.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert
from sqlalchemy.engine import Engine

from billing.enforcement.backend import BucketBackend, ReservationBackend
from billing.enforcement.config import EnforcementConfig, TokenPrice
from billing.enforcement.domain import (
    AuthorizeRequest,
    Bucket,
    BucketSpec,
    Budget,
    Decision,
    Level,
    RateRule,
    Reserved,
    Scope,
    Snapshot,
    authorize_rule,
    decide,
    period_bounds,
)
from billing.enforcement.enums import Basis, BudgetAction, Period
from billing.enforcement.local import LocalBuckets
from billing.enforcement.models import BudgetCounter, ReservationRow
from billing.enforcement.redis_backend import PREFIX, RedisBuckets, RedisReservations, ms
from billing.enforcement.sql_backend import SqlReservations
from billing.models import table_of

T = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
CFG = EnforcementConfig()
RULE = RateRule(1, "r", Scope(customer="acme"), rpm=10, tpm=None)
BUCKET_KEY = RULE.bucket_keys("acme", "llama", "chat")[0]
# cost and price budgets count the same tokens at different rates
RATES = {
    Basis.cost: TokenPrice(input_usd_per_mtok=0.2, output_usd_per_mtok=0.7),
    Basis.price: TokenPrice(input_usd_per_mtok=0.5, output_usd_per_mtok=1.5),
}


def price(basis: Basis) -> TokenPrice:
    return RATES[basis]


@st.composite
def states(draw: st.DrawFn) -> tuple[Snapshot, AuthorizeRequest]:
    n = draw(st.integers(1, 3))
    budgets = []
    for i in range(1, n + 1):
        b = Budget(
            i,
            f"b{i}",
            draw(st.sampled_from([Scope(), Scope(customer="acme"), Scope(model="other")])),
            Period.daily,
            draw(st.one_of(st.none(), st.integers(0, 20_000))),
            draw(st.one_of(st.none(), st.integers(0, 5_000))),
            0.5,
            draw(st.sampled_from([BudgetAction.block, BudgetAction.throttle])),
            draw(st.sampled_from([Basis.cost, Basis.price])),
        )
        lv = Level(*(draw(st.integers(0, m)) for m in (15_000, 4_000, 5_000, 1_000)))
        budgets.append((b, lv))
    with_rule = draw(st.booleans())
    buckets = {}
    if with_rule and draw(st.booleans()):
        buckets[BUCKET_KEY] = Bucket(draw(st.floats(0, 10, allow_nan=False)), T)
    for b, _ in budgets:  # a drained throttle bucket sometimes
        if draw(st.booleans()):
            buckets[f"throttle:{b.id}"] = Bucket(draw(st.sampled_from([0.0, 0.5, 30.0])), T)
    req = AuthorizeRequest(
        "acme",
        "llama",
        "chat",
        estimated_tokens=draw(st.integers(1, 3_000)),
        estimated_input_tokens=draw(st.integers(0, 1_000)),
        priority=draw(st.sampled_from(["high", "normal", "low"])),
    )
    snap = Snapshot(rules=(RULE,) if with_rule else (), buckets=buckets, budgets=tuple(budgets))
    return snap, req


def _run(
    snap: Snapshot, req: AuthorizeRequest, res: ReservationBackend, bkt: BucketBackend
) -> Decision:
    key = uuid.uuid4().hex

    def take(
        specs: Sequence[BucketSpec], reserve: float
    ) -> tuple[bool, BucketSpec | None, float | None]:
        return bkt.take(specs, reserve, T)

    def reserve(basis: Basis, budgets: Sequence[Budget], m: int, t: int) -> Reserved:
        return res.reserve(
            f"{key}:{basis.value}",
            budgets,
            customer=req.customer,
            model=req.model,
            request_type=req.request_type,
            est_micros=m,
            est_tokens=t,
            now=T,
            ttl_s=300,
        )

    def release(bases: Sequence[Basis]) -> None:
        for basis in bases:
            res.release(f"{key}:{basis.value}", T)

    ruling = authorize_rule(
        (),
        snap.rules,
        [b for b, _ in snap.budgets],
        req,
        CFG,
        price=price,
        take=take,
        reserve=reserve,
        release=release,
    )
    return ruling.decision


def _same(d: Decision, ref: Decision) -> None:
    assert (d.allowed, d.reason, d.budget) == (ref.allowed, ref.reason, ref.budget)
    if ref.retry_after_s is None:
        assert d.retry_after_s is None
    else:
        assert d.retry_after_s == pytest.approx(ref.retry_after_s, rel=1e-6, abs=1e-3)


def _levels(res: ReservationBackend, snap: Snapshot) -> dict[int, Level]:
    return res.levels([b for b, _ in snap.budgets], T)


def _buckets_close(got: dict[str, float], want: dict[str, Bucket]) -> None:
    for k, b in want.items():
        assert got.get(k) == pytest.approx(b.level, abs=1e-6), k


@pytest.mark.redis
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=states())
def test_redis_lua_backends_follow_decide(
    redis_url: str, case: tuple[Snapshot, AuthorizeRequest]
) -> None:
    snap, req = case
    ref = decide(snap, req, T, CFG, price)
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    r.set(f"{PREFIX}epoch", ms(T) - 1)
    start = ms(period_bounds(Period.daily, T)[0])
    for b, lv in snap.budgets:
        r.hset(
            f"{PREFIX}b:{b.id}",
            mapping={
                "p": start,
                "sm": lv.spent_micros,
                "st": lv.spent_tokens,
                "rm": lv.reserved_micros,
                "rt": lv.reserved_tokens,
            },
        )
    for k, bk in snap.buckets.items():
        r.hset(f"{PREFIX}k:{k}", mapping={"l": str(bk.level), "t": ms(bk.at)})
    res, bkt = RedisReservations(redis_url), RedisBuckets(redis_url)
    _same(_run(snap, req, res, bkt), ref.decision)
    assert _levels(res, snap) == ref.levels
    _buckets_close(bkt.levels(list(ref.buckets), T), ref.buckets)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=states())
def test_sql_backend_follows_decide(
    engine: Engine, case: tuple[Snapshot, AuthorizeRequest]
) -> None:
    snap, req = case
    ref = decide(snap, req, T, CFG, price)
    start = period_bounds(Period.daily, T)[0]
    with engine.begin() as conn:
        conn.execute(delete(table_of(ReservationRow)))
        conn.execute(delete(table_of(BudgetCounter)))
        for b, lv in snap.budgets:
            conn.execute(
                insert(table_of(BudgetCounter)).values(
                    budget_id=b.id,
                    period_start=start,
                    spent_micros=lv.spent_micros,
                    spent_tokens=lv.spent_tokens,
                    reserved_micros=lv.reserved_micros,
                    reserved_tokens=lv.reserved_tokens,
                )
            )
    bkt = LocalBuckets()
    bkt._buckets.update(snap.buckets)  # seed the in-process buckets with the state
    res = SqlReservations(engine)
    _same(_run(snap, req, res, bkt), ref.decision)
    assert _levels(res, snap) == ref.levels
    _buckets_close(bkt.levels(list(ref.buckets), T), ref.buckets)
