"""The protocols of the enforcement edges: where reservations and token buckets live."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from billing.enforcement.domain import BucketSpec, Budget, Charge, Decision, Level, SettleResult


@dataclass(frozen=True)
class Reserved:
    """The outcome of a reservation attempt and the matching budgets' levels before it."""

    decision: Decision
    levels: tuple[tuple[Budget, Level], ...]
    duplicate: bool = False


class ReservationBackend(Protocol):
    """Budget counters and reservations, updated atomically across every API worker.

    ``reserve`` must check and add in one atomic step (the hard-budget guarantee);
    ``settle`` and ``release`` must be idempotent per key and safe without a matching reserve.
    """

    name: str

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
        """Reserve the estimate on every budget, or none when one would break its limit.

        A key reserved before is not reserved twice (``duplicate``; allowed if still held).
        """
        ...

    def release(self, key: str, now: datetime) -> bool:
        """Give a held reservation back (True if it was held)."""
        ...

    def settle(
        self, charges: Sequence[Charge], budgets: Sequence[Budget], now: datetime
    ) -> SettleResult:
        """Replace reservations by actual usage; charge unreserved events to ``budgets`` in scope.

        Invariant: a key is counted at most once, whatever the number of calls.
        """
        ...

    def expire(self, now: datetime) -> int:
        """Release every held reservation past its expiry; returns how many."""
        ...

    def levels(self, budgets: Sequence[Budget], now: datetime) -> dict[int, Level]:
        """Each budget's counters in its current period."""
        ...

    def adjust(self, budget: Budget, micros: int, tokens: int, now: datetime) -> None:
        """Add a correction to a budget's spent in its current period (reconcile to the truth)."""
        ...

    def in_flight(self) -> int:
        """Reservations currently held."""
        ...

    def forget(self, budget_id: int) -> None:
        """Drop a deleted budget's counters (idempotent)."""
        ...


class BucketBackend(Protocol):
    """Token buckets; ``take`` draws from all specs or from none, atomically."""

    name: str

    def take(
        self, specs: Sequence[BucketSpec], reserve: float, now: datetime
    ) -> tuple[bool, BucketSpec | None, float | None]:
        """(admitted, the refusing bucket, retry-after seconds)."""
        ...

    def levels(self, keys: Sequence[str], now: datetime) -> dict[str, float]:
        """Current levels (for metrics)."""
        ...


class Publisher(Protocol):
    """Tells every worker that policy changed (kill-switch, budgets, rate limits)."""

    def publish(self, what: str) -> None:
        """Send a change notice (best effort; workers also poll)."""
        ...


class DeploymentScaler(Protocol):
    """What a model kill-switch needs from the cluster (the scheduler's Kubernetes applier)."""

    def scale_model(self, model: str, replicas: int) -> int:
        """Scale the model's Deployment to ``replicas``; returns the replica count before."""
        ...
