"""Pure enforcement rules: scopes, periods, prices, budget checks, token buckets, ``decide``.

No clock, no I/O: every function takes ``now`` and snapshots. The edges (billing.enforcement
.service, .sql_backend, .redis_backend) take atomic snapshots and apply these rules; the Redis
Lua scripts mirror ``budget_verdict`` and ``take`` line for line (tests compare them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from billing.enforcement.config import EnforcementConfig, Priority, TokenPrice
from billing.enforcement.enums import Basis, BudgetAction, KillScope, Period

DIMS = ("customer", "model", "request_type")


@dataclass(frozen=True)
class Scope:
    """A customer x model x request_type filter; None matches anything (all None = global)."""

    customer: str | None = None
    model: str | None = None
    request_type: str | None = None

    def matches(self, customer: str, model: str, request_type: str) -> bool:
        """True when a request with these values falls in the scope."""
        return (
            (self.customer is None or self.customer == customer)
            and (self.model is None or self.model == model)
            and (self.request_type is None or self.request_type == request_type)
        )

    def label(self) -> str:
        """``customer=acme,model=*`` style text (``global`` when nothing is set)."""
        parts = [f"{d}={getattr(self, d)}" for d in DIMS if getattr(self, d) is not None]
        return ",".join(parts) or "global"


@dataclass(frozen=True)
class Budget:
    """A budget definition (a snapshot of an enf_budget row)."""

    id: int
    name: str
    scope: Scope
    period: Period
    limit_micros: int | None
    limit_tokens: int | None
    soft_ratio: float = 0.8
    action: BudgetAction = BudgetAction.block
    basis: Basis = Basis.cost


@dataclass(frozen=True)
class Level:
    """A budget's counters in its current period."""

    spent_micros: int = 0
    spent_tokens: int = 0
    reserved_micros: int = 0
    reserved_tokens: int = 0

    def add(self, micros: int, tokens: int, *, reserved: bool) -> Level:
        """These counters with an amount added to reserved (or spent)."""
        if reserved:
            return replace(
                self,
                reserved_micros=self.reserved_micros + micros,
                reserved_tokens=self.reserved_tokens + tokens,
            )
        return replace(
            self, spent_micros=self.spent_micros + micros, spent_tokens=self.spent_tokens + tokens
        )


@dataclass(frozen=True)
class RateRule:
    """Requests/min and/or tokens/min for a scope; ``per`` splits it into one bucket per value."""

    id: int
    name: str
    scope: Scope
    rpm: float | None
    tpm: float | None
    per: tuple[str, ...] = ()

    def bucket_keys(self, customer: str, model: str, request_type: str) -> tuple[str, str]:
        """The keys of this rule's request and token buckets for a request."""
        values = {"customer": customer, "model": model, "request_type": request_type}
        suffix = "|".join(f"{d}={values[d]}" for d in self.per)
        return f"rl:{self.id}:req:{suffix}", f"rl:{self.id}:tok:{suffix}"


@dataclass(frozen=True)
class Bucket:
    """A token bucket's level at ``at`` (a full bucket when never seen)."""

    level: float
    at: datetime


@dataclass(frozen=True)
class AuthorizeRequest:
    """What a gateway asks before running an inference request."""

    customer: str
    model: str
    request_type: str
    estimated_tokens: int
    estimated_input_tokens: int = 0
    priority: Priority = "normal"
    request_id: str | None = None


@dataclass(frozen=True)
class Decision:
    """Allow or deny, why, and when to retry (None: not before an operator acts)."""

    allowed: bool
    reason: str
    retry_after_s: float | None = None
    budget: str | None = None
    kill: tuple[KillScope, str] | None = None  # a kill-switch the caller must trip
    detail: str = ""


ALLOW = Decision(True, "ok")


def period_bounds(period: Period, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the UTC day, ISO week (Monday) or calendar month holding ``now``."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == Period.daily:
        return day, day + timedelta(days=1)
    if period == Period.weekly:
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def estimate_micros(price: TokenPrice, tokens: int, input_tokens: int = 0) -> int:
    """Reserved cost of a request: known input at the input price, the rest at the output price.

    Details: ceil(input * in_price + (tokens - input) * out_price) micro-USD (USD/Mtok = µUSD/tok);
    an estimate without an input split is priced entirely as output (an upper bound).
    """
    inp = min(input_tokens, tokens)
    return math.ceil(inp * price.input_usd_per_mtok + (tokens - inp) * price.output_usd_per_mtok)


def actual_micros(price: TokenPrice, input_tokens: int, output_tokens: int) -> int:
    """Cost of a finished request. Details: ceil(in * in_price + out * out_price) µUSD."""
    return math.ceil(
        input_tokens * price.input_usd_per_mtok + output_tokens * price.output_usd_per_mtok
    )


def budget_verdict(budget: Budget, level: Level, est_micros: int, est_tokens: int) -> str | None:
    """The limit a reservation would break (``budget_usd``/``budget_tokens``), else None.

    Invariant: admitting only when spent + reserved + estimate <= limit keeps spent + reserved
    within the limit; a period can end above it only by what actual usage exceeds estimates.
    """
    if (
        budget.limit_micros is not None
        and level.spent_micros + level.reserved_micros + est_micros > budget.limit_micros
    ):
        return "budget_usd"
    if (
        budget.limit_tokens is not None
        and level.spent_tokens + level.reserved_tokens + est_tokens > budget.limit_tokens
    ):
        return "budget_tokens"
    return None


def burn_ratio(budget: Budget, level: Level) -> float:
    """max over the set limits of (spent + reserved) / limit (0 without limits)."""
    ratios = []
    if budget.limit_micros:
        ratios.append((level.spent_micros + level.reserved_micros) / budget.limit_micros)
    if budget.limit_tokens:
        ratios.append((level.spent_tokens + level.reserved_tokens) / budget.limit_tokens)
    return max(ratios, default=0.0)


def kill_target(budget: Budget) -> tuple[KillScope, str]:
    """The kill-switch a 'kill' budget trips: its single scope dimension, or global."""
    set_dims = [d for d in DIMS if getattr(budget.scope, d) is not None]
    if not set_dims:
        return KillScope.global_, "*"
    dim = set_dims[0]
    return KillScope(dim), str(getattr(budget.scope, dim))


def decide_budgets(
    budgets: Sequence[tuple[Budget, Level]], est_micros: int, est_tokens: int, now: datetime
) -> Decision:
    """Admit a reservation against every matching budget, or say which one refuses it."""
    for budget, level in budgets:
        broken = budget_verdict(budget, level, est_micros, est_tokens)
        if broken is None:
            continue
        _, end = period_bounds(budget.period, now)
        kill = kill_target(budget) if budget.action == BudgetAction.kill else None
        return Decision(
            False,
            broken,
            retry_after_s=max((end - now).total_seconds(), 1.0),
            budget=budget.name,
            kill=kill,
        )
    return ALLOW


def throttled(budgets: Iterable[tuple[Budget, Level]]) -> list[Budget]:
    """'throttle' budgets at or past their soft line (they get a throttle_rpm bucket)."""
    return [
        b
        for b, lv in budgets
        if b.action == BudgetAction.throttle and burn_ratio(b, lv) >= b.soft_ratio
    ]


def take(
    bucket: Bucket | None,
    *,
    capacity: float,
    rate_per_s: float,
    cost: float,
    reserve: float,
    now: datetime,
) -> tuple[bool, Bucket, float | None]:
    """Take ``cost`` from a token bucket if it keeps ``reserve`` x capacity afterwards.

    Returns: (admitted, bucket after, retry-after seconds or None when it can never pass).
    Details: level = min(capacity, level + rate * elapsed); admit iff level - cost >=
    reserve * capacity; otherwise retry after (cost + reserve * capacity - level) / rate.
    """
    level = capacity if bucket is None else bucket.level
    if bucket is not None:
        elapsed = max((now - bucket.at).total_seconds(), 0.0)
        level = min(capacity, level + elapsed * rate_per_s)
    need = cost + reserve * capacity
    if level >= need:
        return True, Bucket(level - cost, now), None
    if need > capacity or rate_per_s <= 0:
        return False, Bucket(level, now), None
    return False, Bucket(level, now), (need - level) / rate_per_s


@dataclass(frozen=True)
class BucketSpec:
    """One bucket a request must draw from: its key, size, refill rate and the cost."""

    key: str
    capacity: float
    rate_per_s: float
    cost: float
    reason: str


def bucket_specs(
    rules: Iterable[RateRule],
    req: AuthorizeRequest,
    throttle: Iterable[Budget],
    throttle_rpm: float,
) -> list[BucketSpec]:
    """The buckets a request draws from: each matching rule's rpm/tpm, each throttled budget."""
    specs = []
    for r in rules:
        if not r.scope.matches(req.customer, req.model, req.request_type):
            continue
        k_req, k_tok = r.bucket_keys(req.customer, req.model, req.request_type)
        if r.rpm:
            specs.append(BucketSpec(k_req, r.rpm, r.rpm / 60, 1.0, "rate_limited_requests"))
        if r.tpm:
            specs.append(
                BucketSpec(
                    k_tok, r.tpm, r.tpm / 60, float(req.estimated_tokens), "rate_limited_tokens"
                )
            )
    specs += [
        BucketSpec(f"throttle:{b.id}", throttle_rpm, throttle_rpm / 60, 1.0, "budget_throttled")
        for b in throttle
    ]
    return specs


def decide_kill(active: Iterable[tuple[KillScope, str]], req: AuthorizeRequest) -> Decision | None:
    """A denial if a kill-switch covers the request (global, its model, customer or type)."""
    hits = {
        KillScope.global_: "*",
        KillScope.model: req.model,
        KillScope.customer: req.customer,
        KillScope.request_type: req.request_type,
    }
    for scope, target in active:
        if hits[scope] == target:
            return Decision(False, f"killed:{scope.value}", None, detail=target)
    return None


@dataclass(frozen=True)
class Snapshot:
    """Everything ``decide`` reads: kill-switches, rate rules and buckets, budgets and levels."""

    kills: frozenset[tuple[KillScope, str]] = frozenset()
    rules: tuple[RateRule, ...] = ()
    buckets: Mapping[str, Bucket] = field(default_factory=dict)
    budgets: tuple[tuple[Budget, Level], ...] = ()


def decide(
    state: Snapshot, req: AuthorizeRequest, now: datetime, config: EnforcementConfig
) -> tuple[Decision, dict[str, Bucket]]:
    """The full rule: kill-switch, then rate limits/throttles (with shedding), then budgets.

    Returns: the decision and the buckets to store when it admits (none when it denies).
    """
    killed = decide_kill(state.kills, req)
    if killed is not None:
        return killed, {}
    matching = [
        (b, lv)
        for b, lv in state.budgets
        if b.scope.matches(req.customer, req.model, req.request_type)
    ]
    specs = bucket_specs(state.rules, req, throttled(matching), config.throttle_rpm)
    taken: dict[str, Bucket] = {}
    reserve = config.shed_reserve[req.priority]
    for s in specs:
        ok, after, retry = take(
            state.buckets.get(s.key),
            capacity=s.capacity,
            rate_per_s=s.rate_per_s,
            cost=s.cost,
            reserve=reserve if s.reason.startswith("rate_limited") else 0.0,
            now=now,
        )
        if not ok:
            return Decision(False, s.reason, retry, detail=s.key), {}
        taken[s.key] = after
    price = config.price(req.model)
    est = estimate_micros(price, req.estimated_tokens, req.estimated_input_tokens)
    verdict = decide_budgets(matching, est, req.estimated_tokens, now)
    return verdict, (taken if verdict.allowed else {})


def rolled(level: Level, stored_start: datetime, period_start: datetime) -> Level:
    """Counters after a period reset: spent starts again at 0, in-flight reservations carry over."""
    if stored_start >= period_start:
        return level
    return Level(0, 0, level.reserved_micros, level.reserved_tokens)


@dataclass(frozen=True)
class Charge:
    """A usage event to settle: its reservation key, what it used, and when."""

    key: str
    customer: str
    model: str
    request_type: str
    micros: int
    tokens: int
    ts: datetime


@dataclass(frozen=True)
class SettleResult:
    """What settling a batch did: reservations settled, unreserved events charged, repeats."""

    reconciled: int = 0
    charged: int = 0
    duplicates: int = 0
    touched: frozenset[int] = frozenset()
