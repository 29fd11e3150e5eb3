"""The pure rules: periods, prices, budget verdicts, token buckets, ``decide``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.enforcement.config import EnforcementConfig, TokenPrice
from billing.enforcement.domain import (
    AuthorizeRequest,
    Bucket,
    Budget,
    Level,
    RateRule,
    Scope,
    Snapshot,
    budget_verdict,
    decide,
    estimate_micros,
    period_bounds,
    rolled,
    take,
)
from billing.enforcement.models import BudgetAction, KillScope, Period

T = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)  # Wednesday


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        (Period.daily, datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 11, 26, tzinfo=UTC)),
        (Period.weekly, datetime(2026, 11, 23, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)),
        (Period.monthly, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
    ],
    ids=["daily", "weekly-from-monday", "monthly"],
)
def test_period_bounds(period: Period, start: datetime, end: datetime) -> None:
    assert period_bounds(period, T) == (start, end)


def test_december_rolls_into_next_year() -> None:
    assert period_bounds(Period.monthly, datetime(2026, 12, 31, 23, tzinfo=UTC))[1] == datetime(
        2027, 1, 1, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("tokens", "inp", "micros"),
    [
        (1000, 0, 1500),  # all priced as output: 1000 * 1.5 µUSD
        (1000, 800, 700),  # 800 * 0.5 + 200 * 1.5 = 400 + 300
        (3, 1, 4),  # 0.5 + 2 * 1.5 = 3.5 -> ceil 4
    ],
)
def test_estimate(tokens: int, inp: int, micros: int) -> None:
    assert estimate_micros(TokenPrice(), tokens, inp) == micros


def _budget(**kw: object) -> Budget:
    base: dict[str, object] = {
        "id": 1,
        "name": "b",
        "scope": Scope(customer="acme"),
        "period": Period.daily,
        "limit_micros": 10_000,
        "limit_tokens": None,
    }
    base.update(kw)
    return Budget(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("level", "est", "tok", "verdict"),
    [
        (Level(0, 0, 0, 0), 10_000, 1, None),  # exactly the limit fits
        (Level(6_000, 0, 4_000, 0), 1, 1, "budget_usd"),  # 6000 + 4000 + 1 > 10000
        (Level(5_000, 0, 0, 0), 5_000, 1, None),
    ],
    ids=["fills-exactly", "one-over", "half"],
)
def test_budget_verdict(level: Level, est: int, tok: int, verdict: str | None) -> None:
    assert budget_verdict(_budget(), level, est, tok) == verdict


def test_token_limit() -> None:
    b = _budget(limit_micros=None, limit_tokens=100)
    assert budget_verdict(b, Level(0, 60, 0, 30), 0, 10) is None  # 60 + 30 + 10 = 100
    assert budget_verdict(b, Level(0, 60, 0, 30), 0, 11) == "budget_tokens"


@given(
    limit=st.integers(0, 10**6),
    ests=st.lists(st.integers(1, 10**5), max_size=60),
)
def test_admitting_never_exceeds_the_limit(limit: int, ests: list[int]) -> None:
    """Property: reserving only what budget_verdict admits keeps spent+reserved <= limit."""
    b = _budget(limit_micros=limit)
    lv = Level()
    for e in ests:
        if budget_verdict(b, lv, e, 0) is None:
            lv = lv.add(e, 0, reserved=True)
        assert lv.reserved_micros <= limit


def test_period_roll_keeps_reservations() -> None:
    start = datetime(2026, 11, 25, tzinfo=UTC)
    lv = Level(9, 9, 5, 5)
    assert rolled(lv, start - timedelta(days=1), start) == Level(0, 0, 5, 5)
    assert rolled(lv, start, start) == lv


@pytest.mark.parametrize(
    ("level", "elapsed", "cost", "reserve", "ok", "retry"),
    [
        (10.0, 0, 1, 0.0, True, None),
        (0.0, 0, 1, 0.0, False, 1.0),  # 1 token / 1 per s
        (0.0, 5, 1, 0.0, True, None),  # refilled 5
        (6.0, 0, 1, 0.5, True, None),  # 6 - 1 = 5 >= 0.5 * 10
        (5.5, 0, 1, 0.5, False, 0.5),  # needs 1 + 5 = 6, has 5.5
        (10.0, 0, 11, 0.0, False, None),  # larger than the bucket: never
    ],
    ids=["full", "empty", "refill", "low-admitted", "low-shed", "too-big"],
)
def test_take(
    level: float, elapsed: float, cost: float, reserve: float, ok: bool, retry: float | None
) -> None:
    got, after, r = take(
        Bucket(level, T),
        capacity=10,
        rate_per_s=1,
        cost=cost,
        reserve=reserve,
        now=T + timedelta(seconds=elapsed),
    )
    assert (got, r) == (ok, retry)
    if ok:
        assert after.level == pytest.approx(min(10, level + elapsed) - cost)


def _req(**kw: object) -> AuthorizeRequest:
    base: dict[str, object] = {
        "customer": "acme",
        "model": "llama",
        "request_type": "chat",
        "estimated_tokens": 1000,
    }
    base.update(kw)
    return AuthorizeRequest(**base)  # type: ignore[arg-type]


CFG = EnforcementConfig()


def test_decide_kill_first() -> None:
    snap = Snapshot(kills=frozenset({(KillScope.model, "llama")}))
    out = decide(snap, _req(), T, CFG)
    d, taken = out.decision, out.buckets
    assert (d.allowed, d.reason, d.retry_after_s, taken) == (False, "killed:model", None, {})
    d = decide(snap, _req(model="mistral"), T, CFG).decision
    assert d.allowed


def test_decide_sheds_low_priority_first() -> None:
    rule = RateRule(1, "r", Scope(), rpm=10, tpm=None)
    key = rule.bucket_keys("acme", "llama", "chat")[0]
    # 4 of 10 left: high (reserve 0) and normal (reserve 0.2 -> needs 3) pass, low (needs 6) not
    snap = Snapshot(rules=(rule,), buckets={key: Bucket(4.0, T)})
    out = {p: decide(snap, _req(priority=p), T, CFG).decision for p in ("high", "normal", "low")}
    assert [out[p].allowed for p in ("high", "normal", "low")] == [True, True, False]
    assert out["low"].reason == "rate_limited_requests"
    # (1 + 0.5 * 10 - 4) / (10 / 60 per s) = 12 s
    assert out["low"].retry_after_s == pytest.approx(12.0)


def test_decide_budget_kill_action_names_the_switch() -> None:
    b = _budget(scope=Scope(model="llama"), action=BudgetAction.kill, limit_micros=1000)
    d = decide(Snapshot(budgets=((b, Level()),)), _req(), T, CFG).decision
    assert (d.allowed, d.reason, d.kill) == (False, "budget_usd", (KillScope.model, "llama"))
    assert d.retry_after_s == pytest.approx(11.5 * 3600)  # 12:30 -> midnight


def test_decide_throttle_past_soft_line() -> None:
    b = _budget(action=BudgetAction.throttle, limit_micros=100_000, soft_ratio=0.5)
    over = Level(60_000, 0, 0, 0)  # 60% > 50%
    empty = {"throttle:1": Bucket(0.0, T)}
    d = decide(Snapshot(budgets=((b, over),), buckets=empty), _req(), T, CFG).decision
    assert (d.allowed, d.reason) == (False, "budget_throttled")
    d = decide(Snapshot(budgets=((b, Level()),), buckets=empty), _req(), T, CFG).decision
    assert d.allowed
