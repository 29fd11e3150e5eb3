"""Demand profiles from GPU process samples (pure), and the edge that loads them.

Per model: memory peak per replica and the p95 of its SM use, as a fraction of one whole GPU
of the reference type, times (1 + headroom); isolation and latency classes come from the
settings (default: shared, interactive).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing.models import GpuProcessSample, GpuSample, table_of
from scheduler.catalog import GPU_TYPES, gpu_type
from scheduler.model import Isolation, LatencyClass, Workload

PROCESS_COLUMNS = ["ts", "gpu_uuid", "model", "pid", "sm_util", "mem_used_mib"]
REF_TYPE = "A100-80GB"


def demand_profiles(
    processes: pd.DataFrame,
    gpu_types: Mapping[str, str],
    *,
    headroom: float,
    mem_headroom: float = 0.05,
    isolation: Mapping[str, Isolation] | None = None,
    latency: Mapping[str, LatencyClass] | None = None,
    ref_type: str = REF_TYPE,
    quantile: float = 0.95,
) -> list[Workload]:
    """One Workload per model seen in ``processes`` (PROCESS_COLUMNS).

    Details: per (model, ts) the SM use of its processes is summed in units of ``ref_type``
    (sm_util/100 x speed(type)/speed(ref)) and divided by the replicas seen at that ts; the
    ``quantile`` over time x (1 + headroom) is the compute need, capped at 1. Memory is the
    peak per process x (1 + mem_headroom). Replicas = the median count of processes per ts.
    Rows with unknown model or sm_util are ignored for compute (not for memory).
    """
    isolation = isolation or {}
    latency = latency or {}
    p = processes.dropna(subset=["model"])
    if p.empty:
        return []
    ref_speed = gpu_type(ref_type).relative_speed
    speed = {
        u: GPU_TYPES[t].relative_speed / ref_speed if t in GPU_TYPES else 1.0
        for u, t in gpu_types.items()
    }
    p = p.assign(ref_sm=p["sm_util"] / 100.0 * p["gpu_uuid"].map(speed).fillna(1.0))
    out = []
    for model, g in p.groupby("model", sort=True):
        per_ts = g.groupby("ts").agg(sm=("ref_sm", "sum"), n=("pid", "nunique"))
        replicas = max(1, int(np.median(per_ts["n"])))
        per_replica = (per_ts["sm"] / per_ts["n"]).dropna()
        compute = float(per_replica.quantile(quantile)) if len(per_replica) else 0.0
        mem = float(g["mem_used_mib"].max()) if g["mem_used_mib"].notna().any() else 0.0
        out.append(
            Workload(
                model=str(model),
                mem_mib=round(mem * (1 + mem_headroom), 1),
                compute=round(min(1.0, max(0.01, compute * (1 + headroom))), 4),
                replicas=replicas,
                isolation=isolation.get(str(model), Isolation.shared),
                latency=latency.get(str(model), LatencyClass.interactive),
                ref_type=ref_type,
            )
        )
    return out


def load_process_frame(
    engine: Engine, now: datetime, hours: float
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Process samples of the last ``hours`` and the GPU type of each physical GPU (edge)."""
    p, s = table_of(GpuProcessSample).c, table_of(GpuSample).c
    since = now - timedelta(hours=hours)
    with engine.connect() as conn:
        procs = pd.read_sql(
            select(p.ts, p.gpu_uuid, p.model, p.pid, p.sm_util, p.mem_used_mib).where(
                p.ts >= since, p.ts <= now
            ),
            conn,
        )
        types = conn.execute(
            select(s.gpu_uuid, s.gpu_type).where(s.parent_uuid.is_(None), s.ts >= since).distinct()
        ).all()
    return procs, {u: t for u, t in types}
