"""FGD baseline: fragmentation gradient descent (Weng et al., "Beware of Fragmentation",
USENIX ATC 2023), under the same placement rules as ``scheduler.baselines`` (pure, numpy).

Details: the target workload M is the demand itself, as classes (GPU share d per GPU, GPUs
k) with their popularity p_m and median CPU / host memory. A node's fragmentation for class
m is F_n(m) = all of its free GPU share when m cannot run there (CPU, memory, no GPU with
d free, fewer than k untouched GPUs, or the node's sharing config forbids it), else the
free share of GPUs that cannot hold m (free < d for d < 1, free < 1 GPU for whole-GPU m);
F_n(M) = Σ p_m F_n(m). Each replica, in the given order, goes to the feasible GPU (whole
GPUs: node) whose placement increases F_n(M) least (ties: lowest index). GPU types allowed
by a class are not modelled in F (every class is taken to run on every type).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from scheduler.baselines import EXCLUSIVE, SHARED, BaselineResult, HostFleet, whole_gpu
from scheduler.model import Snapshot, Workload
from scheduler.strategies import compute_milli

FULL = 1000
Arr = npt.NDArray[np.float64]


def target_classes(demand: Sequence[Workload]) -> list[tuple[int, int, float, float, float]]:
    """(milli per GPU, GPUs, CPU milli, host memory MiB, popularity) per class of ``demand``."""
    groups: dict[tuple[int, int], list[Workload]] = {}
    for w in demand:
        d = FULL if w.gpus > 1 or w.compute >= 1.0 else compute_milli(w, w.ref_type)
        groups.setdefault((d, w.gpus), []).append(w)
    n = max(1, len(demand))
    return [
        (
            d,
            k,
            float(np.median([w.cpu_milli for w in ws])),
            float(np.median([w.host_mem_mib for w in ws])),
            len(ws) / n,
        )
        for (d, k), ws in sorted(groups.items())
    ]


class _Frag:
    """Vectorised F_n(M) for rows of nodes (free share per GPU slot, -1: no GPU there)."""

    def __init__(self, classes: list[tuple[int, int, float, float, float]]) -> None:
        self.d = np.array([c[0] for c in classes], dtype=np.float64)
        self.k = np.array([c[1] for c in classes], dtype=np.float64)
        self.cpu = np.array([c[2] for c in classes], dtype=np.float64)
        self.mem = np.array([c[3] for c in classes], dtype=np.float64)
        self.p = np.array([c[4] for c in classes], dtype=np.float64)
        self.whole = self.d >= FULL

    def __call__(self, free: Arr, cpu: Arr, mem: Arr, mode: npt.NDArray[np.int64]) -> Arr:
        """F_n(M) for each row."""
        valid = free >= 0
        f = np.where(valid, free, 0.0)
        total = f.sum(axis=1)  # (R,)
        host = (cpu[:, None] >= self.cpu[None, :]) & (mem[:, None] >= self.mem[None, :])
        untouched = ((f >= FULL) & valid).sum(axis=1)
        fits_frac = f.max(axis=1)[:, None] >= self.d[None, :]
        fits_whole = untouched[:, None] >= self.k[None, :]
        ok_mode = np.where(self.whole[None, :], mode[:, None] != SHARED, mode[:, None] != EXCLUSIVE)
        feasible = host & ok_mode & np.where(self.whole[None, :], fits_whole, fits_frac)
        need = np.minimum(self.d, FULL)  # (T,)
        stranded = np.where(
            valid[:, :, None] & (f[:, :, None] < need[None, None, :]), f[:, :, None], 0
        )
        frag = np.where(feasible, stranded.sum(axis=1), total[:, None])  # (R, T)
        return np.asarray(frag @ self.p, dtype=np.float64)


def pack_fgd(snapshot: Snapshot, order: Sequence[Workload]) -> BaselineResult:
    """FGD, one replica after another in ``order`` (see the module doc)."""
    fleet = HostFleet(snapshot)
    frag = _Frag(target_classes(order))
    score = frag(fleet.free, fleet.cpu_free, fleet.mem_free, fleet.node_mode)
    for w in order:
        allowed = fleet.allowed(w)
        if whole_gpu(w, fleet.type_names):
            nodes = fleet.whole_candidates(w, allowed)
            if not len(nodes):
                fleet.unplaced += 1
                continue
            rows = fleet.free[nodes].copy()
            picks = [fleet.untouched_slots(n, allowed)[: w.gpus] for n in nodes]
            for r, pk in enumerate(picks):
                rows[r, pk] = 0.0
            after = frag(
                rows,
                fleet.cpu_free[nodes] - w.cpu_milli,
                fleet.mem_free[nodes] - w.host_mem_mib,
                np.full(len(nodes), EXCLUSIVE, dtype=np.int64),
            )
            best = int(np.argmin(after - score[nodes]))
            fleet.take_whole(int(nodes[best]), picks[best], w)
            node = int(nodes[best])
        else:
            node_idx, slot_idx, milli = fleet.share_candidates(w, allowed)
            if not len(node_idx):
                fleet.unplaced += 1
                continue
            rows = fleet.free[node_idx].copy()
            rows[np.arange(len(node_idx)), slot_idx] -= milli
            after = frag(
                rows,
                fleet.cpu_free[node_idx] - w.cpu_milli,
                fleet.mem_free[node_idx] - w.host_mem_mib,
                np.full(len(node_idx), SHARED, dtype=np.int64),
            )
            best = int(np.argmin(after - score[node_idx]))
            node = int(node_idx[best])
            fleet.take_share(node, int(slot_idx[best]), int(milli[best]), w)
        score[node] = frag(
            fleet.free[node : node + 1],
            fleet.cpu_free[node : node + 1],
            fleet.mem_free[node : node + 1],
            fleet.node_mode[node : node + 1],
        )[0]
    return fleet.result()
