"""A real ledger for dashboard tests: Azure conv trace replayed + a simulated fleet, rolled
up through billing (ingest -> attribution -> ledger), three hours from T0."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from billing.config import BillingConfig
from billing.ingest import ingest_gpu_samples, ingest_usage
from billing.ledger import RollupResult, rollup
from billing.models import Allocation
from billing.pricebook import read_price_book, store_prices
from billing.replay import load_events
from billing.schemas import GpuSampleIn
from billing.windows import Window
from tests.utils.factories import T0, replay_fleet

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "azure-llm-2023"
CONV = DATA / "AzureLLMInferenceTrace_conv.csv"
WHOLE = Window(T0, T0 + timedelta(hours=3))
# model, physical GPU, MIG device (or None), fraction, mode
ALLOCS = [
    ("llama-3-70b", "g2", None, 1.0, "gpu"),
    ("llama-3-8b", "g0", "g0/mig-3g", 3 / 7, "mig"),
    ("mistral-7b", "g0", "g0/mig-4g", 4 / 7, "mig"),
    ("mixtral-8x7b", "g3", None, 0.5, "mps"),
]


@dataclass(frozen=True)
class Built:
    result: RollupResult
    events: int


def build_ledger(engine: Engine, *, speed: float = 1.0, t0: datetime = T0, seed: int = 7) -> Built:
    """Replay the conv trace from t0+20 min, sample 4 GPUs (+2 MIG slices) for 3 h, roll up."""
    config = BillingConfig()
    store_prices(engine, read_price_book(config.price_book_path), t0 - timedelta(days=1))
    events = load_events(CONV, seed=seed, start=t0 + timedelta(minutes=20), speed=speed)
    ingest_usage(engine, events)
    fleet = replay_fleet(start=t0, interval_s=30)
    samples, procs = fleet.sample_rows()
    slices = [
        GpuSampleIn(
            ts=s.ts,
            node=s.node,
            gpu_uuid=f"g0/mig-{p}",
            parent_uuid="g0",
            gpu_type=s.gpu_type,
            mig_profile=f"{p}.40gb",
            sm_util=util,
            interval_s=s.interval_s,
        )
        for s in samples
        if s.gpu_uuid == "g0"
        for p, util in (("3g", 60.0), ("4g", 30.0))
    ]
    ingest_gpu_samples(engine, [*samples, *slices], procs)
    with Session(engine) as s:
        for model, gpu, device, frac, mode in ALLOCS:
            s.add(
                Allocation(
                    model=model,
                    node="node-a",
                    gpu_uuid=gpu,
                    device_uuid=device or gpu,
                    pod=model,
                    fraction=frac,
                    start=t0,
                    end=t0 + timedelta(hours=3),
                    mode=mode,
                    profile=device.rsplit("-", 1)[1] + ".40gb" if device else None,
                )
            )
        s.commit()
    whole = Window(t0, t0 + timedelta(hours=3))
    return Built(rollup(engine, whole, config), len(events))
