"""Enforcement settings: the ``enforcement`` section of BillingConfig."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, HttpUrl, model_validator

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")


class TokenPrice(BaseModel):
    """The rate card of one model: USD per million tokens.

    Details: USD per million tokens is exactly micro-USD per token, the unit counters use.
    """

    input_usd_per_mtok: float = Field(default=0.5, ge=0)
    output_usd_per_mtok: float = Field(default=1.5, ge=0)


def _default_reserve() -> dict[Priority, float]:
    return {"high": 0.0, "normal": 0.2, "low": 0.5}


class EnforcementConfig(BaseModel):
    """Budgets, reservations, rate limits, load shedding, kill-switch propagation, alerts."""

    backend: Literal["auto", "sql", "redis"] = Field(
        default="auto",
        description=(
            "Where reservations and token buckets live. sql: the database (SELECT ... FOR UPDATE "
            "on PostgreSQL, BEGIN IMMEDIATE on SQLite) with in-process buckets; redis: atomic "
            "Lua scripts (needed for exact rate limits with several API workers); auto: redis "
            "when a redis_url is configured, else sql."
        ),
    )
    default_price: TokenPrice = TokenPrice()
    prices: dict[str, TokenPrice] = Field(
        default_factory=dict, description="Rate card per model; others use default_price."
    )
    customer_prices: dict[str, dict[str, TokenPrice]] = Field(
        default_factory=dict,
        description="Per-customer overrides of the rate card: customer -> model -> price.",
    )
    cost_fallback: TokenPrice | None = Field(
        default=None,
        description="Cost rate of a model with no ledger history ('cost' budgets); unset: "
        "the model's rate card entry (an upper bound while nothing is measured).",
    )
    cost_rate_window_h: int = Field(
        default=168, ge=1, le=24 * 90, description="Ledger hours the measured cost rate reads."
    )
    rates_refresh_s: float = Field(
        default=300.0, gt=0, description="How often a worker re-measures cost rates."
    )
    reservation_ttl_s: float = Field(
        default=300.0, gt=0, le=86_400, description="A reservation not reconciled by then expires."
    )
    shed_reserve: dict[Priority, float] = Field(
        default_factory=_default_reserve,
        description=(
            "Load shedding: a request of this priority is admitted by a token bucket only if the "
            "bucket keeps at least this fraction of its capacity after the take, so low "
            "priority is shed first when buckets drain."
        ),
    )
    throttle_rpm: float = Field(
        default=60.0,
        gt=0,
        description="Requests/min a 'throttle' budget allows past its soft line.",
    )
    refresh_s: float = Field(
        default=1.0, gt=0, le=60, description="Max staleness of cached budgets and kill-switches."
    )
    evaluate_interval_s: int = Field(default=30, ge=1)
    alert_webhook_url: HttpUrl | None = None
    alert_timeout_s: float = Field(default=2.0, gt=0)
    metrics_public: bool = Field(default=True, description="Serve /metrics without an API key.")
    metrics_customer_labels: bool = Field(
        default=False,
        description="Name customers in /metrics bucket labels (off: anyone who can scrape "
        "/metrics would read the tenant list; per-customer figures are in /v1/costs).",
    )

    @model_validator(mode="after")
    def _reserves(self) -> EnforcementConfig:
        for p in PRIORITIES:
            v = self.shed_reserve.setdefault(p, 0.0)
            if not 0 <= v < 1:
                raise ValueError(f"shed_reserve.{p} must be in [0, 1)")
        return self

    def price(self, model: str, customer: str | None = None) -> TokenPrice:
        """The rate card entry of ``model`` (``customer``'s override when it has one)."""
        own = self.customer_prices.get(customer, {}) if customer is not None else {}
        return own.get(model) or self.prices.get(model, self.default_price)

    def min_rpm(self) -> float:
        """The smallest rpm whose bucket admits every priority: a request (cost 1) passes only
        if the bucket keeps ``shed_reserve[p]`` x capacity, so capacity >= 1 / (1 - reserve)."""
        return max(1.0 / (1.0 - r) for r in self.shed_reserve.values())

    def rpm_problem(self, rpm: float | None) -> str | None:
        """Why a rate limit of ``rpm`` requests/min cannot work as configured (None: it can)."""
        floor = self.min_rpm()
        if rpm is None or rpm >= floor:
            return None
        p, r = max(self.shed_reserve.items(), key=lambda kv: kv[1])
        return (
            f"rpm {rpm:g} is below the minimum {floor:g}: a bucket of {rpm:g} requests never "
            f"keeps the {r:.0%} that {p!r} priority must leave after a request, so it would "
            f"never admit it (set rpm >= {floor:g}, or lower enforcement.shed_reserve.{p})"
        )
