"""Score: keep a model where it runs now (a plan is a diff; fewer moves are better)."""

from __future__ import annotations

from scheduler.framework import MAX_SCORE, GpuUse, Request
from scheduler.model import Workload


def stability_score(runs_here_now: bool) -> int:
    """100 if the model runs on this GPU today, else 0."""
    return MAX_SCORE if runs_here_now else 0


class StabilityScore:
    """Prefers the GPUs a model already occupies in the current placement."""

    name = "Stability"

    def score(self, w: Workload, req: Request, gpu: GpuUse) -> int:
        """stability_score(model in the GPU's current models)."""
        return stability_score(w.model in gpu.current_models)
