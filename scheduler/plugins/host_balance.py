"""Score: a replica should not take more host CPU / memory per GPU than its node has left.

A node whose CPU or memory runs out before its GPUs strands those GPUs: no pod can use a GPU
without its host share. For the candidate node, the replica's CPU (memory) per GPU it holds is
compared with the node's free CPU (memory) per free GPU capacity: at or below it the score is
100; above it, node ratio / replica ratio x 100 (the smaller of CPU and memory). So a
CPU-heavy whole-GPU replica goes where CPU is plentiful, and a CPU-light one may use a node
whose host is already tight. ``HostPerGpu`` (the demand's host need per GPU) also groups the
free GPUs the planner offers (``scheduler.state``), so nodes of different balance are offered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.framework import MAX_SCORE, GpuUse, Request
from scheduler.model import Snapshot, Workload


@dataclass(frozen=True)
class HostPerGpu:
    """CPU (milli) and memory (MiB) the demand asks per GPU of share (0: no host demand)."""

    cpu_milli: float
    mem_mib: float

    @classmethod
    def of(cls, snapshot: Snapshot) -> HostPerGpu:
        """Σ replicas' CPU and memory / Σ replicas' GPU share over ``snapshot.workloads``."""
        share = cpu = mem = 0.0
        for w in snapshot.workloads:
            share += w.replicas * (w.gpus if w.gpus > 1 else min(1.0, w.compute))
            cpu += w.replicas * w.cpu_milli
            mem += w.replicas * w.host_mem_mib
        if share <= 0:
            return cls(0.0, 0.0)
        return cls(cpu / share, mem / share)

    def servable(self, cpu_free: float, mem_free: float) -> float:
        """How many GPUs of typical demand the free CPU and memory can serve (inf: no limit)."""
        out = math.inf
        if self.cpu_milli > 0 and cpu_free < math.inf:
            out = min(out, max(0.0, cpu_free) / self.cpu_milli)
        if self.mem_mib > 0 and mem_free < math.inf:
            out = min(out, max(0.0, mem_free) / self.mem_mib)
        return out


def host_balance_score(need: float, held_gpu: float, free: float, free_gpu: float) -> int:
    """100 x min(1, (free / free_gpu) / (need / held_gpu)); 100 when nothing is needed or
    the node's host is unbounded; 0 when the node has no GPU capacity left to compare with."""
    if need <= 0 or held_gpu <= 0 or free == math.inf:
        return MAX_SCORE
    if free_gpu <= 0:
        return 0
    ratio = (max(0.0, free) / free_gpu) / (need / held_gpu)
    return max(0, min(MAX_SCORE, round(ratio * MAX_SCORE)))


class HostBalanceScore:
    """Placements that leave the node's host in step with its free GPUs score higher."""

    name = "HostBalance"

    def score(self, w: Workload, req: Request, gpu: GpuUse) -> int:
        """The smaller of the CPU and memory ``host_balance_score`` on the GPU's node."""
        k = max(1, w.gpus)
        held = req.compute_milli / 1000
        free = gpu.node_gpu_free_milli / 1000
        return min(
            host_balance_score(w.cpu_milli / k, held, gpu.node_cpu_free, free),
            host_balance_score(w.host_mem_mib / k, held, gpu.node_mem_free_mib, free),
        )
