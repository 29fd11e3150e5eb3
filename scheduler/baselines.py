"""Baseline packers for comparison: first-fit and best-fit in arrival order (numpy, pure).

Same rules as ``plan``: a replica needing whole GPUs takes untouched GPUs of one node whose
sharing is unset or none; a fractional replica takes SM share and memory on a GPU of a node
that is unset or shares by MPS (which admits shared and best-effort classes). Strict
replicas on GPUs without MIG take whole GPUs. Every replica's CPU and host memory must fit
its node's allocatable (``snapshot.nodes``; a node not listed there is not limited).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler.catalog import gpu_type
from scheduler.model import Isolation, Snapshot, Workload
from scheduler.strategies import compute_milli

UNSET, EXCLUSIVE, SHARED = 0, 1, 2
FULL = 1000


@dataclass(frozen=True)
class BaselineResult:
    """What a baseline packer did (``gpu_share_placed``: Σ GPUs x share of placed replicas)."""

    placed: int
    unplaced: int
    gpus_used: int
    usd_per_hour: float
    gpu_share_placed: float = 0.0


def whole_gpu(w: Workload, types: list[str]) -> bool:
    """Whether the replica takes whole GPUs on every type of the fleet."""
    return (
        w.gpus > 1
        or all(w.compute_on(t) >= 1.0 for t in types)
        or (w.isolation is Isolation.strict and all(gpu_type(t).mig_family is None for t in types))
    )


def replica_share(w: Workload, types: list[str]) -> float:
    """GPUs a replica holds: ``gpus`` when whole, else its SM share."""
    return float(w.gpus) if whole_gpu(w, types) else min(1.0, w.compute)


class HostFleet:
    """GPUs as a (node x slot) grid of free SM milli (-1: no GPU), with node CPU / memory."""

    def __init__(self, snapshot: Snapshot) -> None:
        """Raises: KeyError for an unknown GPU type."""
        gpus = snapshot.gpus
        self.gpus = gpus
        self.node_names = list(dict.fromkeys(g.node for g in gpus))
        index = {n: i for i, n in enumerate(self.node_names)}
        per_node = [0] * len(self.node_names)
        self.where: list[tuple[int, int]] = []
        for g in gpus:
            i = index[g.node]
            self.where.append((i, per_node[i]))
            per_node[i] += 1
        shape = (len(self.node_names), max(per_node, default=0))
        self.free = np.full(shape, -1.0)
        self.mem = np.zeros(shape)
        self.type_idx = np.full(shape, -1, dtype=np.int64)
        self.type_names = sorted({g.gpu_type for g in gpus})
        for g, (i, s) in zip(gpus, self.where, strict=True):
            self.free[i, s] = FULL
            self.mem[i, s] = gpu_type(g.gpu_type).memory_mib
            self.type_idx[i, s] = self.type_names.index(g.gpu_type)
        inf = float("inf")
        caps = {n.name: n for n in snapshot.nodes}
        self.cpu_free = np.array(
            [
                inf if (c := caps.get(n)) is None or c.cpu_milli is None else c.cpu_milli
                for n in self.node_names
            ],
            dtype=np.float64,
        )
        self.mem_free = np.array(
            [
                inf if (c := caps.get(n)) is None or c.mem_mib is None else c.mem_mib
                for n in self.node_names
            ],
            dtype=np.float64,
        )
        self.node_mode = np.zeros(len(self.node_names), dtype=np.int64)
        self.touched = np.zeros(shape, dtype=bool)
        self.placed = self.unplaced = 0
        self.share = 0.0

    def allowed(self, w: Workload) -> npt.NDArray[np.bool_]:
        """GPU slots of a type ``w`` allows."""
        ok = np.array([w.allows(t) for t in self.type_names] + [False])
        return np.asarray(ok[self.type_idx], dtype=bool)

    def _host_ok(self, w: Workload) -> npt.NDArray[np.bool_]:
        return (self.cpu_free >= w.cpu_milli) & (self.mem_free >= w.host_mem_mib)

    def untouched_slots(self, node: int, allowed: npt.NDArray[np.bool_]) -> list[int]:
        """Untouched allowed GPU slots of ``node``, in slot order."""
        return [
            int(s)
            for s in np.flatnonzero(allowed[node] & ~self.touched[node] & (self.free[node] >= FULL))
        ]

    def whole_candidates(self, w: Workload, allowed: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
        """Nodes that can take ``w.gpus`` untouched GPUs and the replica's CPU / memory."""
        counts = (allowed & ~self.touched & (self.free >= FULL)).sum(axis=1)
        ok = (self.node_mode != SHARED) & (counts >= w.gpus) & self._host_ok(w)
        return np.flatnonzero(ok)

    def share_candidates(
        self, w: Workload, allowed: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.int64]]:
        """(node, slot, milli) of every GPU that can take a fractional replica of ``w``."""
        milli_t = np.array([compute_milli(w, t) for t in self.type_names] + [FULL + 1])
        milli = milli_t[self.type_idx]
        ok = allowed & (self.free >= milli) & (self.mem >= w.mem_mib)
        ok &= ((self.node_mode != EXCLUSIVE) & self._host_ok(w))[:, None]
        nodes, slots = np.nonzero(ok)
        return nodes, slots, milli[nodes, slots]

    def take_whole(self, node: int, slots: list[int], w: Workload) -> None:
        """Give ``slots`` of ``node`` to one replica."""
        self.free[node, slots] = 0
        self.touched[node, slots] = True
        self.node_mode[node] = EXCLUSIVE
        self._book(node, w, float(len(slots)))

    def take_share(self, node: int, slot: int, milli: int, w: Workload) -> None:
        """Give ``milli`` SM share and the replica's memory on one GPU."""
        self.free[node, slot] -= milli
        self.mem[node, slot] -= w.mem_mib
        self.touched[node, slot] = True
        self.node_mode[node] = SHARED
        self._book(node, w, min(1.0, w.compute))

    def _book(self, node: int, w: Workload, share: float) -> None:
        self.cpu_free[node] -= w.cpu_milli
        self.mem_free[node] -= w.host_mem_mib
        self.placed += 1
        self.share += share

    def result(self) -> BaselineResult:
        """Totals: replicas placed / not, GPUs touched and their USD/hour, share placed."""
        used = [self.touched[i, s] for i, s in self.where]
        usd = float(sum(g.usd_per_hour for g, u in zip(self.gpus, used, strict=True) if u))
        return BaselineResult(
            self.placed, self.unplaced, int(sum(used)), round(usd, 6), round(self.share, 3)
        )


def pack_baseline(snapshot: Snapshot, order: list[Workload], *, best: bool) -> BaselineResult:
    """First-fit (``best=False``) or best-fit of one replica after another, in ``order``.

    Details: first-fit takes the lowest-index feasible GPU (or node for whole GPUs); best-fit
    the feasible GPU with the least free SM share (node with the fewest untouched GPUs).
    """
    fleet = HostFleet(snapshot)
    for w in order:
        allowed = fleet.allowed(w)
        if whole_gpu(w, fleet.type_names):
            nodes = fleet.whole_candidates(w, allowed)
            if not len(nodes):
                fleet.unplaced += 1
                continue
            if best:
                counts = (allowed & ~fleet.touched & (fleet.free >= FULL)).sum(axis=1)
                node = int(nodes[np.argmin(counts[nodes])])
            else:
                node = int(nodes[0])
            fleet.take_whole(node, fleet.untouched_slots(node, allowed)[: w.gpus], w)
        else:
            node_idx, slot_idx, milli = fleet.share_candidates(w, allowed)
            if not len(node_idx):
                fleet.unplaced += 1
                continue
            i = int(np.argmin(fleet.free[node_idx, slot_idx])) if best else 0
            fleet.take_share(int(node_idx[i]), int(slot_idx[i]), int(milli[i]), w)
    return fleet.result()
