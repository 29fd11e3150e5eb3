"""Prometheus metrics of enforcement, in a registry per app (no process-global state).

Decision counters count this worker's decisions (Prometheus sums workers by instance);
reservations in flight, bucket levels and kill-switches are read from the shared backend at
scrape time, so every worker reports the same cluster-wide figure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from billing.enforcement.backend import BucketBackend, ReservationBackend

_CUSTOMER = re.compile(r"customer=[^|]*")


def redact_customer(bucket_key: str) -> str:
    """A bucket key with its customer value replaced by ``*`` (``rl:3:req:customer=*``)."""
    return _CUSTOMER.sub("customer=*", bucket_key)


class _Shared(Collector):
    def __init__(
        self,
        reservations: ReservationBackend,
        buckets: BucketBackend,
        bucket_keys: Callable[[], list[str]],
        kills: Callable[[], int],
        clock: Callable[[], datetime],
        customer_labels: bool,
        mode: Callable[[], str],
    ) -> None:
        self.reservations, self.buckets, self.mode = reservations, buckets, mode
        self.bucket_keys, self.kills, self.clock = bucket_keys, kills, clock
        self.customer_labels = customer_labels

    def collect(self) -> Iterable[Metric]:
        m = GaugeMetricFamily(
            "costctl_enforcement_backend",
            "1 for where authorize reserves now (redis, sql, sql-fallback: Redis unreachable, "
            "deny: Redis unreachable and enforcement.redis_unavailable=deny), else 0.",
            labels=["mode"],
        )
        now = self.mode()
        for mode in ("redis", "sql", "sql-fallback", "deny"):
            m.add_metric([mode], 1.0 if mode == now else 0.0)
        yield m
        g = GaugeMetricFamily(
            "costctl_reservations_in_flight", "Budget reservations held (not yet settled)."
        )
        g.add_metric([], self.reservations.in_flight())
        yield g
        k = GaugeMetricFamily("costctl_kill_switches_active", "Kill-switches currently active.")
        k.add_metric([], self.kills())
        yield k
        b = GaugeMetricFamily(
            "costctl_bucket_level",
            "Token bucket level as last stored (without customer labels: the lowest level "
            "among the customers of a rule).",
            labels=["bucket"],
        )
        levels: dict[str, float] = {}
        for key, level in self.buckets.levels(self.bucket_keys(), self.clock()).items():
            label = key if self.customer_labels else redact_customer(key)
            levels[label] = min(level, levels.get(label, level))
        for label, level in levels.items():
            b.add_metric([label], level)
        yield b


class EnforcementMetrics:
    """The counters the hot path updates and the collector of shared gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "costctl_authorize_decisions",
            "Authorize decisions by outcome and reason.",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "costctl_authorize_seconds",
            "Time to decide (inside the worker).",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1),
            registry=self.registry,
        )
        self.alerts = Counter(
            "costctl_budget_alerts", "Budget alerts raised.", ["level"], registry=self.registry
        )

    def attach(
        self,
        reservations: ReservationBackend,
        buckets: BucketBackend,
        bucket_keys: Callable[[], list[str]],
        kills: Callable[[], int],
        clock: Callable[[], datetime],
        *,
        customer_labels: bool = False,
        mode: Callable[[], str] = lambda: "sql",
    ) -> None:
        """Register the scrape-time gauges (customer names only with ``customer_labels``)."""
        self.registry.register(
            _Shared(reservations, buckets, bucket_keys, kills, clock, customer_labels, mode)
        )
