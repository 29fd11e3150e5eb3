"""The worker: slots, per-job locks and job_run records; three processes and a kill -9."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from billing.config import BillingConfig
from billing.ingest import ingest_gpu_samples, ingest_usage
from billing.models import JobRun, LedgerEntry, LedgerHour, table_of
from billing.pricebook import read_price_book, store_prices
from billing.runner.locks import lock_for
from billing.runner.runner import JobRunner, JobSpec, TickOutcome
from billing.runner.runs import RunRecord, list_runs, start_run
from billing.runner.schedule import Every, Weekly
from costctl.worker import jobs_report
from tests.serving.test_migrations import _events, _samples
from tests.utils.factories import T0

U = UTC


@pytest.mark.parametrize(
    ("schedule", "now", "slot"),
    [
        (
            Every(5),
            datetime(2026, 12, 1, 10, 0, 7, tzinfo=U),
            datetime(2026, 12, 1, 10, 0, 5, tzinfo=U),
        ),
        (
            Every(5),
            datetime(2026, 12, 1, 10, 0, 5, tzinfo=U),
            datetime(2026, 12, 1, 10, 0, 5, tzinfo=U),
        ),
        (Every(3600), datetime(2026, 12, 1, 10, 59, tzinfo=U), datetime(2026, 12, 1, 10, tzinfo=U)),
        # 2026-12-01 is a Tuesday: Monday 06:00 was yesterday
        (
            Weekly("mon", 6, 0),
            datetime(2026, 12, 1, 10, tzinfo=U),
            datetime(2026, 11, 30, 6, tzinfo=U),
        ),
        # Monday before 06:00: the previous Monday
        (
            Weekly("mon", 6, 0),
            datetime(2026, 11, 30, 5, 59, tzinfo=U),
            datetime(2026, 11, 23, 6, tzinfo=U),
        ),
        (
            Weekly("tue", 10, 0),
            datetime(2026, 12, 1, 10, tzinfo=U),
            datetime(2026, 12, 1, 10, tzinfo=U),
        ),
    ],
    ids=["every-mid", "every-edge", "hourly", "weekly-after", "weekly-before", "weekly-exact"],
)
def test_slot_at(schedule: Every | Weekly, now: datetime, slot: datetime) -> None:
    assert schedule.slot_at(now) == slot


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def test_runner_runs_each_slot_once_and_records_outcomes(engine: Engine) -> None:
    clock = Clock(datetime(2026, 12, 1, 10, 0, 1, tzinfo=U))
    calls: list[datetime] = []
    spec = JobSpec("t.every", Every(10), lambda now: calls.append(now) or len(calls))
    a = JobRunner(engine, clock=clock, worker_id="a")
    b = JobRunner(engine, clock=clock, worker_id="b")
    assert a.tick(spec) is TickOutcome.ran
    assert b.tick(spec) is TickOutcome.done  # another worker, same slot
    clock.t += timedelta(seconds=10)
    assert b.tick(spec) is TickOutcome.ran
    assert [r.worker_id for r in list_runs(engine, job="t.every")] == ["b", "a"]
    assert len(calls) == 2

    def boom(_now: datetime) -> None:
        raise RuntimeError("disk full")

    bad = JobSpec("t.bad", Every(10), boom)
    assert a.tick(bad) is TickOutcome.failed
    (run,) = list_runs(engine, job="t.bad")
    assert (run.outcome, run.error) == ("error", "RuntimeError: disk full")
    assert run.finished_at is not None
    report = jobs_report(engine, [spec, bad], clock(), lease_s=1)
    assert report["status"] == "failing"
    assert {k: v["state"] for k, v in report["jobs"].items()} == {
        "t.every": "ok",
        "t.bad": "failing",
    }


def test_a_run_whose_worker_died_is_abandoned_and_rerun(engine: Engine) -> None:
    clock = Clock(datetime(2026, 12, 1, 10, 0, 1, tzinfo=U))
    slot = datetime(2026, 12, 1, 10, 0, 0, tzinfo=U)
    start_run(engine, job="t.job", slot=slot, worker_id="dead", now=clock())
    spec = JobSpec("t.job", Every(10), lambda now: "again")
    assert JobRunner(engine, clock=clock, worker_id="alive").tick(spec) is TickOutcome.ran
    newer, older = list_runs(engine, job="t.job")
    assert (older.worker_id, older.outcome) == ("dead", "abandoned")
    assert "taken over by alive" in (older.error or "")
    assert (newer.worker_id, newer.outcome, newer.slot) == ("alive", "ok", slot)


def test_a_held_lock_means_busy_and_late_when_nobody_takes_the_slot(engine: Engine) -> None:
    clock = Clock(datetime(2026, 12, 1, 10, 0, 1, tzinfo=U))
    spec = JobSpec("t.locked", Every(10), lambda now: None)
    lock = lock_for(engine, lease_s=1)
    held, go = threading.Event(), threading.Event()

    def holder() -> None:
        with lock_for(engine, lease_s=1).hold("t.locked") as got:
            assert got
            held.set()
            go.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        assert JobRunner(engine, clock=clock, lock=lock).tick(spec) is TickOutcome.busy
    finally:
        go.set()
        t.join()
    clock.t += timedelta(seconds=5)
    assert jobs_report(engine, [spec], clock(), lease_s=1)["jobs"]["t.locked"]["state"] == "late"


def test_a_weekly_slot_past_its_grace_is_skipped(engine: Engine) -> None:
    clock = Clock(datetime(2026, 12, 1, 10, 0, tzinfo=U))  # Tuesday; Monday 06:00 is 28 h ago
    spec = JobSpec("t.weekly", Weekly("mon", 6, 0), lambda now: "x", grace_s=6 * 3600)
    assert JobRunner(engine, clock=clock).tick(spec) is TickOutcome.missed
    assert list_runs(engine) == []


def _runs(engine: Engine) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = defaultdict(list)
    for r in sorted(list_runs(engine, limit=10_000), key=lambda r: (r.started_at, r.id)):
        out[r.job].append(r)
    return out


@pytest.mark.slow
def test_three_workers_one_run_per_slot_and_kill_9_is_taken_over(
    engine: Engine, tmp_path: Path
) -> None:
    store_prices(engine, read_price_book(BillingConfig().price_book_path), T0 - timedelta(days=1))
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    ingest_usage(engine, _events(200, hour))
    ingest_gpu_samples(engine, _samples(hour))
    url = engine.url.render_as_string(hide_password=False)
    schema: list[str] = []
    if engine.dialect.name == "postgresql":
        with engine.connect() as c:
            schema = [c.execute(text("SELECT current_schema()")).scalar_one()]
    cmd = [sys.executable, "-m", "tests.serving.worker_proc", url, str(tmp_path), "14", *schema]
    procs = [subprocess.Popen(cmd) for _ in range(3)]
    try:
        # wait for a probe run to start, then kill -9 the worker running it, mid-run
        deadline = time.monotonic() + 60
        victim = None
        while victim is None and time.monotonic() < deadline:
            started = sorted(tmp_path.glob("probe-*"))
            victim = int(started[0].name.split("-")[1]) if started else None
            time.sleep(0.05)
        assert victim is not None, "no probe run started"
        os.kill(victim, signal.SIGKILL)
        for p in procs:
            p.wait(timeout=90)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    runs = _runs(engine)
    # no two runs of one job overlap
    for job, rs in runs.items():
        for prev, nxt in itertools.pairwise(rs):
            assert prev.finished_at is not None, (job, prev)
            assert nxt.started_at >= prev.finished_at, (job, prev, nxt)
    # the killed run was taken over by another worker, for the same slot
    probes = runs["test.probe"]
    dead = [r for r in probes if r.outcome == "abandoned"]
    assert len(dead) == 1 and dead[0].worker_id.split(":")[1] == str(victim)
    retry = next(r for r in probes if r.id > dead[0].id)
    # the abandoned slot again, or the next one when the takeover fell after it began
    # (runs coalesce: the newer slot's run covers the abandoned one)
    assert retry.slot - dead[0].slot in (timedelta(0), timedelta(seconds=2))
    assert retry.outcome == "ok" and retry.worker_id != dead[0].worker_id
    # every rollup slot between the first and the last was run, each once
    slots = [r.slot for r in runs["billing.rollup"] if r.outcome == "ok"]
    assert len(slots) == len(set(slots))
    span = (max(slots) - min(slots)).total_seconds()
    assert len(slots) == span / 2 + 1
    assert len(slots) >= 4
    # the weekly job completed exactly once across three workers (a run the kill cut short,
    # if the victim was in it, is marked abandoned and was done again by another worker)
    weekly = runs["test.weekly"]
    assert [r.outcome for r in weekly if r.outcome != "abandoned"] == ["ok"]
    assert all(r.worker_id.split(":")[1] == str(victim) for r in weekly if r.outcome != "ok")
    done_by = next(r.worker_id.split(":")[1] for r in weekly if r.outcome == "ok")
    assert (tmp_path / f"weekly-{done_by}").exists()
    assert {f.name for f in tmp_path.glob("weekly-*")} <= {f"weekly-{done_by}", f"weekly-{victim}"}
    assert {r.worker_id.split(":")[1] for rs in runs.values() for r in rs} <= {
        str(p.pid) for p in procs
    }
    # the ledger conserves to the cent after it all
    with engine.connect() as c:
        ledger = c.execute(select(func.sum(table_of(LedgerEntry).c.cost_cents))).scalar_one()
        metered = c.execute(
            select(func.sum(table_of(LedgerHour).c.metered_cost_cents))
        ).scalar_one()
        running = c.execute(
            select(func.count())
            .select_from(table_of(JobRun))
            .where(table_of(JobRun).c.outcome == "running")
        ).scalar_one()
    assert metered > 0 and ledger == metered
    assert running == 0
