"""Score: the marginal price of the placement (a GPU already in use costs nothing more)."""

from __future__ import annotations

from scheduler.framework import MAX_SCORE, GpuUse, Request
from scheduler.model import Workload


def price_score(marginal_usd: float, max_usd: float) -> int:
    """100 for a free placement, 0 for the most expensive GPU of the fleet.

    Details: round(100 x (1 - marginal / max)); max <= 0 gives 100.
    """
    if max_usd <= 0:
        return MAX_SCORE
    return round(MAX_SCORE * (1 - min(marginal_usd, max_usd) / max_usd))


class PriceScore:
    """Prefers GPUs already paid for, then the cheapest GPU to open."""

    name = "Price"

    def __init__(self, max_usd: float) -> None:
        """``max_usd``: the highest USD/hour of any GPU in the snapshot."""
        self.max_usd = max_usd

    def score(self, w: Workload, req: Request, gpu: GpuUse) -> int:
        """price_score(0 if the GPU is in use else its USD/hour)."""
        marginal = 0.0 if gpu.mode is not None else gpu.usd_per_hour
        return price_score(marginal, self.max_usd)
