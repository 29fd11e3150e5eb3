"""`costctl demo`: everything on the embedded default, costs flowing within a minute.

SQLite in a fresh temporary folder (or ``--db``), the price book, an admin key, an ingest key
for the replayer and a read key scoped to customer ``acme``, two example budgets, the full
``serve`` stack with a 5 s rollup, and the Azure conversation trace replayed at ``speed`` x
real time, looping, POSTed to the API like a gateway would.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from billing.apikeys import create_key
from billing.db import is_sqlite
from billing.enforcement.models import Basis, BudgetAction, Period
from billing.enforcement.schemas import BudgetCreate
from billing.enforcement.store import set_budget
from billing.ingest import ingest_usage_rows
from billing.ledger import rollup
from billing.models import ApiRole
from billing.pricebook import read_price_book, store_prices
from billing.replay import run_replay
from billing.schemas import IngestResult, UsageEventIn
from billing.synthetic import DemoWorkload
from billing.windows import Window, floor_hour
from costctl.settings import Settings
from scheduler.demo import DEMO_CAPACITY, DemoFleet, start_demo_fleet, token_load

log = logging.getLogger(__name__)
DEMO_CUSTOMER = "acme"
# acme's daily GPU cost (basis cost, the ledger's cost_usd) and everyone's list price (basis
# price, the rate card's price_usd): one budget of each basis.
DEMO_BUDGETS = {
    "acme-daily": BudgetCreate(
        customer="acme",
        period=Period.daily,
        limit_usd=10.0,
        action=BudgetAction.throttle,
        basis=Basis.cost,
    ),
    "all-daily": BudgetCreate(period=Period.daily, limit_usd=1000.0, basis=Basis.price),
}


@dataclass(frozen=True)
class DemoKeys:
    """Keys made for the demo (printed once)."""

    admin: str
    ingest: str
    tenant: str


def demo_database(db: Path | None) -> str:
    """A SQLite URL: ``db`` or a fresh file in a new temporary folder."""
    path = db or Path(tempfile.mkdtemp(prefix="costctl-demo-")) / "costctl.db"
    return f"sqlite:///{path.expanduser().resolve()}"


def demo_settings(
    base: Settings, database_url: str, api_port: int, dashboard_port: int
) -> Settings:
    """``base`` on the demo database with a short rollup interval and open auth off."""
    billing = base.billing.model_copy(update={"rollup_interval_s": 5, "require_auth": True})
    return base.model_copy(
        update={
            "database_url": database_url,
            "api_port": api_port,
            "dashboard_port": dashboard_port,
            "billing": billing,
        }
    )


def prepare(engine: Engine, settings: Settings, now: datetime) -> DemoKeys:
    """Price book, keys and example budgets (idempotent on a re-used database)."""
    prices = read_price_book(settings.billing.price_book_path)
    store_prices(engine, prices, datetime(2020, 1, 1, tzinfo=UTC))
    for name, spec in DEMO_BUDGETS.items():
        set_budget(engine, name=name, spec=spec, actor="costctl demo", now=now)
    return DemoKeys(
        admin=create_key(engine, name="demo-admin", role=ApiRole.admin, customer=None, now=now),
        ingest=create_key(engine, name="demo-replay", role=ApiRole.ingest, customer=None, now=now),
        tenant=create_key(
            engine, name="demo-acme", role=ApiRole.read, customer=DEMO_CUSTOMER, now=now
        ),
    )


class DemoFleetHook:
    """The simulated demo fleet (2 nodes, 4 GPUs, the replay's models) as a Stack job hook.

    As a hook it places the models and adds the sampling job (load follows the replayed
    usage); ``start_agents(api_url)`` (once the API listens) starts each simulated node's
    edges and a real node agent posting samples and observed allocations with the ingest
    key; ``stop()`` ends them.
    """

    def __init__(
        self, ingest_key: str, workdir: Path | None = None, clock: DemoClock | None = None
    ) -> None:
        """``workdir``: the simulated nodes' sockets, /proc and spools (default: a temp dir);
        ``clock``: the simulated hardware's clock (default: the Stack's)."""
        self.ingest_key = ingest_key
        self.workdir = workdir
        self.clock = clock
        self.demo: DemoFleet | None = None

    def __call__(
        self,
        aps: BackgroundScheduler,
        engine: Engine,
        settings: Settings,
        clock: Callable[[], datetime],
    ) -> None:
        """The Stack job hook: build the fleet and add its (live) sampling job."""
        self.demo = start_demo_fleet(engine, settings.scheduler, clock=self.clock or clock)
        self.demo.add_jobs(aps, clock)

    def start_agents(self, api_url: str) -> None:
        """Start the node agents against the listening API."""
        if self.demo is not None:
            self.demo.attach_agents(api_url, self.ingest_key, self.workdir)

    def stop(self) -> None:
        """Stop the agents and simulated nodes."""
        if self.demo is not None:
            self.demo.stop()


class DemoClock:
    """The demo's one clock: wall time, or a fixed past time while the history is backfilled."""

    def __init__(self, live: Callable[[], datetime]) -> None:
        self.live = live
        self.fixed: datetime | None = None

    def __call__(self) -> datetime:
        """The backfill's current time, else the live clock."""
        return self.fixed if self.fixed is not None else self.live()


@dataclass
class BackfillStats:
    """What the backfill stored."""

    events: int = 0
    ticks: int = 0
    ledger_hours: int = 0
    seconds: float = 0.0
    usage_s: float = 0.0  # generating and storing the requests
    ticks_s: float = 0.0  # agent rounds and shipping
    rollup_s: float = 0.0


def _minute_tokens(assigned: pd.DataFrame) -> pd.DataFrame:
    """Input/output tokens per (minute, model) of an assigned request frame."""
    frame = pd.DataFrame(
        {
            "minute": (assigned["epoch_s"] // 60).astype("int64"),
            "model": assigned["model"],
            "tin": assigned["input_tokens"],
            "tout": assigned["output_tokens"],
        }
    )
    return frame.groupby(["minute", "model"])[["tin", "tout"]].sum()


def _steps(
    tokens: pd.DataFrame, start: datetime, end: datetime, tick: timedelta, window_s: float
) -> list[tuple[datetime, dict[str, float]]]:
    """(time, load per model) every ``tick`` in [start, end), load over the trailing window."""
    m0, m1 = int(start.timestamp() // 60), int(end.timestamp() // 60)
    w = max(1, int(window_s // 60))
    steps: list[tuple[datetime, dict[str, float]]] = []
    if tokens.empty:
        frames: dict[str, Any] = {}
    else:
        wide = tokens.unstack("model", fill_value=0).reindex(range(m0 - w, m1 + 1), fill_value=0)
        trailing = wide.rolling(w, min_periods=1).sum().shift(1, fill_value=0)
        frames = {"tin": trailing["tin"], "tout": trailing["tout"]}
    t = start
    while t < end:
        m = int(t.timestamp() // 60)
        got = (
            {
                str(k): (float(frames["tin"].at[m, k]), float(frames["tout"].at[m, k]))
                for k in frames["tin"].columns
            }
            if frames
            else {}
        )
        steps.append((t, token_load(got, w * 60.0, DEMO_CAPACITY)))
        t += tick
    return steps


def backfill(
    engine: Engine,
    settings: Settings,
    workload: DemoWorkload,
    fleet: DemoFleet,
    clock: DemoClock,
    *,
    start: datetime,
    end: datetime,
    tick: timedelta = timedelta(seconds=600),
    chunk: timedelta = timedelta(hours=6),
) -> BackfillStats:
    """Usage and agent rounds on one timeline over [start, end), then one rollup.

    Usage goes through ``ingest_usage_rows`` (the API's store edge after validation), a chunk
    at a time; the agents tick every ``tick`` of past time (each sample standing for ``tick``
    seconds, as from an
    agent at that interval) at the load of the trailing ``tick`` of usage, and ship once per
    chunk; the ledger is rolled up over the whole span at the end.
    """
    stats, t0 = BackfillStats(), time.monotonic()
    sqlite = is_sqlite(engine)
    with fleet.lock:
        a = start
        while a < end:
            b, t1 = min(end, a + chunk), time.monotonic()
            rows, assigned = workload.rows(a - tick, b, sqlite_text=sqlite)
            keep = (assigned["epoch_s"] >= a.timestamp()).tolist()
            mine = [r for r, k in zip(rows, keep, strict=True) if k]
            for i in range(0, len(mine), 100_000):
                stats.events += ingest_usage_rows(engine, mine[i : i + 100_000]).inserted
            t2 = time.monotonic()
            steps = _steps(_minute_tokens(assigned), a, b, tick, tick.total_seconds())
            stats.ticks += _run_steps(fleet, clock, steps)
            stats.usage_s, stats.ticks_s = (
                stats.usage_s + t2 - t1,
                stats.ticks_s + time.monotonic() - t2,
            )
            a = b
        clock.fixed = None
    t3 = time.monotonic()
    result = rollup(engine, Window(floor_hour(start), end), settings.billing)
    stats.ledger_hours = result.hours
    stats.rollup_s = time.monotonic() - t3
    stats.seconds = time.monotonic() - t0
    return stats


def _run_steps(
    fleet: DemoFleet, clock: DemoClock, steps: list[tuple[datetime, dict[str, float]]]
) -> int:
    """Agent rounds at each step's time (clock pinned to it), shipped once."""
    if fleet.nodes is None or not steps:
        return 0
    agents = fleet.nodes.agents
    live = [a.collector.interval_s for a in agents]
    step_s = (steps[1][0] - steps[0][0]).total_seconds() if len(steps) > 1 else live[0]
    try:
        for (
            a
        ) in agents:  # each sample stands for one backfill step, as for an agent at that interval
            a.collector.interval_s = step_s
        for t, load in steps:
            clock.fixed = t
            for model, busy in load.items():
                fleet.fleet.set_load(model, busy)
            for a in agents:
                a.tick(t)
    finally:
        for a, s in zip(agents, live, strict=True):
            a.collector.interval_s = s
    for a in agents:
        a.shipper.drain()
    return len(steps) * len(agents)


class _Stopped(Exception):
    """Raised inside the replay's sleep to end it."""


class Replayer:
    """Sends the workload's requests to ``POST /v1/usage`` as their time comes, until stopped."""

    def __init__(
        self,
        api_url: str,
        key: str,
        workload: DemoWorkload,
        *,
        start: datetime,
        clock: Callable[[], datetime],
        window: timedelta = timedelta(seconds=60),
    ) -> None:
        self.workload, self.start_at, self.clock, self.window = workload, start, clock, window
        self.client = httpx.Client(
            base_url=api_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
        )
        self.stop_event = threading.Event()
        self.sent = 0
        self.windows = 0
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="replay", daemon=True)

    def _sink(self, events: Sequence[UsageEventIn]) -> IngestResult:
        body = [{**e, "time": e["time"].isoformat()} for e in events]
        r = self.client.post("/v1/usage", json=body)
        r.raise_for_status()
        self.sent += len(events)
        return IngestResult.model_validate(r.json())

    def _sleep(self, seconds: float) -> None:
        if self.stop_event.wait(seconds):
            raise _Stopped

    def _run(self) -> None:
        a = self.start_at
        try:
            while not self.stop_event.is_set():
                events = self.workload.events(a, a + self.window)
                run_replay(events, self._sink, realtime=True, now=self.clock, sleep=self._sleep)
                a += self.window
                self.windows += 1
                self._sleep(max(0.0, (a - self.clock()).total_seconds()))
        except _Stopped:
            pass
        except Exception as exc:  # reported by the CLI, never swallowed silently
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("demo replay stopped")

    def start(self) -> None:
        """Start replaying in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the batch in flight and close the HTTP client."""
        self.stop_event.set()
        self._thread.join(timeout=30)
        self.client.close()


def parse_history(text: str) -> timedelta | None:
    """``7d``, ``36h``, ``90m`` or ``0`` as a duration; None when it is not one."""
    units = {"d": 86400, "h": 3600, "m": 60}
    t = text.strip().lower()
    if t == "0":
        return timedelta(0)
    if len(t) < 2 or t[-1] not in units or not t[:-1].isdigit():
        return None
    return timedelta(seconds=int(t[:-1]) * units[t[-1]])
