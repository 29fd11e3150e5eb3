"""`costctl worker`: every package's scheduled jobs; each slot is run by exactly one worker.

Any number of workers may run against one database. Each ticks every job every ``poll_s``
(= lease_s / 2) through ``billing.runner.JobRunner``: the job's lock decides who runs, the
``job_run`` table which slots are done (see billing/runner/runner.py). A killed worker's
lock is released by the database (PostgreSQL) or the kernel (SQLite file lock), so another
worker takes its jobs over within one poll, well inside 2 x lease_s.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from billing.enforcement.backend import DeploymentScaler
from billing.enforcement.jobs import budget_job
from billing.enforcement.service import Enforcer
from billing.jobs import rollup_job
from billing.metrics import RollupMetrics
from billing.models import JobOutcome
from billing.runner.runner import JobRunner, JobSpec
from billing.runner.runs import last_per_job
from costctl.settings import Settings
from dashboard.jobs import weekly_export_job
from scheduler.dcgm.pull import dcgm_pull_job
from scheduler.kube.pods import PodModels

log = logging.getLogger(__name__)


class _SkipOverlapNotice(logging.Filter):
    """APScheduler warns at each tick that finds the job's previous tick still running (a run
    longer than the poll); that is the designed behaviour, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


logging.getLogger("apscheduler.scheduler").addFilter(_SkipOverlapNotice())


class LazyEnforcer:
    """Builds the worker's Enforcer on first use (listing jobs never connects to Redis)."""

    def __init__(self, make: Callable[[], Enforcer]) -> None:
        self._make = make
        self._enf: Enforcer | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Enforcer:
        """The Enforcer (built once)."""
        with self._lock:
            if self._enf is None:
                self._enf = self._make()
            return self._enf


def job_specs(
    engine: Engine,
    settings: Settings,
    *,
    clock: Callable[[], datetime],
    enforcer: Callable[[], Enforcer] | None = None,
    scaler: DeploymentScaler | None = None,
    extra: Sequence[JobSpec] = (),
    metrics: RollupMetrics | None = None,
) -> list[JobSpec]:
    """The scheduled jobs: rollup, budgets, weekly export (when enabled), the DCGM pull (when
    ``scheduler.prometheus_url`` is set; pod -> model from the Kubernetes API), then ``extra``."""
    config = settings.billing
    enf = enforcer or LazyEnforcer(
        lambda: Enforcer(
            engine,
            config.enforcement,
            redis_url=settings.redis_url,
            clock=clock,
            scaler=scaler,
            resolution_s=config.ledger_resolution_s,
        )
    )
    specs = [rollup_job(engine, config, metrics), budget_job(enf, config)]
    export = weekly_export_job(engine, config)
    if export is not None:
        specs.append(export)
    dcgm = dcgm_pull_job(engine, settings.scheduler, PodModels(settings.agent.model_label))
    if dcgm is not None:
        specs.append(dcgm)
    return [*specs, *extra]


class Worker:
    """Ticks every job on an APScheduler thread pool until ``stop``."""

    def __init__(
        self,
        engine: Engine,
        specs: Sequence[JobSpec],
        *,
        clock: Callable[[], datetime],
        lease_s: float,
        worker_id: str | None = None,
    ) -> None:
        self.engine, self.specs, self.lease_s = engine, list(specs), lease_s
        self.runner = JobRunner(engine, clock=clock, worker_id=worker_id, lease_s=lease_s)
        self.scheduler = BackgroundScheduler(timezone="UTC")
        for spec in self.specs:
            self.scheduler.add_job(
                self.runner.tick,
                "interval",
                args=[spec],
                seconds=poll_s(spec, lease_s),
                id=spec.name,
                max_instances=1,
                coalesce=True,
                next_run_time=clock(),
            )

    @property
    def worker_id(self) -> str:
        """This worker's id as recorded in ``job_run``."""
        return self.runner.worker_id

    def start(self) -> None:
        """Start ticking."""
        self.scheduler.start()
        log.info("worker %s: %d jobs", self.worker_id, len(self.specs))

    def stop(self) -> None:
        """Stop ticking; a run in progress finishes first."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)


def poll_s(spec: JobSpec, lease_s: float) -> float:
    """How often a worker ticks ``spec``: lease/2, and at least 4 times per slot."""
    return max(0.05, min(lease_s / 2, spec.schedule.period_s / 4))


def jobs_report(
    engine: Engine, specs: Sequence[JobSpec], now: datetime, lease_s: float
) -> dict[str, Any]:
    """Each job's schedule, current slot, state and newest run; status ``failing`` if any
    job's newest run failed or its current slot is unclaimed past 2 x lease_s.

    States: ok, running, failing (newest run failed), late (no worker took the current slot
    in time), waiting (no run yet and the slot is still within its grace).
    """
    last = last_per_job(engine)
    jobs: dict[str, Any] = {}
    for spec in specs:
        slot = spec.schedule.slot_at(now)
        run = last.get(spec.name)
        overdue = (now - slot).total_seconds() > 2 * lease_s
        if run is not None and run.outcome == JobOutcome.error.value:
            state = "failing"
        elif run is not None and run.outcome == JobOutcome.running.value:
            state = "running"
        elif run is not None and run.slot >= slot:
            state = "ok"
        elif spec.grace_s is not None and (now - slot).total_seconds() > spec.grace_s:
            state = "ok" if run is not None else "waiting"
        else:
            state = "late" if overdue else "waiting"
        jobs[spec.name] = {
            "schedule": spec.schedule.describe(),
            "slot": slot.isoformat(),
            "state": state,
            "last": None if run is None else run.as_json(),
        }
    bad = any(j["state"] in ("failing", "late") for j in jobs.values())
    return {"status": "failing" if bad else "ok", "jobs": jobs}
