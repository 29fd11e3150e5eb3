"""Names of the ledger's row kinds and reserved rows (pure: no DB imports)."""

from __future__ import annotations

from enum import StrEnum

IDLE = "__idle__"
UNALLOCATED = "__unallocated__"
UNPRICED = "__unpriced__"


class LedgerKind(StrEnum):
    """What a ledger row is: billed to a tenant, a model's idle allocation, unallocated GPU
    time, or GPU time of a type/pricing class with no price (carries GPU-seconds, 0 cents)."""

    attributed = "attributed"
    idle = "idle"
    unallocated = "unallocated"
    unpriced = "unpriced"
