"""Plan and what-if panels over scheduler's simulated demo fleet sampled into the store."""

import tempfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from billing.config import BillingConfig
from billing.pricebook import read_price_book, store_prices
from dashboard.auth import Viewer
from dashboard.fleet import FleetPanels, load_snapshot, plan_figure, whatif_figure
from scheduler.config import SchedulerConfig
from scheduler.demo import start_demo_fleet
from scheduler.planner import plan
from scheduler.views import WhatIf, packing_view, what_if
from tests.agent.apiserver import ApiServer, ingest_key
from tests.utils.factories import T0

ADMIN = Viewer("a", "admin")


@pytest.fixture
def sampled(engine: Engine) -> Engine:
    store_prices(engine, read_price_book(BillingConfig().price_book_path), T0 - timedelta(days=1))
    clock = {"now": T0}
    demo = start_demo_fleet(engine, SchedulerConfig(), clock=lambda: clock["now"])
    # the demo fleet's node agents post samples and observed allocations to the API
    with ApiServer(engine) as api, tempfile.TemporaryDirectory(prefix="panels-") as work:
        demo.attach_agents(api.url, ingest_key(engine), Path(work))
        try:
            for i in range(12):  # a minute of 5 s samples under a steady load
                clock["now"] = T0 + timedelta(seconds=5 * i)
                for model in ("llama-3-70b", "llama-3-8b", "mistral-7b", "mixtral-8x7b"):
                    demo.fleet.set_load(model, 0.4)
                demo.sample(clock["now"])
        finally:
            demo.stop()
    return engine


def test_plan_panel_matches_the_scheduler_view(sampled: Engine) -> None:
    now = T0 + timedelta(minutes=1)
    snap = load_snapshot(sampled, SchedulerConfig(), now)
    assert snap is not None
    assert len(snap.gpus) == 4
    assert {w.model for w in snap.workloads} == {
        "llama-3-70b",
        "llama-3-8b",
        "mistral-7b",
        "mixtral-8x7b",
    }
    view = packing_view(snap)
    fig = FleetPanels(sampled, SchedulerConfig()).plan(now, ADMIN)
    assert {t.name for t in fig.data} <= {w.model for w in snap.workloads}
    # every slot of the plan is drawn once, at its share of the GPU in %
    drawn = sorted(round(y, 4) for t in fig.data for y in t.y)
    want = sorted(round(s["share"] * 100, 4) for r in view.rows for s in r["slots"])
    assert drawn == want
    assert f"saving ${view.saving_vs_one_per_gpu_usd_per_hour:,.2f}/h" in fig.layout.title.text
    assert view.one_per_gpu_usd_per_hour >= view.usd_per_hour


def test_whatif_panel_numbers(sampled: Engine) -> None:
    now = T0 + timedelta(minutes=1)
    snap = load_snapshot(sampled, SchedulerConfig(), now)
    assert snap is not None
    rows = what_if(snap, (1, 3, 5, 10))
    fig = FleetPanels(sampled, SchedulerConfig()).whatif(now, ADMIN)
    packed, current, naive = fig.data
    assert list(packed.y) == [r.packed_usd_per_hour for r in rows]
    assert list(current.y) == [r.current_usd_per_hour for r in rows]
    assert list(naive.y) == [r.naive_usd_per_hour for r in rows]
    assert [int(t.split()[0]) for t in naive.text] == [r.naive_gpus for r in rows]
    # 1x is the plan panel's plan: same planner, fleet, current placement and demand
    view = packing_view(snap)
    assert rows[0].packed_usd_per_hour == view.usd_per_hour
    assert rows[0].packed_gpus == len(view.rows)
    assert rows[0].current_usd_per_hour == view.plan.current_usd_per_hour
    assert rows[3].current_usd_per_hour == pytest.approx(10 * view.plan.current_usd_per_hour)
    assert rows[3].naive_gpus == 10 * rows[0].naive_gpus
    # the demo's measured demand is memory-bound (SM ~1%): replicas of 73.5, 50.4, 21 and
    # 16.8 GB on 80 GB GPUs. At 10x one model per GPU needs 70 GPUs. With equal MPS shares
    # 73.5 and 50.4 GB take whole GPUs (20 + 10), 21 GB fits a third (7 GPUs for 20), 16.8 GB
    # a quarter (5 for 20): 42. Packing used to offer only GPUs with free SM share,
    # memory-full ones first, and opened a GPU for almost every replica (62). With the NodePack
    # score (fuller nodes first, for the host-aware packing of issue 9) the greedy plan takes 44:
    # 2 GPUs above the 42 above (a known regression on this demand, not yet resolved).
    assert rows[3].unplaced == 0
    assert rows[3].packed_gpus <= 44 < rows[3].naive_gpus


def test_no_samples_no_plan(engine: Engine) -> None:
    fp = FleetPanels(engine, SchedulerConfig())
    fig = fp.plan(T0, ADMIN)
    assert len(fig.data) == 0 and "no data yet" in fig.layout.annotations[0].text
    assert len(fp.whatif(T0, ADMIN).data) == 0


def test_figures_of_fixed_views() -> None:
    rows = [WhatIf(3, 2, 10.0, 6, 30.0, 0, 12.0), WhatIf(10, 5, 25.0, 20, 100.0, 1, 40.0)]
    fig = whatif_figure(rows)
    assert list(fig.data[0].y) == [10.0, 25.0] and list(fig.data[2].y) == [30.0, 100.0]
    assert list(fig.data[1].y) == [12.0, 40.0]
    assert fig.data[0].text[1] == "5 GPUs, 1 unplaced"
    assert len(whatif_figure([]).data) == 0
    assert plan_figure.__doc__


def test_store_snapshot_carries_pod_requests_and_node_allocatable(sampled: Engine) -> None:
    now = T0 + timedelta(minutes=1)
    config = SchedulerConfig(
        model_cpu_milli={"llama-3-8b": 4000},
        model_memory_mib={"llama-3-8b": 32768},
        node_cpu_milli={"gpu-node-a": 3000, "gpu-node-b": 3000},
    )
    snap = load_snapshot(sampled, config, now)
    assert snap is not None
    w = {w.model: w for w in snap.workloads}
    assert (w["llama-3-8b"].cpu_milli, w["llama-3-8b"].host_mem_mib) == (4000, 32768.0)
    assert w["mistral-7b"].cpu_milli == 0
    assert {(n.name, n.cpu_milli, n.mem_mib) for n in snap.nodes} == {
        ("gpu-node-a", 3000, None),
        ("gpu-node-b", 3000, None),
    }
    # neither node has the 4 CPUs a llama-3-8b pod requests: a repack leaves it unplaced
    p = plan(replace(snap, current=()))
    assert not any(s.model == "llama-3-8b" for s in p.slots)
    assert {u.model for u in p.unplaced} == {"llama-3-8b"}
    assert {r.resource for u in p.unplaced for _, r in u.reasons} <= {"cpu", "gpu"}
