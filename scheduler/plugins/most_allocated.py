"""Score: how full the GPU is after the placement (k8s MostAllocated: best fit)."""

from __future__ import annotations

from scheduler import mig
from scheduler.catalog import gpu_type
from scheduler.framework import MAX_SCORE, GpuUse, Request
from scheduler.model import Mode, Workload


def most_allocated_score(requested: float, used: float, capacity: float) -> int:
    """(used + requested) / capacity x 100, clipped to [0, 100]; 0 capacity gives 0."""
    if capacity <= 0:
        return 0
    return max(0, min(MAX_SCORE, round((used + requested) / capacity * MAX_SCORE)))


class MostAllocatedScore:
    """Tight packing: fuller GPUs score higher (SM share, or SM slices under MIG)."""

    name = "MostAllocated"

    def score(self, w: Workload, req: Request, gpu: GpuUse) -> int:
        """Mean of the compute and memory most-allocated scores (MIG: slices only)."""
        if req.mode is Mode.gpu:
            return MAX_SCORE
        if req.mode is Mode.mig and req.profile is not None:
            family = mig.FAMILIES[gpu_type(gpu.gpu_type).mig_family or "a100"]
            used = sum(family.profile(p).sm_slices for p in gpu.profiles)
            req_slices = family.profile(req.profile).sm_slices
            return most_allocated_score(req_slices, used, family.sm_slices)
        compute = most_allocated_score(req.compute_milli, gpu.compute_used, 1000)
        memory = most_allocated_score(req.mem_mib, gpu.mem_used_mib, gpu.mem_capacity_mib)
        return (compute + memory) // 2
