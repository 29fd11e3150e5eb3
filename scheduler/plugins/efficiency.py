"""Score: how much of what the replica holds it actually needs (MIG rounds up to slices)."""

from __future__ import annotations

from scheduler.framework import MAX_SCORE, GpuUse, Request
from scheduler.model import Workload


def efficiency_score(needed: float, held: float) -> int:
    """needed / held x 100, clipped to [0, 100]; nothing held gives 0."""
    if held <= 0:
        return 0
    return max(0, min(MAX_SCORE, round(needed / held * MAX_SCORE)))


class EfficiencyScore:
    """Penalises waste: a 0.3-GPU model in a 3g slice (3/7) scores 70."""

    name = "Efficiency"

    def score(self, w: Workload, req: Request, gpu: GpuUse) -> int:
        """efficiency_score(the larger of the SM fraction and the memory fraction the model
        needs on this GPU, price share it holds)."""
        mem = w.mem_mib / gpu.mem_capacity_mib if gpu.mem_capacity_mib > 0 else 0.0
        return efficiency_score(min(1.0, max(w.compute_on(gpu.gpu_type), mem)), req.share)
