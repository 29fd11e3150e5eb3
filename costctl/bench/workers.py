"""`costctl bench workers`: N real `costctl worker` processes on one store, one kill -9.

Loads the last hour with the Azure conversation trace (1x, seeded assignment) and a 4-GPU
fleet's samples and observed allocations, starts N worker processes (rollup every
``--rollup-interval`` s, the weekly export due now), kills -9 the worker that is running a
rollup at half time, and reports from ``job_run``: runs per job, overlapping runs of one job
(must be 0), rollup slots covered of those elapsed, weekly export runs (must be 1), how long
the takeover took, and whether the ledger conserves to the cent.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing.allocations import ingest_allocations
from billing.config import BillingConfig
from billing.ingest import ingest_gpu_samples, ingest_usage
from billing.models import LedgerEntry, LedgerHour, table_of
from billing.pricebook import read_price_book, store_prices
from billing.replay import load_events
from billing.runner.runs import RunRecord, list_runs
from billing.schemas import AllocationIn, GpuSampleIn
from costctl.bench.common import AZURE_CONV, emit
from costctl.context import fail, get_ctx

MODELS = ("llama-3-70b", "llama-3-8b", "mistral-7b", "mixtral-8x7b")


def _load(engine: Engine, start: datetime) -> int:
    store_prices(engine, read_price_book(BillingConfig().price_book_path), start - timedelta(1))
    events = load_events(AZURE_CONV, seed=7, start=start, speed=1.0)
    ingest_usage(engine, events)
    samples = [
        GpuSampleIn(
            ts=start + timedelta(seconds=10 * (i + 1)),
            node="node-a",
            gpu_uuid=f"GPU-{g}",
            gpu_index=g,
            gpu_type="H100-80GB",
            sm_util=40.0 + 10 * g,
            interval_s=10,
        )
        for g in range(4)
        for i in range(360)
    ]
    ingest_gpu_samples(engine, samples)
    ingest_allocations(
        engine,
        [
            AllocationIn(
                device_uuid=f"GPU-{g}",
                gpu_uuid=f"GPU-{g}",
                node="node-a",
                namespace="serving",
                pod=f"{m}-0",
                container="server",
                model=m,
                mode="gpu",
                fraction=1.0,
                start=start,
                observer="bench",
            )
            for g, m in enumerate(MODELS)
        ],
    )
    return len(events)


def _overlaps(runs: list[RunRecord]) -> int:
    rs = sorted(runs, key=lambda r: r.started_at)
    return sum(
        1
        for a, b in itertools.pairwise(rs)
        if a.finished_at is None or b.started_at < a.finished_at
    )


def _kill_a_running_rollup(engine: Engine, procs: dict[int, subprocess.Popen[bytes]]) -> float:
    """kill -9 the worker running a rollup now; seconds until another worker finished one."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = [
            r for r in list_runs(engine, job="billing.rollup", limit=3) if r.outcome == "running"
        ]
        if running:
            pid = int(running[0].worker_id.split(":")[1])
            killed_at = datetime.now(UTC)
            os.kill(pid, signal.SIGKILL)
            procs.pop(pid).wait()
            while time.monotonic() < deadline:
                done = [
                    r
                    for r in list_runs(engine, job="billing.rollup", limit=5)
                    if r.outcome == "ok" and r.started_at > killed_at
                ]
                if done:
                    assert done[-1].finished_at is not None
                    return (done[-1].finished_at - killed_at).total_seconds()
                time.sleep(0.05)
        time.sleep(0.01)
    return float("nan")


def run_workers(
    engine: Engine, url: str, *, workers: int, seconds: float, interval: int, lease: float
) -> dict[str, Any]:
    """The benchmark itself (see the module docstring)."""
    now = datetime.now(UTC)
    events = _load(engine, now.replace(second=0, microsecond=0) - timedelta(hours=1))
    export_dir = tempfile.mkdtemp(prefix="costctl-bench-export-")
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[now.weekday()]
    env = {
        **os.environ,
        "COSTCTL_DATABASE_URL": url,
        "COSTCTL_BILLING__ROLLUP_INTERVAL_S": str(interval),
        "COSTCTL_WORKER__LEASE_S": str(lease),
        "COSTCTL_BILLING__EXPORT__DIR": export_dir,
        "COSTCTL_BILLING__EXPORT__DAY_OF_WEEK": day,
        "COSTCTL_BILLING__EXPORT__HOUR": str(now.hour),
        "COSTCTL_BILLING__EXPORT__MINUTE": "0",
    }
    cmd = [sys.executable, "-m", "costctl.cli", "worker", "--duration", str(seconds)]
    started = datetime.now(UTC)
    procs = {
        p.pid: p
        for p in (subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL) for _ in range(workers))
    }
    time.sleep(seconds / 2)
    takeover_s = _kill_a_running_rollup(engine, procs)
    for p in procs.values():
        p.wait(timeout=seconds + 60)
    ended = datetime.now(UTC)
    runs = list_runs(engine, limit=100_000)
    by_job: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_job.setdefault(r.job, []).append(r)
    rollups = by_job.get("billing.rollup", [])
    ok_slots = {r.slot for r in rollups if r.outcome == "ok"}
    first = min(ok_slots)
    elapsed = int((ended - first).total_seconds() // interval)
    with engine.connect() as c:
        ledger = int(c.execute(select(func.sum(table_of(LedgerEntry).c.cost_cents))).scalar() or 0)
        metered = int(
            c.execute(select(func.sum(table_of(LedgerHour).c.metered_cost_cents))).scalar() or 0
        )
    return {
        "bench": "workers",
        "backend": engine.dialect.name,
        "workers": workers,
        "seconds": seconds,
        "rollup_interval_s": interval,
        "lease_s": lease,
        "events": events,
        "runs": {k: len(v) for k, v in sorted(by_job.items())},
        "outcomes": {
            f"{j}:{o}": n for (j, o), n in sorted(Counter((r.job, r.outcome) for r in runs).items())
        },
        "overlapping_runs": sum(_overlaps(v) for v in by_job.values()),
        "rollup_slots_covered": len(ok_slots),
        "rollup_slots_elapsed": elapsed,
        "weekly_export_runs": len(by_job.get("dashboard.weekly_export", [])),
        "abandoned": sum(r.outcome == "abandoned" for r in runs),
        "takeover_s": round(takeover_s, 3),
        "workers_seen": len({r.worker_id for r in runs}),
        "started": started.isoformat(),
        "ledger_cents": ledger,
        "metered_cents": metered,
        "conserved": ledger == metered,
    }


def register(bench_app: typer.Typer) -> None:
    """Add `bench workers`."""

    @bench_app.command("workers")
    def workers_cmd(
        ctx: typer.Context,
        workers: Annotated[int, typer.Option(min=2, max=16)] = 3,
        seconds: Annotated[float, typer.Option(min=10)] = 120,
        rollup_interval: Annotated[int, typer.Option(min=1)] = 5,
        lease_s: Annotated[float, typer.Option(min=0.2)] = 2.0,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """N workers on the configured store (use an empty database), one kill -9 mid-run."""
        if not AZURE_CONV.exists():
            fail(f"Azure trace not found at {AZURE_CONV} (set COSTCTL_SHARED_DIR)")
        c = get_ctx(ctx)
        if list_runs(c.engine, limit=1):
            fail("the store already has job runs: point --database-url at an empty database")
        result = run_workers(
            c.engine,
            c.settings.database_url,
            workers=workers,
            seconds=seconds,
            interval=rollup_interval,
            lease=lease_s,
        )
        emit(result, as_json)
