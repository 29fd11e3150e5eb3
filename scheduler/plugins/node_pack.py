"""Score: how much of the node's GPU capacity is held after the placement (node-level best fit).

Filling nodes one at a time keeps the nodes of one sharing config (whole GPUs, MPS,
time-slicing) few, so fewer GPUs are left on nodes whose config or host a later replica
cannot use.
"""

from __future__ import annotations

from scheduler.framework import MAX_SCORE, GpuUse, Request
from scheduler.model import Workload


class NodePackScore:
    """Fuller nodes score higher: (held GPU capacity + what the replica needs of this GPU) /
    node capacity x 100. The replica's need, not its request, so that a coarser equal MPS
    share (which holds more than is needed) does not score higher."""

    name = "NodePack"

    def score(self, w: Workload, req: Request, gpu: GpuUse) -> int:
        """0 when the node's GPU capacity is unknown (0)."""
        if gpu.node_gpu_milli <= 0:
            return 0
        need = min(1000, round(w.compute_on(gpu.gpu_type) * 1000))
        used = gpu.node_gpu_milli - gpu.node_gpu_free_milli + need
        return max(0, min(MAX_SCORE, round(used / gpu.node_gpu_milli * MAX_SCORE)))
