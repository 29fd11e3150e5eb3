"""Baseline packers for comparison: first-fit and best-fit in arrival order (numpy, pure).

Same rules as ``plan``: a replica needing whole GPUs takes untouched GPUs of one node whose
sharing is unset or none; a fractional replica takes SM share and memory on a GPU of a node
that is unset or shares by MPS (which admits shared and best-effort classes). Strict
replicas on GPUs without MIG take whole GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduler.catalog import gpu_type
from scheduler.model import Isolation, Snapshot, Workload
from scheduler.strategies import compute_milli

UNSET, EXCLUSIVE, SHARED = 0, 1, 2


@dataclass(frozen=True)
class BaselineResult:
    """What a baseline packer did."""

    placed: int
    unplaced: int
    gpus_used: int
    usd_per_hour: float


def _whole(w: Workload, types: list[str]) -> bool:
    return (
        w.gpus > 1
        or all(w.compute_on(t) >= 1.0 for t in types)
        or (w.isolation is Isolation.strict and all(gpu_type(t).mig_family is None for t in types))
    )


def pack_baseline(snapshot: Snapshot, order: list[Workload], *, best: bool) -> BaselineResult:
    """First-fit (``best=False``) or best-fit of one replica after another, in ``order``.

    Details: first-fit takes the lowest-index feasible GPU (or node for whole GPUs); best-fit
    the feasible GPU with the least free SM share (node with the fewest untouched GPUs).
    """
    gpus = snapshot.gpus
    n = len(gpus)
    types = [g.gpu_type for g in gpus]
    type_names = sorted(set(types))
    node_names = list(dict.fromkeys(g.node for g in gpus))
    node_of = np.array([node_names.index(g.node) for g in gpus]) if n else np.zeros(0, int)
    free = np.full(n, 1000, dtype=np.int64)
    mem_free = np.array([gpu_type(t).memory_mib for t in types], dtype=np.float64)
    untouched = np.ones(n, dtype=bool)
    node_mode = np.zeros(len(node_names), dtype=np.int64)
    placed = unplaced = 0
    type_idx = np.array([type_names.index(t) for t in types], dtype=np.int64)
    type_mask = {t: type_idx == i for i, t in enumerate(type_names)}
    for w in order:
        allowed = np.zeros(n, dtype=bool)
        for t in type_names:
            if w.allows(t):
                allowed |= type_mask[t]
        if _whole(w, type_names):
            ok_node = node_mode != SHARED
            counts = np.bincount(node_of[untouched & allowed], minlength=len(node_names))
            cand = np.flatnonzero(ok_node & (counts >= w.gpus))
            if not len(cand):
                unplaced += 1
                continue
            node = cand[np.argmin(counts[cand])] if best else cand[0]
            picks = np.flatnonzero(untouched & allowed & (node_of == node))[: w.gpus]
            untouched[picks] = False
            free[picks] = 0
            node_mode[node] = EXCLUSIVE
        else:
            milli = np.array([compute_milli(w, t) for t in type_names])[type_idx]
            mask = allowed & (free >= milli) & (mem_free >= w.mem_mib)
            mask &= node_mode[node_of] != EXCLUSIVE
            cand = np.flatnonzero(mask)
            if not len(cand):
                unplaced += 1
                continue
            i = cand[np.argmin(free[cand])] if best else cand[0]
            free[i] -= milli[i]
            mem_free[i] -= w.mem_mib
            untouched[i] = False
            node_mode[node_of[i]] = SHARED
        placed += 1
    used = ~untouched
    usd = float(sum(g.usd_per_hour for g, u in zip(gpus, used, strict=True) if u))
    return BaselineResult(placed, unplaced, int(used.sum()), round(usd, 6))
