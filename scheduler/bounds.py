"""Lower bounds on GPUs and cost for a demand, and the one-replica-per-GPU baseline (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scheduler.catalog import gpu_type
from scheduler.model import Bound, Snapshot, Workload
from scheduler.strategies import STRATEGY_TYPES

FULL = 1000


def l2_bound(sizes: Sequence[int], capacity: int = FULL) -> int:
    """Martello-Toth L2 lower bound for 1-D bin packing of integer ``sizes``.

    Details: for k in {0} ∪ {sizes ≤ C/2}: J1 = {w > C-k}, J2 = {C/2 < w ≤ C-k},
    J3 = {k ≤ w ≤ C/2}; L(k) = |J1| + |J2| + max(0, ⌈(ΣJ3 - (|J2|·C - ΣJ2)) / C⌉); L2 = max L(k).
    It is ≥ ⌈Σw / C⌉ (k = 0 gives that bound or better).
    """
    if not sizes:
        return 0
    ws = sorted(sizes)
    best = math.ceil(sum(ws) / capacity)
    half = capacity / 2
    for k in sorted({w for w in ws if w <= half} | {0}):
        n1 = n2 = 0
        s2 = s3 = 0
        for w in ws:
            if w > capacity - k:
                n1 += 1
            elif w > half:
                n2 += 1
                s2 += w
            elif w >= k:
                s3 += w
        room = n2 * capacity - s2
        best = max(best, n1 + n2 + max(0, math.ceil((s3 - room) / capacity)))
    return best


def _fleet_prices(snapshot: Snapshot) -> dict[str, float]:
    prices: dict[str, float] = {}
    for g in snapshot.gpus:
        prices[g.gpu_type] = min(prices.get(g.gpu_type, math.inf), g.usd_per_hour)
    return prices


def replica_sizes(w: Workload, types: Sequence[str]) -> dict[str, int]:
    """The smallest SM share (milli) any strategy gives one replica, per allowed GPU type."""
    out: dict[str, int] = {}
    for t in types:
        if not w.allows(t) or w.mem_mib > gpu_type(t).memory_mib:
            continue
        milli = [
            req.compute_milli
            for cls in STRATEGY_TYPES.values()
            if (req := cls().request(w, t)) is not None
        ]
        if milli:
            out[t] = min(milli)
    return out


def lower_bound(snapshot: Snapshot) -> Bound:
    """No packing of this demand onto these GPU types uses fewer GPUs or USD/hour.

    Details: a replica needing a whole GPU (gang, ≥ 1 GPU, strict without MIG) counts its
    GPUs; the others are items of size min over types of their SM share, and of memory / the
    largest GPU memory; GPUs ≥ whole + max(L2(SM), L2(memory)). Cost ≥ Σ min over types of
    share x price, and ≥ GPUs x the cheapest price. Type availability is relaxed (still valid).
    """
    prices = _fleet_prices(snapshot)
    types = sorted(prices)
    whole = 0
    whole_usd = 0.0
    compute: list[int] = []
    memory: list[int] = []
    share_usd = 0.0
    for w in snapshot.workloads:
        sizes = replica_sizes(w, types)
        if not sizes:
            continue
        smallest = min(sizes.values())
        if smallest >= FULL or w.gpus > 1:
            whole += w.replicas * w.gpus
            whole_usd += w.replicas * w.gpus * min(prices[t] for t in sizes)
            continue
        max_mem = max(gpu_type(t).memory_mib for t in sizes)
        compute += [smallest] * w.replicas
        memory += [math.ceil(w.mem_mib / max_mem * FULL)] * w.replicas
        share_usd += w.replicas * min(sizes[t] / FULL * prices[t] for t in sizes)
    shared = max(l2_bound(compute), l2_bound(memory))
    cheapest = min(prices.values(), default=0.0)
    usd = max(whole_usd + share_usd, whole_usd + shared * cheapest)
    return Bound(whole + shared, round(usd, 6))


def one_per_gpu(snapshot: Snapshot) -> Bound:
    """Every replica on GPUs of its own (the cheapest allowed type it fits), nothing shared."""
    prices = _fleet_prices(snapshot)
    gpus = 0
    usd = 0.0
    for w in snapshot.workloads:
        fits = [
            prices[t]
            for t in prices
            if w.allows(t)
            and w.mem_mib <= gpu_type(t).memory_mib * w.gpus
            and (w.gpus > 1 or w.compute_on(t) <= 1.0)
        ]
        if fits:
            gpus += w.replicas * w.gpus
            usd += w.replicas * w.gpus * min(fits)
    return Bound(gpus, round(usd, 6))
