"""The DCGM pull job's edge: Prometheus in, GPU samples and observed allocations out.

``pull_once`` reads ``[cursor, now - lag)`` on the step grid in chunks, converts each chunk
(scheduler.dcgm.convert), stores it through billing's ingestion and moves the cursor
(``pull_cursor`` row ``dcgm``). Re-pulling a range stores nothing twice: samples are unique on
(gpu_uuid, ts), process rows on (device_uuid, ts, pid), allocations on their natural key, and
a holding that runs across chunk or pull boundaries keeps its first start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from billing.allocations import ingest_allocations, query_allocations
from billing.ingest import ingest_gpu_samples
from billing.models import PullCursor, table_of
from billing.runner.runner import JobSpec
from billing.runner.schedule import Every
from billing.schemas import AllocationIn
from scheduler.config import SchedulerConfig
from scheduler.dcgm.convert import METRICS, OBSERVER, Options, convert, pods_of
from scheduler.promclient import PromClient, Series

log = logging.getLogger(__name__)

CURSOR = "dcgm"
# Prometheus refuses query_range answers over 11,000 points per series.
MAX_STEPS = 2000
ModelOf = Callable[[str, str], str | None]


@dataclass
class PullResult:
    """What one pull stored: the range read, row counts and what could not be attributed."""

    start: datetime | None = None
    end: datetime | None = None
    steps: int = 0
    samples_inserted: int = 0
    samples_duplicate: int = 0
    allocations_inserted: int = 0
    allocations_updated: int = 0
    allocations_unchanged: int = 0
    unresolved: set[tuple[str, str]] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        """One line for logs and ``job_run.detail``."""
        return (
            f"dcgm pull [{self.start}, {self.end}): {self.steps} steps, "
            f"{self.samples_inserted} rows new ({self.samples_duplicate} known), allocations "
            f"{self.allocations_inserted} new/{self.allocations_updated} closed/"
            f"{self.allocations_unchanged} unchanged, {len(self.unresolved)} pods without model"
        )


def options(config: SchedulerConfig) -> Options:
    """The conversion's settings out of the scheduler's."""
    return Options(
        step_s=config.prometheus_step_s,
        gpu_types=config.dcgm_gpu_types,
        pricing_class=config.dcgm_pricing_class,
        workload_labels=config.dcgm_workload_labels,
    )


def make_client(config: SchedulerConfig) -> PromClient:
    """A Prometheus client for ``config.prometheus_url``. Raises: ValueError when unset."""
    if not config.prometheus_url:
        raise ValueError("scheduler.prometheus_url is not set: the DCGM pull is off")
    return PromClient(config.prometheus_url, timeout_s=config.prometheus_timeout_s)


def _grid(ts: datetime, step_s: int) -> datetime:
    """``ts`` floored to the step grid (multiples of step_s since the epoch)."""
    s = int(ts.timestamp()) // step_s * step_s
    return datetime.fromtimestamp(s, UTC)


def read_cursor(engine: Engine, source: str = CURSOR) -> datetime | None:
    """The cursor's ``until`` (aware UTC), or None before the first pull."""
    t = table_of(PullCursor).c
    with engine.connect() as conn:
        value = conn.execute(select(t.until).where(t.source == source)).scalar_one_or_none()
    return None if value is None else _aware(value)


def write_cursor(engine: Engine, until: datetime, now: datetime, source: str = CURSOR) -> None:
    """Set the cursor (insert or update in one transaction)."""
    table = table_of(PullCursor)
    with engine.begin() as conn:
        res = conn.execute(
            update(table).where(table.c.source == source).values(until=until, updated_at=now)
        )
        if not res.rowcount:
            conn.execute(table.insert().values(source=source, until=until, updated_at=now))


def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def query_dcgm(
    prom: PromClient, start: datetime, end: datetime, config: SchedulerConfig
) -> dict[str, list[Series]]:
    """Every DCGM metric at start, start + step, ..., end - step (plain selectors)."""
    step = config.prometheus_step_s
    last = end - timedelta(seconds=step)
    sel = config.prometheus_selector.strip()
    return {m: prom.query_range(f"{m}{{{sel}}}" if sel else m, start, last, step) for m in METRICS}


def known_holdings(engine: Engine, at: datetime) -> list[AllocationIn]:
    """Stored observed holdings of observer ``dcgm`` that are open or end after ``at``."""
    rows = query_allocations(engine, source="observed", since=at, until=at, limit=1_000_000)
    fields = AllocationIn.model_fields
    return [
        AllocationIn.model_validate(
            {
                **{k: v for k, v in r.model_dump().items() if k in fields},
                "start": _aware(r.start),
                "end": None if r.end is None else _aware(r.end),
            }
        )
        for r in rows
        if r.observer == OBSERVER
    ]


def resolve_models(
    pods: set[tuple[str, str]], model_of: ModelOf, known: list[AllocationIn]
) -> dict[tuple[str, str], str | None]:
    """Each pod's model through ``model_of``; a pod it no longer knows keeps its stored model."""
    stored = {(a.namespace, a.pod): a.model for a in known}
    return {p: model_of(*p) or stored.get(p) for p in sorted(pods)}


def pull_range(
    engine: Engine,
    config: SchedulerConfig,
    prom: PromClient,
    start: datetime,
    end: datetime,
    model_of: ModelOf,
) -> PullResult:
    """Pull and store ``[start, end)`` (on the step grid, at most MAX_STEPS steps).

    Raises: PrometheusError (nothing of the range is stored then); ValueError off the grid.
    """
    opts = options(config)
    results = query_dcgm(prom, start, end, config)
    known = known_holdings(engine, start)
    models = resolve_models(pods_of(results, opts), model_of, known)
    out = convert(results, start=start, end=end, opts=opts, models=models, known=known)
    stored = ingest_gpu_samples(engine, out.samples, out.processes)
    allocs = ingest_allocations(engine, out.allocations)
    return PullResult(
        start=start,
        end=end,
        steps=int((end - start).total_seconds()) // opts.step_s,
        samples_inserted=stored.inserted,
        samples_duplicate=stored.duplicates,
        allocations_inserted=allocs.inserted,
        allocations_updated=allocs.updated,
        allocations_unchanged=allocs.unchanged,
        unresolved=out.unresolved,
        problems=out.problems,
    )


def pull_once(
    engine: Engine,
    config: SchedulerConfig,
    prom: PromClient,
    now: datetime,
    model_of: ModelOf,
) -> PullResult:
    """Pull everything since the cursor up to ``now - prometheus_lag_s``, chunk by chunk.

    Details: the first pull starts ``dcgm_backfill_s`` before now. The cursor moves after
    each stored chunk, so a failure (PrometheusError, a store error) loses no more than the
    chunk, which the next pull reads again.
    """
    step = config.prometheus_step_s
    end = _grid(now - timedelta(seconds=config.prometheus_lag_s), step)
    cursor = read_cursor(engine)
    start = cursor or _grid(now - timedelta(seconds=config.dcgm_backfill_s), step)
    total = PullResult(start=start, end=start)
    while start < end:
        stop = min(end, start + timedelta(seconds=MAX_STEPS * step))
        part = pull_range(engine, config, prom, start, stop, model_of)
        write_cursor(engine, stop, now)
        _add(total, part)
        start = stop
    if total.unresolved:
        log.warning(
            "DCGM pull: no model for pods %s (their GPU time stays unallocated)",
            ", ".join(f"{ns}/{pod}" for ns, pod in sorted(total.unresolved))[:500],
        )
    return total


def _add(total: PullResult, part: PullResult) -> None:
    total.end = part.end
    total.steps += part.steps
    total.samples_inserted += part.samples_inserted
    total.samples_duplicate += part.samples_duplicate
    total.allocations_inserted += part.allocations_inserted
    total.allocations_updated += part.allocations_updated
    total.allocations_unchanged += part.allocations_unchanged
    total.unresolved |= part.unresolved
    total.problems += part.problems


def static_models(mapping: Mapping[tuple[str, str], str]) -> ModelOf:
    """A ``model_of`` from a fixed (namespace, pod) -> model table (tests, small setups)."""
    return lambda namespace, pod: mapping.get((namespace, pod))


def dcgm_pull_job(engine: Engine, config: SchedulerConfig, model_of: ModelOf) -> JobSpec | None:
    """``pull_once`` as a worker job every ``dcgm_pull_interval_s`` (None: no prometheus_url).

    Details: a missed slot is not made up (grace = one interval): the next run reads from
    the cursor anyway.
    """
    if not config.prometheus_url:
        return None
    prom = make_client(config)
    return JobSpec(
        "scheduler.dcgm_pull",
        Every(config.dcgm_pull_interval_s),
        lambda now: pull_once(engine, config, prom, now, model_of),
        grace_s=config.dcgm_pull_interval_s,
    )
