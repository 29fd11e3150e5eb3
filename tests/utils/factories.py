"""Builders of measurement frames and rows for billing tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from billing.schemas import GpuProcessSampleIn, GpuSampleIn

T0 = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday


@dataclass
class GpuSpec:
    """A physical GPU sampled every ``interval_s`` from ``start`` for ``seconds``."""

    uuid: str
    gpu_type: str = "A100-80GB"
    pricing_class: str = "on-demand"
    start: datetime = T0
    seconds: float = 3600.0
    interval_s: float = 5.0
    node: str = "node-a"


@dataclass
class Fleet:
    """GPUs plus which model runs where at what SM% (of the whole GPU)."""

    gpus: list[GpuSpec] = field(default_factory=list)
    # (model, gpu uuid, sm_util %)
    processes: list[tuple[str, str, float]] = field(default_factory=list)

    def samples(self) -> pd.DataFrame:
        rows = []
        for g in self.gpus:
            n = int(g.seconds // g.interval_s)
            for i in range(n):
                rows.append(
                    (
                        g.start + timedelta(seconds=i * g.interval_s),
                        g.uuid,
                        g.gpu_type,
                        g.pricing_class,
                        g.interval_s,
                    )
                )
        return pd.DataFrame(
            rows, columns=["ts", "gpu_uuid", "gpu_type", "pricing_class", "interval_s"]
        ).assign(ts=lambda d: pd.to_datetime(d["ts"], utc=True))

    def process_frame(self) -> pd.DataFrame:
        by_uuid = {g.uuid: g for g in self.gpus}
        rows = []
        for model, uuid, util in self.processes:
            g = by_uuid[uuid]
            for i in range(int(g.seconds // g.interval_s)):
                rows.append(
                    (g.start + timedelta(seconds=i * g.interval_s), uuid, model, util, g.interval_s)
                )
        return pd.DataFrame(
            rows, columns=["ts", "gpu_uuid", "model", "sm_util", "interval_s"]
        ).assign(ts=lambda d: pd.to_datetime(d["ts"], utc=True))

    def sample_rows(self) -> tuple[list[GpuSampleIn], list[GpuProcessSampleIn]]:
        s = self.samples()
        samples = [
            GpuSampleIn(
                ts=r.ts.to_pydatetime(),
                node="node-a",
                gpu_uuid=r.gpu_uuid,
                gpu_type=r.gpu_type,
                pricing_class=r.pricing_class,
                interval_s=r.interval_s,
                sm_util=50.0,
                mem_used_mib=1000,
                mem_total_mib=81920,
            )
            for r in s.itertuples(index=False)
        ]
        p = self.process_frame()
        procs = [
            GpuProcessSampleIn(
                ts=r.ts.to_pydatetime(),
                device_uuid=r.gpu_uuid,
                gpu_uuid=r.gpu_uuid,
                pid=1000 + i % 7,
                model=r.model,
                sm_util=r.sm_util,
                interval_s=r.interval_s,
            )
            for i, r in enumerate(p.itertuples(index=False))
        ]
        return samples, procs


def allocations(rows: Sequence[tuple[str, str, float, datetime, datetime | None]]) -> pd.DataFrame:
    """Allocation frame from (model, gpu_uuid, fraction, start, end)."""
    df = pd.DataFrame(list(rows), columns=["model", "gpu_uuid", "fraction", "start", "end"])
    df["start"] = pd.to_datetime(df["start"], utc=True)
    df["end"] = pd.to_datetime(df["end"], utc=True)
    return df


def usage(
    n: int,
    *,
    seed: int = 0,
    start: datetime = T0,
    seconds: float = 3600.0,
    models: Sequence[str] = ("llama", "mistral"),
    customers: Sequence[str] = ("acme", "globex", "initech"),
    request_types: Sequence[str] = ("chat", "code"),
) -> pd.DataFrame:
    """Random usage events (one row per request) inside [start, start + seconds)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "ts": pd.Timestamp(start) + pd.to_timedelta(rng.uniform(0, seconds, n), "s"),
            "model": rng.choice(list(models), n),
            "customer": rng.choice(list(customers), n),
            "request_type": rng.choice(list(request_types), n),
            "input_tokens": rng.integers(0, 4000, n),
            "output_tokens": rng.integers(0, 500, n),
        }
    )


PRICES = pd.DataFrame(
    {
        "gpu_type": ["A100-80GB", "A100-80GB", "H100-80GB"],
        "pricing_class": ["on-demand", "spot", "on-demand"],
        "usd_per_hour": [5.12, 2.05, 9.80],
    }
)


def replay_fleet(*, start: datetime = T0, interval_s: float = 10.0) -> Fleet:
    """Four GPUs (A100 on-demand/spot, H100 on-demand/reserved) sampled for 3 h, with the
    replay's models busy on g0 and g2: the fleet the Azure-replay tests attribute."""
    classes = [
        ("A100-80GB", "on-demand"),
        ("A100-80GB", "spot"),
        ("H100-80GB", "on-demand"),
        ("H100-80GB", "reserved"),
    ]
    gpus = [
        GpuSpec(
            f"g{i}",
            gpu_type=t,
            pricing_class=p,
            start=start,
            seconds=3 * 3600,
            interval_s=interval_s,
        )
        for i, (t, p) in enumerate(classes)
    ]
    return Fleet(
        gpus=gpus,
        processes=[
            ("llama-3-70b", "g2", 55.0),
            ("llama-3-8b", "g0", 25.0),
            ("mistral-7b", "g0", 15.0),
        ],
    )
