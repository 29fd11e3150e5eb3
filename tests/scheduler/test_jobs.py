"""Sampling job, allocation records and the demo fleet through billing's tables and rollup."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing.config import DEFAULT_PRICE_BOOK, BillingConfig
from billing.ingest import ingest_usage
from billing.ledger import query_costs, rollup
from billing.models import Allocation, GpuProcessSample, GpuSample, table_of
from billing.pricebook import read_price_book, store_prices
from billing.schemas import USAGE_BATCH
from billing.windows import Window
from scheduler.config import SchedulerConfig
from scheduler.demand import demand_profiles, load_process_frame
from scheduler.demo import start_demo_fleet
from scheduler.jobs import current_slots, make_collectors, record_allocations, sample_once
from scheduler.model import Mode, Slot
from scheduler.simfleet import NodeSpec, build_fleet
from tests.agent.apiserver import ApiServer, ingest_key
from tests.scheduler.conftest import T0, Clock


def _count(engine: Engine, model: type) -> int:
    with engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(table_of(model))).scalar_one())


def test_costctl_sample_writes_through_billing_ingest(engine: Engine, clock: Clock) -> None:
    fleet = build_fleet([NodeSpec("n1", "A100-80GB", 2, "spot")], clock=clock)
    fleet.place("m", "n1", 0, mem_mib=1000, mode=Mode.mps, share=0.5)
    fleet.set_load("m", 0.6)
    collectors = make_collectors(SchedulerConfig(sample_interval_s=10), fleet=fleet)
    r1 = sample_once(collectors, engine, clock())
    clock.tick(10)
    r2 = sample_once(collectors, engine, clock())
    assert (r1.inserted, r2.inserted) == (3, 3)  # 2 GPUs + 1 process each round
    assert sample_once(collectors, engine, clock()).duplicates == 3  # same ts: idempotent
    with engine.connect() as c:
        rows = c.execute(select(table_of(GpuProcessSample))).mappings().all()
        classes = {r[0] for r in c.execute(select(table_of(GpuSample).c.pricing_class))}
    assert classes == {"spot"}
    assert {r["model"] for r in rows} == {"m"}
    assert all(r["sm_util"] == pytest.approx(30, abs=3) for r in rows)


def test_record_allocations_closes_the_previous_placement(engine: Engine) -> None:
    a = [
        Slot("m", 0, "n", "GPU-1", Mode.mig, 3 / 7, "3g.40gb", 4),
        Slot("m", 1, "n", "GPU-2", Mode.mps, 0.35, thread_pct=35, mem_limit_mib=2000),
    ]
    assert record_allocations(engine, a, start=T0, plan_id="p1") == 2
    b = [Slot("m", 0, "n", "GPU-1", Mode.timeslice, 0.25)]
    record_allocations(engine, b, start=T0 + timedelta(hours=1), plan_id="p2")
    with engine.connect() as c:
        rows = c.execute(select(table_of(Allocation)).order_by(table_of(Allocation).c.id)).all()
    assert [(r.mode, r.profile, round(r.fraction, 4), r.plan_id) for r in rows] == [
        ("mig", "3g.40gb", 0.4286, "p1"),
        ("mps", None, 0.35, "p1"),
        ("timeslice", None, 0.25, "p2"),
    ]
    assert [r.end is not None for r in rows] == [True, True, False]
    (cur,) = current_slots(engine)
    assert (cur.model, cur.mode, cur.share) == ("m", Mode.timeslice, 0.25)


def _usage(n: int, start: pd.Timestamp) -> list[dict[str, object]]:
    models = ["llama-3-70b", "llama-3-8b", "mistral-7b", "mixtral-8x7b"]
    return [
        {
            "id": f"e{i}",
            "source": "t",
            "time": (start + pd.Timedelta(seconds=i)).isoformat(),
            "model": models[i % 4],
            "customer": "acme",
            "request_type": "chat",
            "input_tokens": 1500,
            "output_tokens": 300,
        }
        for i in range(n)
    ]


def test_demo_fleet_is_metered_and_attributed_with_conservation(
    engine: Engine, clock: Clock
) -> None:
    store_prices(engine, read_price_book(DEFAULT_PRICE_BOOK), T0 - timedelta(days=1))
    demo = start_demo_fleet(engine, SchedulerConfig(sample_interval_s=5), clock=clock, seed=3)
    assert {(s.model, s.mode) for s in demo.slots} >= {
        ("mistral-7b", Mode.mig),
        ("llama-3-70b", Mode.gpu),
    }
    assert _count(engine, Allocation) == 0  # the demo writes none: its node agents observe them
    ingest_usage(engine, USAGE_BATCH.validate_python(_usage(400, pd.Timestamp(T0))))
    loads = []
    with ApiServer(engine) as api, tempfile.TemporaryDirectory(prefix="demo-") as work:
        demo.attach_agents(api.url, ingest_key(engine), Path(work))
        try:
            for _ in range(80):  # 400 s of 5-s samples, through the agents and the API
                clock.tick(5)
                loads.append(demo.refresh_load(clock()))
                assert demo.sample(clock()) == 2  # one agent round per node
        finally:
            demo.stop()
    assert _count(engine, Allocation) == 7  # one observed allocation per placed process
    assert 0 < loads[-1]["llama-3-8b"] <= 0.95
    result = rollup(engine, Window(T0, T0 + timedelta(hours=1)), BillingConfig())
    assert result.ledger_cost_cents == result.metered_cost_cents > 0
    # 400 s x (2 x 5.12 + 2 x 9.80) $/h = 331.6 cents metered
    assert result.metered_cost_cents == round(400 * (2 * 5.12 + 2 * 9.80) / 36)
    costs = query_costs(engine, Window(T0, T0 + timedelta(hours=1)), group_by=("model", "kind"))
    billed = costs[costs["kind"] == "attributed"].set_index("model")["cost_cents"]
    # MIG models on H100 are measured through GPM; every model gets billed some of its cost
    assert set(billed[billed > 0].index) == {
        "llama-3-70b",
        "llama-3-8b",
        "mistral-7b",
        "mixtral-8x7b",
    }
    procs, types = load_process_frame(engine, clock(), 1.0)
    ws = {w.model: w for w in demand_profiles(procs, types, headroom=0.2)}
    assert set(ws) == {"llama-3-70b", "llama-3-8b", "mistral-7b", "mixtral-8x7b"}
    assert ws["llama-3-70b"].mem_mib == pytest.approx(70000 * 1.05)
    assert ws["mistral-7b"].replicas == 2 and ws["llama-3-70b"].replicas == 2
    assert 0 < ws["llama-3-8b"].compute <= 1
