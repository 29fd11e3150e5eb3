"""A `costctl worker` process for the multi-worker test: the real job specs and Worker, plus a
slow probe job (so a kill -9 can land mid-run) and a weekly job whose slot is due now.

Run as ``python -m tests.serving.worker_proc DATABASE_URL MARKS_DIR SECONDS [PG_SCHEMA]``.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from billing.db import make_engine
from billing.runner.runner import JobSpec
from billing.runner.schedule import Every, Weekly
from costctl.settings import Settings
from costctl.worker import Worker, job_specs

PROBE_S = 1.5


def _probe(marks: Path) -> JobSpec:
    def run(now: datetime) -> str:
        with (marks / f"probe-{os.getpid()}").open("a") as f:
            f.write(f"{now.isoformat()}\n")
        time.sleep(PROBE_S)
        return "probed"

    return JobSpec("test.probe", Every(2), run)


def _weekly_due_now(marks: Path) -> JobSpec:
    now = datetime.now(UTC)
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[now.weekday()]
    slot = Weekly(day, now.hour, 0)

    def run(_now: datetime) -> str:
        (marks / f"weekly-{os.getpid()}").write_text("x")
        return "exported"

    return JobSpec("test.weekly", slot, run, grace_s=3600)


def main() -> None:
    url, marks, seconds = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    schema = sys.argv[4] if len(sys.argv) > 4 else None
    settings = Settings(
        database_url=url,
        billing={"rollup_interval_s": 2, "export": {"enabled": False}},
        worker={"lease_s": 0.5},
    )
    engine = make_engine(url, schema=schema)
    specs = job_specs(
        engine,
        settings,
        clock=lambda: datetime.now(UTC),
        extra=[_probe(marks), _weekly_due_now(marks)],
    )
    w = Worker(engine, specs, clock=lambda: datetime.now(UTC), lease_s=0.5)
    (marks / f"up-{os.getpid()}").write_text(w.worker_id)
    w.start()
    time.sleep(seconds)
    w.stop()


if __name__ == "__main__":
    main()
