"""Names of the ledger's row kinds and reserved rows (pure: no DB imports)."""

from __future__ import annotations

from enum import StrEnum

IDLE = "__idle__"
UNALLOCATED = "__unallocated__"


class LedgerKind(StrEnum):
    """What a ledger row is: billed to a tenant, a model's idle allocation, or unallocated GPU."""

    attributed = "attributed"
    idle = "idle"
    unallocated = "unallocated"
