"""The store edge of planning: a planner Snapshot from billing's tables (samples, allocations).

One place for `costctl plan` and the dashboard's plan panel, so both plan the same fleet
with the same demand rules.
"""

from __future__ import annotations

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
from scheduler.model import Isolation, LatencyClass, Snapshot
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
    """GPUs sampled in (now - lookback, now], measured demand, current placement.

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
    return make_snapshot(gpus, workloads, current_slots(engine), now)
