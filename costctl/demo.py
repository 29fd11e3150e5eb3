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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from billing.apikeys import create_key
from billing.enforcement.models import BudgetAction, Period
from billing.enforcement.schemas import BudgetCreate
from billing.enforcement.store import set_budget
from billing.models import ApiRole
from billing.pricebook import read_price_book, store_prices
from billing.replay import load_events, run_replay
from billing.schemas import IngestResult, UsageEventIn
from costctl.settings import Settings
from scheduler.demo import DemoFleet, start_demo_fleet

log = logging.getLogger(__name__)
DEMO_CUSTOMER = "acme"
DEMO_BUDGETS = {
    "acme-daily": BudgetCreate(
        customer="acme", period=Period.daily, limit_usd=150.0, action=BudgetAction.throttle
    ),
    "all-daily": BudgetCreate(period=Period.daily, limit_usd=1000.0),
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

    def __init__(self, ingest_key: str, workdir: Path | None = None) -> None:
        """``workdir``: the simulated nodes' sockets, /proc and spools (default: a temp dir)."""
        self.ingest_key = ingest_key
        self.workdir = workdir
        self.demo: DemoFleet | None = None

    def __call__(
        self,
        aps: BackgroundScheduler,
        engine: Engine,
        settings: Settings,
        clock: Callable[[], datetime],
    ) -> None:
        """The Stack job hook: build the fleet and add its sampling job."""
        self.demo = start_demo_fleet(engine, settings.scheduler, clock=clock, aps_scheduler=aps)

    def start_agents(self, api_url: str) -> None:
        """Start the node agents against the listening API."""
        if self.demo is not None:
            self.demo.attach_agents(api_url, self.ingest_key, self.workdir)

    def stop(self) -> None:
        """Stop the agents and simulated nodes."""
        if self.demo is not None:
            self.demo.stop()


class _Stopped(Exception):
    """Raised inside the replay's sleep to end it."""


class Replayer:
    """Loops a trace into ``POST /v1/usage`` at ``speed`` x real time until stopped."""

    def __init__(
        self,
        api_url: str,
        key: str,
        trace: Path,
        *,
        speed: float,
        seed: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.trace, self.speed, self.seed, self.clock = trace, speed, seed, clock
        self.client = httpx.Client(
            base_url=api_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
        )
        self.stop_event = threading.Event()
        self.sent = 0
        self.loops = 0
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
        start = self.clock()
        try:
            while not self.stop_event.is_set():
                events = load_events(
                    self.trace, seed=self.seed, start=start, speed=self.speed, loop=self.loops
                )
                run_replay(events, self._sink, realtime=True, now=self.clock, sleep=self._sleep)
                self.loops += 1
                start = events[-1]["time"] if events else self.clock()
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
