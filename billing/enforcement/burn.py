"""Budget burn for the dashboard and the API: spent vs the soft and hard lines, per budget.

``spent`` is ``billing.enforcement.spend.period_spent`` (the truth from the database, in the
budget's basis: ledger cost + measured-rate tail, or the rate card); ``reserved`` comes from the
reservation backend's counters. ``drift`` is what the live counters say minus the truth: the
budget job reconciles 'cost' counters to it on every run; 'price' counters stay within
micro-USD rounding per event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine

from billing.enforcement.backend import ReservationBackend
from billing.enforcement.config import EnforcementConfig
from billing.enforcement.domain import Budget, Level, burn_ratio, period_bounds
from billing.enforcement.models import MICROS, BudgetAction, Period
from billing.enforcement.rates import Rates, load_rates
from billing.enforcement.schemas import BurnPublic
from billing.enforcement.spend import period_spent
from billing.enforcement.sql_backend import SqlReservations
from billing.enforcement.store import load_policy


@dataclass(frozen=True)
class BudgetBurn:
    """One budget in its current period. Amounts in micro-USD and tokens."""

    budget: Budget
    period_start: datetime
    period_end: datetime
    spent_micros: int
    spent_tokens: int
    reserved_micros: int
    reserved_tokens: int
    counter_spent_micros: int

    @property
    def customer(self) -> str | None:
        """The budget's customer scope (None: any)."""
        return self.budget.scope.customer

    @property
    def ratio(self) -> float:
        """(spent + reserved) / limit, the largest over the USD and token limits."""
        return burn_ratio(
            self.budget,
            Level(self.spent_micros, self.spent_tokens, self.reserved_micros, self.reserved_tokens),
        )

    @property
    def status(self) -> str:
        """'hard' at the limit, 'soft' past the soft line, else 'ok'."""
        r = self.ratio
        return "hard" if r >= 1 else "soft" if r >= self.budget.soft_ratio else "ok"

    @property
    def drift_micros(self) -> int:
        """Live counter minus truth (0 when the counters are exact)."""
        return self.counter_spent_micros - self.spent_micros

    def public(self) -> BurnPublic:
        """As the API returns it (USD)."""
        b = self.budget
        lim = None if b.limit_micros is None else b.limit_micros / MICROS
        return BurnPublic(
            name=b.name,
            scope=b.scope.label(),
            period=Period(b.period),
            period_start=self.period_start,
            period_end=self.period_end,
            limit_usd=lim,
            limit_tokens=b.limit_tokens,
            soft_usd=None if lim is None else lim * b.soft_ratio,
            spent_usd=self.spent_micros / MICROS,
            spent_tokens=self.spent_tokens,
            reserved_usd=self.reserved_micros / MICROS,
            reserved_tokens=self.reserved_tokens,
            ratio=self.ratio,
            status=self.status,
            action=BudgetAction(b.action),
            basis=b.basis,
        )


def budget_burn(
    engine: Engine,
    config: EnforcementConfig,
    now: datetime,
    *,
    reservations: ReservationBackend | None = None,
    budgets: Sequence[Budget] | None = None,
    rates: Rates | None = None,
    resolution_s: int = 3600,
) -> list[BudgetBurn]:
    """Burn of every budget (or ``budgets``) at ``now``; reserved from ``reservations``
    (default: the database counters); cost rates ``rates`` (default: measured now);
    ``resolution_s`` is the ledger's bucket (BillingConfig.ledger_resolution_s)."""
    budgets = list(load_policy(engine).budgets if budgets is None else budgets)
    rates = rates or load_rates(engine, config, now)
    backend = reservations or SqlReservations(engine)
    levels = backend.levels(budgets, now)
    out = []
    for b in budgets:
        start, end = period_bounds(b.period, now)
        micros, tokens = period_spent(engine, b, rates, now, resolution_s=resolution_s)
        lv = levels.get(b.id, Level())
        out.append(
            BudgetBurn(
                b,
                start,
                end,
                micros,
                tokens,
                lv.reserved_micros,
                lv.reserved_tokens,
                lv.spent_micros,
            )
        )
    return out
