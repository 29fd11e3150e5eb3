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
    """A replica owns whole GPUs: gangs, replicas needing a full GPU, strict without MIG."""

    mode = Mode.gpu

    def request(self, w: Workload, type_name: str) -> Request | None:
        """Admitted when nothing smaller can serve the replica on this type."""
        t = gpu_type(type_name)
        strict_no_mig = w.isolation is Isolation.strict and t.mig_family is None
        if not (_needs_whole(w, type_name) or strict_no_mig or _mig_profile(w, type_name) == "7g"):
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


def strategy_table(modes: Iterable[str]) -> dict[Mode, Strategy]:
    """Strategies for the named modes. Raises: ValueError for an unknown mode name."""
    table: dict[Mode, Strategy] = {}
    for name in modes:
        try:
            mode = Mode(name)
        except ValueError:
            raise ValueError(
                f"unknown sharing mode {name!r}; known: {[m.value for m in Mode]}"
            ) from None
        table[mode] = STRATEGY_TYPES[mode]()
    return table
