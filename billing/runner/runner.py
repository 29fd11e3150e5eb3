"""Run each job's latest slot exactly once across any number of workers.

``JobRunner.tick(spec)`` (every worker calls it every ``poll_s`` per job):
1. slot = ``spec.schedule.slot_at(now)``; a slot older than ``spec.grace_s`` is skipped;
2. take the job's lock (``billing.runner.locks``) or return ``busy`` — another worker runs it;
3. under the lock, read the job's newest ``job_run``: a finished run (ok or error) of this slot
   or a later one → ``done``; a ``running`` row → its worker died (it would hold the lock), so
   it is marked ``abandoned`` and its slot is run again (or the current slot, when a newer one
   has begun meanwhile: runs coalesce, and the newer run covers the abandoned one);
4. insert ``running``, run, record ``ok`` (with a one-line detail) or ``error``.
So runs of one job never overlap, each slot is run once (twice only when its first worker died
mid-run, visible as ``abandoned``), and a slot missed while no worker ran is made up by the
first worker back (the latest slot only: runs coalesce).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.engine import Engine

from billing.models import JobOutcome
from billing.runner.locks import JobLock, lock_for
from billing.runner.runs import abandon, finish_run, latest_run, start_run
from billing.runner.schedule import Schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSpec:
    """A scheduled job: its name, its slots, what one run does (given ``now``).

    ``grace_s``: a slot older than this when first seen is not run (None: always made up).
    """

    name: str
    schedule: Schedule
    run: Callable[[datetime], object]
    grace_s: float | None = None


class TickOutcome(StrEnum):
    ran = "ran"
    failed = "failed"
    busy = "busy"
    done = "done"
    missed = "missed"


def default_worker_id() -> str:
    """host:pid:random — unique per process, readable in `costctl jobs`."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _detail(result: object) -> str | None:
    return None if result is None else " ".join(str(result).split())[:1000]


class JobRunner:
    """Runs job slots under per-job locks, recording every run in ``job_run``."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime],
        worker_id: str | None = None,
        lock: JobLock | None = None,
        lease_s: float = 10.0,
    ) -> None:
        self.engine, self.clock = engine, clock
        self.worker_id = worker_id or default_worker_id()
        self.lock: JobLock = lock or lock_for(engine, lease_s)

    def tick(self, spec: JobSpec) -> TickOutcome:
        """Run ``spec``'s latest slot if no finished run covers it (see the module docstring)."""
        now = self.clock()
        slot = spec.schedule.slot_at(now)
        with self.lock.hold(spec.name) as held:
            if not held:
                return TickOutcome.busy
            last = latest_run(self.engine, spec.name)
            if last is not None and last.outcome == JobOutcome.running.value:
                abandon(self.engine, last.id, now=now, by=self.worker_id)
                log.warning(
                    "job %s: run %d of %s was abandoned", spec.name, last.id, last.worker_id
                )
                slot = max(slot, last.slot)  # a clock ahead of ours started it: run that
            elif last is not None and last.slot >= slot:
                return TickOutcome.done
            if spec.grace_s is not None and (now - slot).total_seconds() > spec.grace_s:
                return TickOutcome.missed
            return self._run(spec, slot)

    def _run(self, spec: JobSpec, slot: datetime) -> TickOutcome:
        rid = start_run(
            self.engine, job=spec.name, slot=slot, worker_id=self.worker_id, now=self.clock()
        )
        try:
            result = spec.run(self.clock())
        except Exception as exc:
            log.exception("job %s failed", spec.name)
            finish_run(
                self.engine,
                rid,
                outcome=JobOutcome.error,
                now=self.clock(),
                error=f"{type(exc).__name__}: {exc}",
            )
            return TickOutcome.failed
        finish_run(
            self.engine, rid, outcome=JobOutcome.ok, now=self.clock(), detail=_detail(result)
        )
        return TickOutcome.ran
