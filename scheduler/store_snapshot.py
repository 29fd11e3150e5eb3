"""The store edge of planning: a planner Snapshot from billing's tables (samples, allocations).

One place for `costctl plan` and the dashboard's plan panel, so both plan the same fleet
with the same demand rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing.config import DEFAULT_PRICE_BOOK
from billing.models import GpuSample, table_of
from billing.pricebook import prices_at, read_price_book
from scheduler.config import SchedulerConfig
from scheduler.demand import demand_profiles, load_process_frame
from scheduler.jobs import current_slots
from scheduler.model import GpuSnapshot, Isolation, LatencyClass, NodeSnapshot, Snapshot
from scheduler.snapshot import PriceMap, gpus_from_samples, make_snapshot, price_map


def store_prices(engine: Engine, now: datetime) -> PriceMap:
    """Prices in force at ``now`` from the store, else the shipped price book."""
    frame = prices_at(engine, now)
    return price_map(frame if not frame.empty else read_price_book(DEFAULT_PRICE_BOOK))


def snapshot_from_store(
    engine: Engine,
    config: SchedulerConfig,
    now: datetime,
    *,
    lookback: timedelta = timedelta(hours=1),
    prices: PriceMap | None = None,
) -> Snapshot | None:
    """GPUs sampled in (now - lookback, now], measured demand, current placement, and the
    pods' CPU / memory requests and nodes' allocatable from the settings.

    Returns: None when no GPU was sampled in the lookback or no model has demand.
    """
    t = table_of(GpuSample).c
    cols = [
        t.ts,
        t.node,
        t.gpu_uuid,
        t.parent_uuid,
        t.gpu_index,
        t.gpu_type,
        t.pricing_class,
        t.mig_profile,
    ]
    with engine.connect() as conn:
        samples = pd.read_sql(select(*cols).where(t.ts >= now - lookback, t.ts <= now), conn)
    gpus = gpus_from_samples(samples, prices or store_prices(engine, now))
    if not gpus:
        return None
    procs, types = load_process_frame(engine, now, config.demand_window_h)
    workloads = demand_profiles(
        procs,
        types,
        headroom=config.headroom,
        mem_headroom=config.mem_headroom,
        isolation={m: Isolation(v) for m, v in config.model_isolation.items()},
        latency={m: LatencyClass(v) for m, v in config.model_latency.items()},
    )
    if not workloads:
        return None
    workloads = [
        replace(
            w,
            cpu_milli=config.model_cpu_milli.get(w.model, 0),
            host_mem_mib=float(config.model_memory_mib.get(w.model, 0)),
        )
        for w in workloads
    ]
    return make_snapshot(gpus, workloads, current_slots(engine), now, host_nodes(gpus, config))


def host_nodes(gpus: Sequence[GpuSnapshot], config: SchedulerConfig) -> tuple[NodeSnapshot, ...]:
    """Each GPU node with the allocatable CPU / memory the settings give it (None: unset)."""
    out = []
    for node in dict.fromkeys(g.node for g in gpus):
        cpu = config.node_cpu_milli.get(node)
        mem = config.node_memory_mib.get(node)
        out.append(NodeSnapshot(node, cpu_milli=cpu, mem_mib=None if mem is None else float(mem)))
    return tuple(out)
