"""Pure enforcement rules: scopes, periods, prices, budget checks, token buckets, ``decide``.

No clock, no I/O: every function takes ``now`` and snapshots. ``authorize_rule`` is the one
authorize rule; the Enforcer (billing.enforcement.service) runs it over the atomic backends
(.sql_backend, .redis_backend, whose Lua scripts mirror ``budget_verdict`` and ``take``) and
``decide`` runs it over a snapshot; tests/enforcement/test_rule_property.py compares them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
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
class Reserved:
    """What a reservation edge answers: the decision and the matching budgets' levels before it."""

    decision: Decision
    levels: tuple[tuple[Budget, Level], ...]
    duplicate: bool = False


TakeFn = Callable[[Sequence[BucketSpec], float], tuple[bool, BucketSpec | None, float | None]]
# reserve(basis, the matching budgets of that basis, estimate µUSD, estimate tokens)
ReserveFn = Callable[[Basis, Sequence[Budget], int, int], Reserved]
# release(the bases whose reservations this request holds)
ReleaseFn = Callable[[Sequence[Basis]], None]
# the rate a budget of ``basis`` counts the request's tokens at
PriceFn = Callable[[Basis], TokenPrice]
BASES = (Basis.cost, Basis.price)


@dataclass(frozen=True)
class Ruling:
    """What ``authorize_rule`` decided, and the reservations it holds (empty: nothing held)."""

    decision: Decision
    held: tuple[Basis, ...] = ()
    est_micros: int = 0
    covered: bool = False  # some budget matched (a reservation exists or was re-confirmed)


def authorize_rule(
    kills: Iterable[tuple[KillScope, str]],
    rules: Iterable[RateRule],
    budgets: Sequence[Budget],
    req: AuthorizeRequest,
    config: EnforcementConfig,
    *,
    price: PriceFn,
    take: TakeFn,
    reserve: ReserveFn,
    release: ReleaseFn,
) -> Ruling:
    """The one budget rule: kill-switch -> rate limits (shedding) -> reservation -> throttle.

    The edges apply the atomic steps: ``take`` draws from all bucket specs or none (with the
    priority's shed reserve), ``reserve`` checks ``budget_verdict`` on every matching budget of
    one basis and adds the estimate (tokens x ``price(basis)``) in one step, ``release`` gives
    the held reservations back. Matching budgets of both bases hold one reservation per basis
    (cost first); a refusal of either releases the other. ``decide`` runs this over a snapshot
    in memory; the Enforcer runs it over the Redis or SQL backends.
    Details: rate-limit buckets stay drawn when a later step refuses; a request id reserved
    before is answered as before (no second reservation, no throttle).
    """
    killed = decide_kill(kills, req)
    if killed is not None:
        return Ruling(killed)
    specs = bucket_specs(rules, req, (), config.throttle_rpm)
    if specs:
        ok, spec, retry = take(specs, config.shed_reserve[req.priority])
        if not ok and spec is not None:
            return Ruling(Decision(False, spec.reason, retry, detail=spec.key))
    matching = [b for b in budgets if b.scope.matches(req.customer, req.model, req.request_type)]
    if not matching:
        return Ruling(ALLOW)
    held: list[Basis] = []
    levels: list[tuple[Budget, Level]] = []
    est_total = 0
    for basis in BASES:
        group = [b for b in matching if b.basis == basis]
        if not group:
            continue
        est = estimate_micros(price(basis), req.estimated_tokens, req.estimated_input_tokens)
        got = reserve(basis, group, est, req.estimated_tokens)
        if got.duplicate:
            if not got.decision.allowed:
                if held:
                    release(held)
                return Ruling(got.decision)
            est_total += est
            continue
        if not got.decision.allowed:
            if held:
                release(held)
            return Ruling(got.decision)
        held.append(basis)
        levels += got.levels
        est_total += est
    if not held:  # a repeated authorize of a request that holds its reservations
        return Ruling(ALLOW, (), est_total, covered=True)
    slow = throttled(levels)
    if slow:
        ok, spec, retry = take(bucket_specs((), req, slow, config.throttle_rpm), 0.0)
        if not ok and spec is not None:
            release(held)
            return Ruling(Decision(False, "budget_throttled", retry, budget=spec.key))
    return Ruling(ALLOW, tuple(held), est_total, covered=True)


@dataclass(frozen=True)
class Snapshot:
    """Everything ``decide`` reads: kill-switches, rate rules and buckets, budgets and levels."""

    kills: frozenset[tuple[KillScope, str]] = frozenset()
    rules: tuple[RateRule, ...] = ()
    buckets: Mapping[str, Bucket] = field(default_factory=dict)
    budgets: tuple[tuple[Budget, Level], ...] = ()


@dataclass(frozen=True)
class Outcome:
    """``decide``'s answer: the decision, the buckets it drew (to store), the levels after."""

    decision: Decision
    buckets: dict[str, Bucket]
    levels: dict[int, Level]


def decide(
    state: Snapshot,
    req: AuthorizeRequest,
    now: datetime,
    config: EnforcementConfig,
    price: PriceFn | None = None,
) -> Outcome:
    """``authorize_rule`` over a snapshot in memory (the reference the backends are tested on).

    Returns: the decision, every bucket drawn from (rate-limit buckets stay drawn when the
    budget refuses, as in production), and each budget's levels after the reservation.
    """
    buckets = dict(state.buckets)
    drawn: dict[str, Bucket] = {}
    levels = {b.id: lv for b, lv in state.budgets}
    held: dict[Basis, tuple[list[int], int, int]] = {}

    def take_all(
        specs: Sequence[BucketSpec], reserve: float
    ) -> tuple[bool, BucketSpec | None, float | None]:
        after: dict[str, Bucket] = {}
        for s in specs:
            use = reserve if s.reason.startswith("rate_limited") else 0.0
            ok, b, retry = take(
                buckets.get(s.key),
                capacity=s.capacity,
                rate_per_s=s.rate_per_s,
                cost=s.cost,
                reserve=use,
                now=now,
            )
            if not ok:
                return False, s, retry
            after[s.key] = b
        buckets.update(after)
        drawn.update(after)
        return True, None, None

    def reserve(basis: Basis, budgets: Sequence[Budget], est_m: int, est_t: int) -> Reserved:
        pairs = tuple((b, levels[b.id]) for b in budgets)
        d = decide_budgets(pairs, est_m, est_t, now)
        if d.allowed:
            for b in budgets:
                levels[b.id] = levels[b.id].add(est_m, est_t, reserved=True)
            held[basis] = ([b.id for b in budgets], est_m, est_t)
        return Reserved(d, pairs)

    def release(bases: Sequence[Basis]) -> None:
        for basis in bases:
            ids, m, t = held.pop(basis)
            for i in ids:
                levels[i] = levels[i].add(-m, -t, reserved=True)

    ruling = authorize_rule(
        state.kills,
        state.rules,
        [b for b, _ in state.budgets],
        req,
        config,
        price=price or (lambda _basis: config.price(req.model, req.customer)),
        take=take_all,
        reserve=reserve,
        release=release,
    )
    return Outcome(ruling.decision, drawn, levels)


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
