"""How a replica can hold a GPU: a strategy table keyed by Mode (like k8s' strategy type map).

Each strategy says whether it admits a workload on a GPU type and what the replica requests
there. ``strategy_table`` fails at construction for an unknown mode name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Protocol

from scheduler import mig
from scheduler.catalog import gpu_type
from scheduler.framework import Request
from scheduler.model import Isolation, Mode, Workload

FULL = 1000  # compute milli of one whole GPU


def compute_milli(w: Workload, type_name: str) -> int:
    """The replica's SM share on this GPU type, in whole percent, as milli (MPS thread %)."""
    return min(FULL, max(10, math.ceil(round(w.compute_on(type_name) * 100, 6)) * 10))


class Strategy(Protocol):
    """One way of holding a GPU."""

    mode: Mode

    def request(self, w: Workload, type_name: str) -> Request | None:
        """What a replica of ``w`` asks on a GPU of this type; None if not admitted here."""
        ...


def _needs_whole(w: Workload, type_name: str) -> bool:
    return w.gpus > 1 or w.compute_on(type_name) >= 1.0


class WholeGpu:
    """A replica owns whole GPUs: gangs, replicas needing a full GPU, strict without MIG, and
    under equal MPS shares a replica no share of 1/2 or less covers."""

    mode = Mode.gpu

    def __init__(self, equal_mps: bool = False) -> None:
        """``equal_mps``: MPS is planned in the device plugin's equal shares."""
        self.equal_mps = equal_mps

    def request(self, w: Workload, type_name: str) -> Request | None:
        """Admitted when nothing smaller can serve the replica on this type."""
        t = gpu_type(type_name)
        strict_no_mig = w.isolation is Isolation.strict and t.mig_family is None
        no_share = self.equal_mps and not equal_mps_replicas(w, type_name, MIN_MPS_REPLICAS)
        if not (
            _needs_whole(w, type_name)
            or strict_no_mig
            or no_share
            or _mig_profile(w, type_name) == "7g"
        ):
            return None
        return Request(Mode.gpu, FULL, float(math.ceil(w.mem_mib / w.gpus)), 1.0)


def _mig_profile(w: Workload, type_name: str) -> str | None:
    """The smallest classic MIG profile with enough SM slices and memory, or None."""
    family = gpu_type(type_name).mig_family
    if family is None or w.gpus > 1:
        return None
    fam = mig.FAMILIES[family]
    need = w.compute_on(type_name)
    for key in mig.CLASSIC[family]:
        p = fam.profile(key)
        enough_sm = p.sm_slices / fam.sm_slices >= need - 1e-9
        if enough_sm and mig.profile_memory_mib(type_name, key) >= w.mem_mib:
            return key
    return None


class MigSlice:
    """A replica holds a MIG GPU instance: the smallest profile below the full GPU that fits."""

    mode = Mode.mig

    def request(self, w: Workload, type_name: str) -> Request | None:
        """Admitted for every isolation class on MIG-capable types (not for 7g: use a GPU)."""
        key = _mig_profile(w, type_name)
        family = gpu_type(type_name).mig_family
        if key is None or key == "7g" or family is None:
            return None
        compute = round(mig.price_fraction(family, key) * FULL)
        mem = float(mig.profile_memory_mib(type_name, key))
        return Request(Mode.mig, compute, mem, mig.price_fraction(family, key), key)


class _Shared:
    mode = Mode.mps
    admitted: frozenset[Isolation] = frozenset()

    def request(self, w: Workload, type_name: str) -> Request | None:
        """Admitted for the classes in ``admitted`` when less than a whole GPU is needed."""
        if w.isolation not in self.admitted or _needs_whole(w, type_name):
            return None
        milli = compute_milli(w, type_name)
        return Request(self.mode, milli, float(math.ceil(w.mem_mib)), milli / FULL)


class MpsShare(_Shared):
    """A replica is an MPS client with a thread % and a pinned memory limit (shared classes)."""

    mode = Mode.mps
    admitted = frozenset({Isolation.shared, Isolation.best_effort})


MIN_MPS_REPLICAS = 2  # the device plugin's MPS sharing needs replicas >= 2
LADDER = (16, 12, 10, 8, 6, 5, 4, 3, 2)  # coarser splits also offered to a replica


def equal_mps_replicas(w: Workload, type_name: str, max_replicas: int) -> int:
    """The most MPS replicas per GPU (2..max) whose equal share still covers one replica of
    ``w`` (SM fraction and memory), or 0 when even half a GPU is too little."""
    need_sm = w.compute_on(type_name)
    mem = gpu_type(type_name).memory_mib
    for r in range(max_replicas, MIN_MPS_REPLICAS - 1, -1):
        if need_sm <= 1.0 / r + 1e-9 and w.mem_mib <= mem // r:
            return r
    return 0


def equal_mps_request(type_name: str, replicas: int) -> Request:
    """One of ``replicas`` equal MPS shares of a GPU: 1/replicas of its SMs and memory."""
    mem = float(gpu_type(type_name).memory_mib // replicas)
    return Request(Mode.mps, FULL // replicas, mem, 1.0 / replicas, replicas=replicas)


class EqualMpsShare:
    """A replica takes one of the node's equal MPS shares (the device plugin's
    ``sharing.mps.resources[].replicas``: every client gets 1/replicas of SMs and memory and
    may ask for one share only). Offered at the most replicas that still cover the replica,
    and at the coarser splits of ``LADDER`` (so it can join nodes split more coarsely)."""

    mode = Mode.mps
    admitted = MpsShare.admitted

    def __init__(self, max_replicas: int = 48) -> None:
        """``max_replicas``: the most MPS clients a GPU may serve."""
        self.max_replicas = max_replicas

    def requests(self, w: Workload, type_name: str) -> list[Request]:
        """Equal-share requests for ``w`` on this type (none when a share cannot cover it)."""
        if w.isolation not in self.admitted or _needs_whole(w, type_name):
            return []
        top = equal_mps_replicas(w, type_name, self.max_replicas)
        if not top:
            return []
        counts = [top] + [r for r in LADDER if r < top]
        return [equal_mps_request(type_name, r) for r in counts]

    def request(self, w: Workload, type_name: str) -> Request | None:
        """The finest equal share that covers the replica, or None."""
        reqs = self.requests(w, type_name)
        return reqs[0] if reqs else None


class TimeSlice(_Shared):
    """A replica is one time-slice replica of the GPU (best-effort only: no isolation)."""

    mode = Mode.timeslice
    admitted = frozenset({Isolation.best_effort})


STRATEGY_TYPES: Mapping[Mode, type[WholeGpu | MigSlice | MpsShare | TimeSlice]] = {
    Mode.gpu: WholeGpu,
    Mode.mig: MigSlice,
    Mode.mps: MpsShare,
    Mode.timeslice: TimeSlice,
}


def strategy_table(
    modes: Iterable[str], mps_shares: str = "equal", max_mps_clients: int = 48
) -> dict[Mode, Strategy]:
    """Strategies for the named modes; MPS by equal shares per node (the device plugin) or
    per-claim shares (a DRA claim carries each client's thread % and memory limit).

    Raises: ValueError for an unknown mode name or MPS share rule.
    """
    if mps_shares not in ("equal", "per-claim"):
        raise ValueError(f"unknown mps_shares {mps_shares!r}; known: ['equal', 'per-claim']")
    table: dict[Mode, Strategy] = {}
    for name in modes:
        try:
            mode = Mode(name)
        except ValueError:
            raise ValueError(
                f"unknown sharing mode {name!r}; known: {[m.value for m in Mode]}"
            ) from None
        if mode is Mode.mps and mps_shares == "equal":
            table[mode] = EqualMpsShare(max_mps_clients)
        elif mode is Mode.gpu:
            table[mode] = WholeGpu(equal_mps=mps_shares == "equal")
        else:
            table[mode] = STRATEGY_TYPES[mode]()
    return table
