"""`costctl serve` / `costctl demo`: the four roles composed in one process for a laptop.

The same pieces as the separate roles: the API app (``costctl.apiapp.build_api``, the role
`costctl api`), a ``costctl.worker.Worker`` over ``costctl.worker.job_specs`` (the role
`costctl worker`, with the same per-job locks and ``job_run`` records), and the dashboard on
waitress (the role `costctl dashboard`); the demo adds its simulated nodes' agents.
``Stack.stop`` shuts down in order: stop taking requests, let running jobs finish, close the
database. SIGINT/SIGTERM (or ``--duration``) trigger it.

Health: API ``GET /healthz`` (up), ``/readyz`` (database answers, schema at head),
``/healthz/jobs`` (each job's state from ``job_run``; 503 when one failed or is late);
dashboard ``GET /healthz``.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import FrameType

import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from billing.enforcement.api import ENFORCER
from billing.enforcement.backend import DeploymentScaler
from billing.enforcement.service import Enforcer
from billing.metrics import RollupMetrics
from billing.runner.runner import JobSpec
from costctl.apiapp import build_api
from costctl.dashboard_role import build_dashboard, wsgi_server
from costctl.settings import Settings
from costctl.worker import Worker, job_specs
from dashboard.callbacks import Panels

log = logging.getLogger(__name__)

# A hook that adds jobs to the worker's scheduler (the demo's simulated fleet).
JobHook = Callable[[BackgroundScheduler, Engine, Settings, Callable[[], datetime]], None]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class Stack:
    """API + worker + dashboard of one process. ``start`` then ``stop`` (idempotent)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        clock: Callable[[], datetime],
        job_hooks: tuple[JobHook, ...] = (),
        extra_jobs: Sequence[JobSpec] = (),
        panels: Panels | None = None,
        refresh_s: float = 30.0,
        default_window: str = "7d",
        scaler: DeploymentScaler | None = None,
    ) -> None:
        self.settings, self.engine, self.clock = settings, engine, clock
        enforcer: list[Enforcer] = []

        def specs(metrics: RollupMetrics | None = None) -> list[JobSpec]:
            return job_specs(
                engine,
                settings,
                clock=clock,
                enforcer=lambda: enforcer[0],
                extra=extra_jobs,
                metrics=metrics,
            )

        self.api = build_api(settings, engine, clock=clock, scaler=scaler, specs=specs())
        enforcer.append(self.api.state.costctl.extras[ENFORCER])  # the budget job shares it
        # one process: the rollup's metrics show on the API's /metrics
        metrics = RollupMetrics(enforcer[0].metrics.registry)
        self.worker = Worker(engine, specs(metrics), clock=clock, lease_s=settings.worker.lease_s)
        for hook in job_hooks:
            hook(self.worker.scheduler, engine, settings, clock)
        self.dash = build_dashboard(
            settings,
            engine,
            clock=clock,
            panels=panels,
            refresh_s=refresh_s,
            default_window=default_window,
        )
        self._api_sock = bind(settings.api_host, settings.api_port)
        self._api_addr = self._api_sock.getsockname()[:2]
        self._uvicorn = uvicorn.Server(
            uvicorn.Config(self.api, log_level="warning", lifespan="on", access_log=False)
        )
        self._wsgi = wsgi_server(self.dash, settings, settings.api_host, settings.dashboard_port)
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
        return f"http://{self.settings.api_host}:{self._wsgi.effective_port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the worker and both servers; return once the API has started."""
        self.worker.start()
        api = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [self._api_sock]}, name="api"
        )
        dash = threading.Thread(target=self._wsgi.run, name="dashboard")
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
        self._wsgi.close()
        for t in self._threads:
            t.join(timeout=15)
        self.worker.stop()
        self._api_sock.close()
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
