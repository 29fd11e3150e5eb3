"""Enforcement enums (no database imports: the pure rules use them)."""

from __future__ import annotations

from enum import StrEnum


class Period(StrEnum):
    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"


class BudgetAction(StrEnum):
    """What happens at the hard limit (see billing.enforcement.decide)."""

    block = "block"  # deny until the period resets
    throttle = "throttle"  # past the soft line allow throttle_rpm, deny at the hard limit
    kill = "kill"  # deny and trip the kill-switch of the budget's scope


class Basis(StrEnum):
    """What a budget counts: the fleet's attributed GPU cost, or the customer's list price."""

    cost = "cost"  # the ledger's cost_usd (+ the not-yet-rolled-up tail at the measured rate)
    price = "price"  # the rate card (USD per 1M input/output tokens, per-customer overrides)


class KillScope(StrEnum):
    model = "model"
    customer = "customer"
    request_type = "request_type"
    global_ = "global"


class ReservationStatus(StrEnum):
    held = "held"
    reconciled = "reconciled"  # settled by its usage event
    released = "released"  # cancelled by the client or denied after the take
    expired = "expired"  # not settled within reservation_ttl_s
    charged = "charged"  # a usage event without reservation, counted once
