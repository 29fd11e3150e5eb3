"""dcgm-exporter series (Prometheus query_range results) as GPU samples and observed holdings.

Pure: the caller passes the query results, the step grid, the pods' models and the holdings
already stored; nothing here reads a clock, the store or the network. Each evaluation time
``t`` of query_range (plain selectors: the state at the last scrape at or before ``t``) is one
reading standing for ``[t, t + step)``. The parts: ``readings`` (devices and their pods per
step), ``samples`` (sample and pod-utilisation rows), ``holdings`` (observed allocations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from billing.schemas import AllocationIn, GpuProcessSampleIn, GpuSampleIn
from scheduler.dcgm.holdings import holdings_of
from scheduler.dcgm.readings import (
    FB_FREE,
    FB_USED,
    GPU_UTIL,
    GR_ACTIVE,
    METRICS,
    OBSERVER,
    POWER,
    Options,
    Series,
    collect_devices,
    holder_of,
    mig_device_id,
)
from scheduler.dcgm.samples import processes_of, samples_of

__all__ = [
    "FB_FREE",
    "FB_USED",
    "GPU_UTIL",
    "GR_ACTIVE",
    "METRICS",
    "OBSERVER",
    "POWER",
    "Converted",
    "Options",
    "Series",
    "convert",
    "holder_of",
    "mig_device_id",
    "pods_of",
]


@dataclass
class Converted:
    """The rows of one range: samples, pod-level process rows, holdings, what was skipped."""

    samples: list[GpuSampleIn] = field(default_factory=list)
    processes: list[GpuProcessSampleIn] = field(default_factory=list)
    allocations: list[AllocationIn] = field(default_factory=list)
    unresolved: set[tuple[str, str]] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def pods_of(results: Mapping[str, Sequence[Series]], opts: Options) -> set[tuple[str, str]]:
    """The (namespace, pod) pairs the series name: what the caller resolves to models."""
    return {
        (h[0], h[1])
        for series in results.values()
        for s in series
        if (h := holder_of(s.labels, opts.workload_labels)) is not None
    }


def convert(
    results: Mapping[str, Sequence[Series]],
    *,
    start: datetime,
    end: datetime,
    opts: Options,
    models: Mapping[tuple[str, str], str | None],
    known: Sequence[AllocationIn] = (),
) -> Converted:
    """Samples, pod rows and observed holdings of ``[start, end)`` from query_range results.

    ``results`` maps each metric name of METRICS to its series, evaluated at the step grid
    start, start + step, ..., end - step; ``models`` maps (namespace, pod) to a model (None:
    unknown, the pod's holdings are skipped and listed in ``unresolved``); ``known`` are the
    stored observed holdings of observer ``dcgm`` that may continue into this range.
    Raises: ValueError when start/end are not on the step grid.
    """
    s, e = start.timestamp(), end.timestamp()
    if s % opts.step_s or e % opts.step_s or e <= s:
        raise ValueError(f"range [{start}, {end}) is not on the {opts.step_s}s grid")
    devices, problems = collect_devices(results, opts)
    for dev in devices.values():  # steps outside the range (a misaligned query) are dropped
        for t in [t for t in dev.values if not s <= t < e]:
            dev.values.pop(t)
            dev.holders.pop(t, None)
    allocations, unresolved, skipped = holdings_of(devices, int(s), int(e), opts, models, known)
    return Converted(
        samples=samples_of(devices, opts),
        processes=processes_of(devices, opts, models),
        allocations=allocations,
        unresolved=unresolved,
        problems=problems + skipped,
    )
