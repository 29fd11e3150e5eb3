"""Scheduler edges on the store: the sampling job and the allocation records billing splits by."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from billing.ingest import ingest_gpu_samples
from billing.models import Allocation, table_of
from billing.schemas import IngestResult
from scheduler.config import SchedulerConfig
from scheduler.model import Mode, Slot
from scheduler.nvml import Collector, CollectResult, load_nvml
from scheduler.podmap import PodRef, PodResolver
from scheduler.simfleet import SimFleet

log = logging.getLogger(__name__)


def sample_once(collectors: Sequence[Collector], engine: Engine, now: datetime) -> IngestResult:
    """Run every collector once at ``now`` and store the readings in one transaction."""
    out = CollectResult()
    for c in collectors:
        r = c.collect(now)
        out.samples += r.samples
        out.processes += r.processes
        out.faults += r.faults
    if out.faults:
        log.info("NVML faults: %s", "; ".join(out.faults)[:500])
    return ingest_gpu_samples(engine, out.samples, out.processes)


def fleet_resolver(fleet: SimFleet) -> PodResolver:
    """Pod mapping of a simulated fleet: its cgroup texts and its pods by UID."""
    return PodResolver(
        fleet.cgroups.get,
        lambda: {u: PodRef(u, ns, pod, m) for u, (ns, pod, m) in fleet.pods().items()},
    )


def make_collectors(
    config: SchedulerConfig,
    *,
    fleet: SimFleet | None = None,
    resolver: PodResolver | None = None,
    pricing_class: str | Callable[[int], str] = "on-demand",
) -> list[Collector]:
    """Collectors over the configured backend: one per simulated node, or this node's pynvml.

    Details: under ``nvml_backend=simulated`` each node of ``fleet`` gets its own FakeNvml
    (as a per-node DaemonSet pod would), with that node's pricing class.
    """
    if config.nvml_backend == "pynvml" or fleet is None:
        nvml = load_nvml(config, fleet)
        nvml.nvmlInit()
        return [
            Collector(nvml, config.node_name, config.sample_interval_s, pricing_class, resolver)
        ]
    from scheduler.nvml_fake import FakeNvml

    out = []
    resolver = resolver or fleet_resolver(fleet)
    for node in dict.fromkeys(g.node for g in fleet.gpus):
        nvml = FakeNvml(fleet, node)
        nvml.nvmlInit()
        classes = {g.index: g.pricing_class for g in fleet.gpus if g.node == node}
        out.append(Collector(nvml, node, config.sample_interval_s, _lookup(classes), resolver))
    return out


def _lookup(classes: dict[int, str]) -> Callable[[int], str]:
    return lambda i: classes.get(i, "on-demand")


def record_allocations(
    engine: Engine,
    slots: Iterable[Slot],
    *,
    start: datetime,
    plan_id: str | None = None,
    device_uuid: Callable[[Slot], str | None] | None = None,
    close_open: bool = True,
) -> int:
    """Record a placement in billing's ``allocation`` table, closing the open rows first.

    Each slot becomes one row: model, node, physical gpu_uuid, device_uuid (MIG device),
    mode gpu|mig|mps|timeslice, profile and ``fraction`` = its share of the GPU price (MIG:
    SM slices/7, A30 /4; MPS: its share; time-slice: 1/replicas). Returns rows inserted.
    """
    table = table_of(Allocation)
    rows: list[dict[str, Any]] = [
        {
            "model": s.model,
            "node": s.node,
            "gpu_uuid": s.gpu_uuid,
            "device_uuid": (device_uuid(s) if device_uuid else None) or s.gpu_uuid,
            # A planned slot has no pod yet: the replica names it within its model.
            "pod": f"{s.model}#{s.replica}",
            "source": "planned",
            "observer": f"apply/{plan_id}" if plan_id else "apply",
            "mode": Mode(s.mode).value,
            "profile": s.profile,
            "fraction": min(1.0, max(1e-6, s.share)),
            "start": start,
            "end": None,
            "plan_id": plan_id,
        }
        for s in slots
    ]
    with engine.begin() as conn:
        if close_open:
            conn.execute(
                update(table)
                .where(table.c.end.is_(None), table.c.source == "planned")
                .values(end=start)
            )
        if rows:
            conn.execute(table.insert(), rows)
    return len(rows)


def current_slots(engine: Engine) -> list[Slot]:
    """The open allocations (end is NULL) as plan slots: the current placement."""
    t = table_of(Allocation).c
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.model, t.node, t.gpu_uuid, t.mode, t.profile, t.fraction)
            .where(t.end.is_(None))
            .order_by(t.id)
        ).all()
    seen: dict[str, int] = {}
    out = []
    for model, node, gpu, mode, profile, fraction in rows:
        seen[model] = seen.get(model, -1) + 1
        out.append(Slot(model, seen[model], node, gpu, Mode(mode), float(fraction), profile))
    return out
