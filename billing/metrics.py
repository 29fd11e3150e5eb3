"""Prometheus metrics of the rollup, in a registry handed in (no process-global state).

``RollupMetrics(registry)``: pass the registry the process exposes on /metrics (the worker's
or the API's); without one the metrics live in a registry of their own.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge


class RollupMetrics:
    """GPU time the rollup could not price, by GPU type and pricing class."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.unpriced_seconds = Gauge(
            "costctl_unpriced_gpu_seconds",
            "GPU-seconds without a price in the window of the latest rollup (the __unpriced__ "
            "ledger row), by GPU type and pricing class.",
            ["gpu_type", "pricing_class"],
            registry=self.registry,
        )
        self.unpriced_rollups = Counter(
            "costctl_rollups_with_unpriced_time",
            "Rollups that found metered GPU time with no price in force.",
            registry=self.registry,
        )

    def observe(self, unpriced: Iterable[tuple[str, str, float]]) -> None:
        """Set the gauge to one rollup's unpriced seconds (labels not seen drop to absent)."""
        items = list(unpriced)
        self.unpriced_seconds.clear()
        for gpu_type, pricing_class, seconds in items:
            self.unpriced_seconds.labels(gpu_type, pricing_class).set(seconds)
        if items:
            self.unpriced_rollups.inc()
