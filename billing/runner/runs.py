"""The ``job_run`` table: one row per run (job, slot, worker, started/finished, outcome)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from billing.models import JobOutcome, JobRun, table_of

_T = table_of(JobRun)


def _aware(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RunRecord:
    """One row of ``job_run`` (times aware UTC)."""

    id: int
    job: str
    slot: datetime
    worker_id: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    error: str | None
    detail: str | None

    def as_json(self) -> dict[str, object]:
        """JSON-ready dict (ISO times)."""
        return {
            "id": self.id,
            "job": self.job,
            "slot": self.slot.isoformat(),
            "worker_id": self.worker_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "outcome": self.outcome,
            "error": self.error,
            "detail": self.detail,
        }


def _record(row: object) -> RunRecord:
    m = dict(row._mapping)  # type: ignore[attr-defined]
    for k in ("slot", "started_at", "finished_at"):
        m[k] = _aware(m[k])
    return RunRecord(**m)


def start_run(engine: Engine, *, job: str, slot: datetime, worker_id: str, now: datetime) -> int:
    """Insert a ``running`` row; returns its id."""
    with engine.begin() as conn:
        rid = conn.execute(
            _T.insert()
            .values(
                job=job,
                slot=slot,
                worker_id=worker_id,
                started_at=now,
                outcome=JobOutcome.running.value,
            )
            .returning(_T.c.id)
        ).scalar_one()
    return int(rid)


def finish_run(
    engine: Engine,
    run_id: int,
    *,
    outcome: JobOutcome,
    now: datetime,
    error: str | None = None,
    detail: str | None = None,
) -> None:
    """Close a run with its outcome (error/detail cut to the column's 1000 characters)."""
    with engine.begin() as conn:
        conn.execute(
            update(_T)
            .where(_T.c.id == run_id)
            .values(
                outcome=outcome.value,
                finished_at=now,
                error=None if error is None else error[:1000],
                detail=None if detail is None else detail[:1000],
            )
        )


def latest_run(engine: Engine, job: str) -> RunRecord | None:
    """The newest run of ``job`` by slot, then id."""
    with engine.connect() as conn:
        row = conn.execute(
            select(_T).where(_T.c.job == job).order_by(_T.c.slot.desc(), _T.c.id.desc()).limit(1)
        ).first()
    return None if row is None else _record(row)


def abandon(engine: Engine, run_id: int, *, now: datetime, by: str) -> None:
    """Mark a ``running`` row whose worker died as ``abandoned``."""
    with engine.begin() as conn:
        conn.execute(
            update(_T)
            .where(_T.c.id == run_id, _T.c.outcome == JobOutcome.running.value)
            .values(
                outcome=JobOutcome.abandoned.value,
                finished_at=now,
                error=f"worker died mid-run; slot taken over by {by}",
            )
        )


def list_runs(engine: Engine, *, job: str | None = None, limit: int = 100) -> list[RunRecord]:
    """Runs newest first (by start), optionally of one job."""
    q = select(_T)
    if job is not None:
        q = q.where(_T.c.job == job)
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(_T.c.started_at.desc(), _T.c.id.desc()).limit(limit)).all()
    return [_record(r) for r in rows]


def last_per_job(engine: Engine) -> dict[str, RunRecord]:
    """The newest run of every job that has run."""
    with engine.connect() as conn:
        names = conn.execute(select(_T.c.job).distinct()).scalars().all()
    out = {}
    for name in names:
        rec = latest_run(engine, name)
        if rec is not None:
            out[name] = rec
    return out
