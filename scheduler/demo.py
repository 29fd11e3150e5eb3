"""The demo's simulated fleet: 2 nodes, 4 GPUs, the replay's four models, load from usage.

``start_demo_fleet`` builds it, places the models (the "current" placement) and returns a
DemoFleet. ``attach_agents(api_url, api_key)`` (once the API listens) gives every simulated
node its edges (a kubelet PodResources gRPC server, a /proc tree, a pod lister) and a REAL
node agent (scheduler.agent) that posts samples and observed allocations to the API;
``sample(now)`` sets each model's load from the usage events of the last minutes and runs
one agent round per node. Nothing here writes allocations or samples to the store itself.

Why MIG sits on the H100s here: per-GPU-instance SM utilisation comes from GPM, which NVML
offers on Hopper only; an A100 under MIG reports no SM utilisation (a recorded fault).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing.config import DEFAULT_PRICE_BOOK
from billing.models import UsageEvent, table_of
from billing.pricebook import prices_at, read_price_book
from scheduler.agent.simnode import SimNodes, start_sim_nodes
from scheduler.config import SchedulerConfig
from scheduler.jobs import make_collectors
from scheduler.model import Isolation, LatencyClass, Mode, Slot, Snapshot, Workload
from scheduler.nvml import Collector
from scheduler.planner import plan
from scheduler.policy import Policy
from scheduler.simfleet import NodeSpec, SimFleet, build_fleet
from scheduler.snapshot import fleet_gpus, make_snapshot, price_map

DEMO_SPEC = (
    NodeSpec("gpu-node-a", "A100-80GB", 2, "on-demand"),
    NodeSpec("gpu-node-b", "H100-80GB", 2, "on-demand", mig=(("3g", "2g", "2g"), None)),
)
DEMO_WORKLOADS = {
    "llama-3-70b": Workload("llama-3-70b", 70000, 0.70, 2, Isolation.shared),
    "llama-3-8b": Workload("llama-3-8b", 20000, 0.30, 2, Isolation.shared),
    "mistral-7b": Workload("mistral-7b", 16000, 0.20, 2, Isolation.strict),
    "mixtral-8x7b": Workload(
        "mixtral-8x7b", 48000, 0.50, 1, Isolation.best_effort, LatencyClass.batch
    ),
}
# (model, node, gpu index, mode, MIG profile key or None, share, memory MiB)
DEMO_PLACEMENT = (
    ("llama-3-70b", "gpu-node-a", 0, Mode.mps, None, 0.70, 70000),
    ("mixtral-8x7b", "gpu-node-a", 1, Mode.mps, None, 0.50, 48000),
    ("llama-3-8b", "gpu-node-a", 1, Mode.mps, None, 0.30, 20000),
    ("llama-3-8b", "gpu-node-b", 0, Mode.mig, "3g", 3 / 7, 20000),
    ("mistral-7b", "gpu-node-b", 0, Mode.mig, "2g", 2 / 7, 16000),
    ("mistral-7b", "gpu-node-b", 0, Mode.mig, "2g", 2 / 7, 16000),
    ("llama-3-70b", "gpu-node-b", 1, Mode.gpu, None, 1.0, 70000),
)
# Weighted tokens/s (input + 4 x output) a model's replicas serve at 100% busy.
DEMO_CAPACITY = {
    "llama-3-70b": 6000.0,
    "llama-3-8b": 12000.0,
    "mistral-7b": 8000.0,
    "mixtral-8x7b": 5000.0,
}


def usage_load(
    engine: Engine, now: datetime, window_s: float, capacity: dict[str, float]
) -> dict[str, float]:
    """Busy fraction per model from its usage events in (now - window, now].

    Details: (Σ input + 4 x Σ output tokens) / window_s / capacity[model], capped at 0.95.
    """
    u = table_of(UsageEvent).c
    stmt = (
        select(u.model, func.sum(u.input_tokens), func.sum(u.output_tokens))
        .where(u.ts > now - timedelta(seconds=window_s), u.ts <= now)
        .group_by(u.model)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return token_load({m: (float(a or 0), float(b or 0)) for m, a, b in rows}, window_s, capacity)


def token_load(
    tokens: dict[str, tuple[float, float]], window_s: float, capacity: dict[str, float]
) -> dict[str, float]:
    """Busy fraction per model from (input, output) tokens served in ``window_s`` seconds.

    Details: (input + 4 x output) / window_s / capacity[model], capped at 0.95.
    """
    load = {m: 0.0 for m in capacity}
    for model, (tin, tout) in tokens.items():
        if model in capacity:
            load[model] = min(0.95, (tin + 4.0 * tout) / window_s / capacity[model])
    return load


@dataclass
class DemoFleet:
    """The running demo fleet: simulation, current placement, collectors."""

    fleet: SimFleet
    engine: Engine
    config: SchedulerConfig
    slots: tuple[Slot, ...]
    workloads: tuple[Workload, ...]
    prices: dict[tuple[str, str], float]
    collectors: list[Collector] = field(default_factory=list)
    window_s: float = 300.0
    capacity: dict[str, float] = field(default_factory=lambda: dict(DEMO_CAPACITY))
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    nodes: SimNodes | None = None
    # sample(), stop() and the demo's backfill run on different threads (the worker's pool,
    # the shutdown, the demo's start-up); each holds this while it drives the agents
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def refresh_load(self, now: datetime) -> dict[str, float]:
        """Set every model's load from its recent usage events; returns the loads."""
        load = usage_load(self.engine, now, self.window_s, self.capacity)
        for model, busy in load.items():
            self.fleet.set_load(model, busy)
        return load

    def attach_agents(self, api_url: str, api_key: str, workdir: Path | None = None) -> SimNodes:
        """Start the simulated node edges and one real agent per node, posting to ``api_url``
        with ``api_key`` (role ingest). ``workdir``: sockets, /proc and spools (default: a
        temp dir removed by ``stop``)."""
        if self.nodes is None:
            self.nodes = start_sim_nodes(
                self.fleet,
                api_url,
                api_key,
                workdir,
                interval_s=self.config.sample_interval_s,
                clock=self.clock,
            )
        return self.nodes

    def sample(self, now: datetime) -> int:
        """Refresh the load, then one agent round per node at ``now``; returns nodes ticked.

        Before ``attach_agents`` only the load is refreshed (no agent, nothing measured).
        """
        with self.lock:  # never tick agents that stop() is closing, nor during the backfill
            self.refresh_load(now)
            if self.nodes is None:
                return 0
            self.nodes.tick(now)
            return len(self.nodes.agents)

    def stop(self) -> None:
        """Stop the agents and the simulated node edges (idempotent; waits for a tick)."""
        with self.lock:
            if self.nodes is not None:
                self.nodes.stop()
                self.nodes = None

    def snapshot(self, now: datetime | None = None) -> Snapshot:
        """The fleet, the demo demand and the current placement, frozen."""
        gpus = fleet_gpus(self.fleet, self.prices)
        return make_snapshot(gpus, self.workloads, self.slots, now)

    def add_jobs(self, aps_scheduler: BaseScheduler, clock: Callable[[], datetime]) -> None:
        """Sample (with load refresh) every ``config.sample_interval_s``."""
        aps_scheduler.add_job(
            lambda: self.sample(clock()),
            "interval",
            seconds=self.config.sample_interval_s,
            id="scheduler.demo_sample",
            max_instances=1,
            coalesce=True,
            replace_existing=True,
            next_run_time=clock(),
        )


def _prices(engine: Engine, now: datetime) -> dict[tuple[str, str], float]:
    frame: pd.DataFrame = prices_at(engine, now)
    if frame.empty:
        frame = read_price_book(DEFAULT_PRICE_BOOK)
    return price_map(frame)


def start_demo_fleet(
    engine: Engine,
    config: SchedulerConfig,
    *,
    models: Sequence[str] = tuple(DEMO_WORKLOADS),
    seed: int = 0,
    clock: Callable[[], datetime] | None = None,
    aps_scheduler: BaseScheduler | None = None,
) -> DemoFleet:
    """Build the demo fleet and place ``models`` (no allocation is written: the agents
    attached by ``DemoFleet.attach_agents`` observe and post them).

    With ``aps_scheduler`` the sampling job is added too. Prices come from the store's price
    table (or the default price book when it is empty). Raises: KeyError for an unknown model.
    """
    clock = clock or (lambda: datetime.now(UTC))
    now = clock()
    unknown = [m for m in models if m not in DEMO_WORKLOADS]
    if unknown:
        raise KeyError(f"unknown demo model(s) {unknown}; known: {list(DEMO_WORKLOADS)}")
    fleet = build_fleet(DEMO_SPEC, clock=clock, seed=seed)
    slots: list[Slot] = []
    replica: dict[str, int] = {}
    for model, node, index, mode, key, share, mem in DEMO_PLACEMENT:
        if model not in models:
            continue
        proc = fleet.place(model, node, index, mem_mib=mem, mode=mode, profile=key, share=share)
        g = fleet.gpu(node, index)
        inst = next((i for i in g.instances if i.gi_id == proc.gi_id), None)
        profile = None if inst is None else _profile_name(g.type.name, inst.key)
        replica[model] = replica.get(model, -1) + 1
        slots.append(
            Slot(
                model,
                replica[model],
                node,
                g.uuid,
                mode,
                round(share, 6),
                profile,
                None if inst is None else inst.start,
                thread_pct=round(share * 100) if mode is Mode.mps else None,
                mem_limit_mib=mem if mode is Mode.mps else None,
            )
        )
    demo = DemoFleet(
        fleet,
        engine,
        config,
        tuple(slots),
        tuple(DEMO_WORKLOADS[m] for m in models),
        _prices(engine, now),
        clock=clock,
    )
    demo.collectors = make_collectors(config, fleet=fleet)
    if aps_scheduler is not None:
        demo.add_jobs(aps_scheduler, clock)
    return demo


def _profile_name(type_name: str, key: str) -> str:
    from scheduler.mig import profile_name

    return profile_name(type_name, key)


def demo_plan(demo: DemoFleet, policy: Policy | None = None) -> object:
    """The planner's proposal for the demo fleet (see scheduler.views for the dashboard)."""
    return plan(demo.snapshot(), policy)
