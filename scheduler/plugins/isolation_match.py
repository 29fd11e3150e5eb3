"""Score: prefer the mode that matches the model's isolation and latency class."""

from __future__ import annotations

from scheduler.framework import MAX_SCORE, GpuUse, Request
from scheduler.model import Isolation, LatencyClass, Mode, Workload

NATURAL = {
    Isolation.strict: Mode.mig,
    Isolation.shared: Mode.mps,
    Isolation.best_effort: Mode.timeslice,
}
STRENGTH = {Mode.timeslice: 0, Mode.mps: 1, Mode.mig: 2, Mode.gpu: 3}


def isolation_match_score(natural: Mode, mode: Mode, interactive: bool) -> int:
    """100 for the natural mode, 50 for a stronger one, 0 for time-slicing an interactive model."""
    if interactive and mode is Mode.timeslice:
        return 0
    if mode is natural:
        return MAX_SCORE
    return MAX_SCORE // 2 if STRENGTH[mode] > STRENGTH[natural] else 0


class IsolationMatchScore:
    """Strict -> MIG, shared -> MPS, best-effort -> time-slicing; interactive avoids slicing."""

    name = "IsolationMatch"

    def score(self, w: Workload, req: Request, gpu: GpuUse) -> int:
        """isolation_match_score for the replica's class and the requested mode."""
        interactive = w.latency is LatencyClass.interactive
        return isolation_match_score(NATURAL[w.isolation], req.mode, interactive)
