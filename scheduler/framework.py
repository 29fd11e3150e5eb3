"""The packing framework: Filter plugins reject, Score plugins rank (k8s scheduler style).

A filter returns None (fits) or a list of Insufficient reasons. A scorer returns an int in
[0, 100]; the framework checks the range and multiplies by the plugin's configured weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from scheduler.model import Insufficient, Mode, NodeSharing, Workload

MAX_SCORE = 100


@dataclass(frozen=True)
class Request:
    """What one replica asks of one GPU under one mode.

    ``compute_milli``: SM share in 1/1000 of the GPU; ``mem_mib``: device memory;
    ``profile``: MIG family key under Mode.mig; ``share``: fraction of the GPU's price held;
    ``replicas``: under equal MPS shares, the node's MPS replicas per GPU (the replica holds
    1/replicas of the GPU's SMs and memory); 0 otherwise.
    """

    mode: Mode
    compute_milli: int
    mem_mib: float
    share: float
    profile: str | None = None
    replicas: int = 0


@dataclass(frozen=True)
class GpuUse:
    """A read-only view of one GPU during packing: what it already holds and its node's config."""

    pos: int
    uuid: str
    node: str
    gpu_type: str
    usd_per_hour: float
    mem_capacity_mib: float
    mode: Mode | None  # None: nothing placed yet
    node_sharing: NodeSharing | None  # None: node not configured yet
    node_mps_replicas: int = 0  # equal MPS shares: the node's replicas per GPU (0: unset)
    compute_used: int = 0
    mem_used_mib: float = 0.0
    clients: int = 0
    profiles: tuple[str, ...] = ()
    models: frozenset[str] = frozenset()
    current_models: frozenset[str] = frozenset()
    node_cpu_free: float = float("inf")  # allocatable CPU (milli) of the node not yet requested
    node_mem_free_mib: float = float("inf")  # allocatable memory (MiB) not yet requested
    node_gpu_free_milli: int = 0  # the node's GPU capacity not yet held (1000 per GPU)
    node_gpu_milli: int = 0  # the node's GPU capacity (1000 per GPU)


class FilterPlugin(Protocol):
    """Rejects a (replica, GPU) pair. Allowed outcomes: None (fits) or a non-empty list."""

    name: str

    def filter(self, w: Workload, req: Request, gpu: GpuUse) -> list[Insufficient] | None:
        """None if ``req`` fits ``gpu``, else why not."""
        ...


class ScorePlugin(Protocol):
    """Ranks a feasible (replica, GPU) pair. Allowed outcome: an int in [0, 100]."""

    name: str

    def score(self, w: Workload, req: Request, gpu: GpuUse) -> int:
        """Higher is better."""
        ...


class ScoreRangeError(ValueError):
    """A score plugin returned something outside [0, 100]."""


class Framework:
    """Runs the configured filters (all must pass) and weighted scorers."""

    def __init__(
        self, filters: Sequence[FilterPlugin], scores: Sequence[tuple[ScorePlugin, int]]
    ) -> None:
        """Raises: ValueError for a negative weight."""
        if any(w < 0 for _, w in scores):
            raise ValueError("score weights must be >= 0")
        self.filters = tuple(filters)
        self.scores = tuple((p, w) for p, w in scores if w > 0)

    def run_filters(self, w: Workload, req: Request, gpu: GpuUse) -> list[Insufficient] | None:
        """The first failing filter's reasons, or None if every filter passes."""
        for plugin in self.filters:
            reasons = plugin.filter(w, req, gpu)
            if reasons:
                return reasons
        return None

    def run_scores(self, w: Workload, req: Request, gpu: GpuUse) -> int:
        """Σ weight x score. Raises: ScoreRangeError if a plugin leaves [0, 100]."""
        total = 0
        for plugin, weight in self.scores:
            s = plugin.score(w, req, gpu)
            if not isinstance(s, int) or not 0 <= s <= MAX_SCORE:
                raise ScoreRangeError(f"score plugin {plugin.name} returned {s!r}, not in [0, 100]")
            total += s * weight
        return total
