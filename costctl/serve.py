"""`costctl serve`: the composition root of one process.

Settings -> engine -> the API (billing.api.app.create_app with the enforcement extension), an
APScheduler BackgroundScheduler (attribution rollup, budget evaluation, weekly export, and the
scheduler's NVML sampling when it is installed), and the Dash dashboard, each HTTP server on
its own thread. ``Stack.stop`` shuts down in order: stop taking requests, let running jobs
finish, close the database. SIGINT/SIGTERM (or ``--duration``) trigger it.

Health: API ``GET /healthz`` (up), ``/readyz`` (database answers), ``/healthz/jobs`` (each
scheduled job's next run and last outcome; 503 when a job's last run failed); dashboard
``GET /healthz``.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType
from typing import Any

import uvicorn
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from fastapi import APIRouter, FastAPI, Response, status
from sqlalchemy.engine import Engine
from werkzeug.serving import BaseWSGIServer, make_server

from billing.api.app import create_app
from billing.api.deps import ApiState
from billing.enforcement.api import ENFORCER, make_extension
from billing.enforcement.backend import DeploymentScaler
from billing.enforcement.jobs import add_budget_job
from billing.enforcement.service import Enforcer
from billing.jobs import add_rollup_job
from costctl.settings import Settings
from dashboard.app import create_dash_app
from dashboard.budgets import make_budget_panel
from dashboard.callbacks import Panels
from dashboard.fleet import panels_for
from dashboard.jobs import add_weekly_export_job
from scheduler.jobs import add_sampling_job

log = logging.getLogger(__name__)

# A hook that adds jobs to the scheduler (e.g. the scheduler package's NVML sampling).
JobHook = Callable[[BackgroundScheduler, Engine, Settings, Callable[[], datetime]], None]


@dataclass
class JobMonitor:
    """Last outcome of every job, fed by APScheduler's listener (read by /healthz/jobs)."""

    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: JobExecutionEvent) -> None:
        """Record one job run."""
        with self.lock:
            self.last[event.job_id] = {
                "at": event.scheduled_run_time.isoformat(),
                "ok": event.exception is None,
                "error": None if event.exception is None else repr(event.exception)[:300],
            }

    def report(self, scheduler: BackgroundScheduler) -> dict[str, Any]:
        """Jobs with next run time and last outcome."""
        with self.lock:
            last = dict(self.last)
        jobs = {
            j.id: {
                "next_run": j.next_run_time.isoformat() if j.next_run_time else None,
                "last": last.get(j.id),
            }
            for j in scheduler.get_jobs()
        }
        ok = scheduler.running and all(v["last"] is None or v["last"]["ok"] for v in jobs.values())
        return {"status": "ok" if ok else "failing", "running": scheduler.running, "jobs": jobs}


def health_extension(
    scheduler: BackgroundScheduler, monitor: JobMonitor
) -> Callable[[FastAPI, ApiState], None]:
    """An API extension adding ``GET /healthz/jobs``."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz/jobs")
    def jobs(response: Response) -> dict[str, Any]:
        """Scheduled jobs: next run, last outcome; 503 when one failed or the scheduler stopped."""
        report = monitor.report(scheduler)
        if report["status"] != "ok":
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return report

    def install(app: FastAPI, _state: ApiState) -> None:
        app.include_router(router)

    return install


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def nvml_sampling_hook(
    aps: BackgroundScheduler, engine: Engine, settings: Settings, clock: Callable[[], datetime]
) -> None:
    """On a GPU node (``scheduler.nvml_backend=pynvml``) sample NVML into the store; with the
    simulated backend there is no fleet outside the demo, so nothing is scheduled."""
    if settings.scheduler.nvml_backend == "pynvml":
        add_sampling_job(aps, engine, settings.scheduler, clock)
    else:
        log.info("NVML sampling off: nvml_backend=simulated has no fleet outside `costctl demo`")


def default_panels(engine: Engine, settings: Settings) -> Panels:
    """Budget burn-down (enforcement), packing plan and what-if (scheduler) over the store."""
    plan, whatif = panels_for(engine, settings.scheduler)
    return Panels(budget=make_budget_panel(engine, settings.billing), plan=plan, whatif=whatif)


class Stack:
    """API + jobs + dashboard of one process. ``start`` then ``stop`` (idempotent)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        clock: Callable[[], datetime],
        job_hooks: tuple[JobHook, ...] = (),
        panels: Panels | None = None,
        refresh_s: float = 30.0,
        default_window: str = "24h",
        scaler: DeploymentScaler | None = None,
    ) -> None:
        self.settings, self.engine, self.clock = settings, engine, clock
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.monitor = JobMonitor()
        self.scheduler.add_listener(self.monitor, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        config = settings.billing
        self.api = create_app(
            engine=engine,
            config=config,
            redis_url=settings.redis_url,
            extensions=[
                make_extension(clock=clock, scaler=scaler),
                health_extension(self.scheduler, self.monitor),
            ],
        )
        enforcer: Enforcer = self.api.state.costctl.extras[ENFORCER]
        add_rollup_job(self.scheduler, engine, config, clock)
        add_budget_job(
            self.scheduler,
            engine,
            config,
            clock,
            redis_url=settings.redis_url,
            enforcer=enforcer,
            scaler=scaler,
        )
        add_weekly_export_job(self.scheduler, engine, config, clock)
        for hook in job_hooks:
            hook(self.scheduler, engine, settings, clock)
        self.dash = create_dash_app(
            engine,
            clock=clock,
            require_auth=config.require_auth,
            panels=panels or default_panels(engine, settings),
            refresh_s=refresh_s,
            default_window=default_window,
        )
        self._api_sock = bind(settings.api_host, settings.api_port)
        self._api_addr = self._api_sock.getsockname()[:2]
        self._uvicorn = uvicorn.Server(
            uvicorn.Config(self.api, log_level="warning", lifespan="on", access_log=False)
        )
        self._wsgi: BaseWSGIServer = make_server(
            settings.api_host, settings.dashboard_port, self.dash.server, threaded=True
        )
        self._threads: list[threading.Thread] = []
        self._stopped = False

    @property
    def api_url(self) -> str:
        """Base URL of the API."""
        host, port = self._api_addr
        return f"http://{host}:{port}"

    @property
    def dashboard_url(self) -> str:
        """Base URL of the dashboard."""
        return f"http://{self.settings.api_host}:{self._wsgi.server_port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the jobs and both servers; return once the API has started."""
        self.scheduler.start()
        api = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [self._api_sock]}, name="api"
        )
        dash = threading.Thread(target=self._wsgi.serve_forever, name="dashboard")
        self._threads = [api, dash]
        for t in self._threads:
            t.daemon = True
            t.start()
        waited = 0.0
        while not self._uvicorn.started and waited < timeout_s and api.is_alive():
            threading.Event().wait(0.05)
            waited += 0.05
        if not self._uvicorn.started:
            self.stop()
            raise RuntimeError(f"the API did not start within {timeout_s} s")

    def stop(self) -> None:
        """Graceful shutdown: servers stop accepting, running jobs finish, the pool closes."""
        if self._stopped:
            return
        self._stopped = True
        self._uvicorn.should_exit = True
        self._wsgi.shutdown()
        for t in self._threads:
            t.join(timeout=15)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self._api_sock.close()
        self._wsgi.server_close()
        self.engine.dispose()
        log.info("costctl stopped")


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM while inside (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: shutting down", signum)
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(
    stack: Stack,
    *,
    duration: float | None,
    stop: threading.Event | None = None,
    on_started: Callable[[Stack], None] | None = None,
    on_stopping: Callable[[], None] | None = None,
) -> None:
    """Start ``stack``, wait for a signal, ``stop`` or ``duration`` seconds, then shut down.

    ``on_started`` runs once the servers listen; ``on_stopping`` before they stop (the demo
    starts and stops its replayer there).
    """
    stop = stop or threading.Event()
    with stop_on_signals(stop):
        stack.start()
        try:
            if on_started is not None:
                on_started(stack)
            stop.wait(duration)
        finally:
            try:
                if on_stopping is not None:
                    on_stopping()
            finally:
                stack.stop()
