"""Scheduled jobs of billing: the attribution rollup (run by `costctl worker`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from billing.config import BillingConfig
from billing.dirty import clear_marks, read_marks
from billing.ledger import RollupResult, rollup
from billing.metrics import RollupMetrics
from billing.runner.runner import JobSpec
from billing.runner.schedule import Every
from billing.windows import Window, floor_hour

log = logging.getLogger(__name__)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class RecentRollup:
    """One run of the rollup job: the recent window, the windows of marked hours, the marks."""

    window: Window
    windows: tuple[Window, ...]
    results: tuple[RollupResult, ...]
    marks_read: int
    marks_cleared: int

    @property
    def metered_cost_cents(self) -> int:
        """Metered cents of every window computed."""
        return sum(r.metered_cost_cents for r in self.results)

    def __str__(self) -> str:
        return (
            f"recent {self.window.start.isoformat()}..{self.window.end.isoformat()}, "
            f"{len(self.windows) - 1} window(s) of marked hours, marks {self.marks_read} read "
            f"{self.marks_cleared} cleared, {self.metered_cost_cents} cents metered"
        )


def plan_windows(marked: Iterable[datetime], recent: Window, max_hours: int) -> list[Window]:
    """Windows to recompute: runs of consecutive marked hours outside ``recent`` (each at
    most ``max_hours`` long), oldest first, then ``recent`` itself."""
    hours = sorted({floor_hour(h) for h in marked if not recent.start <= h < recent.end})
    out: list[Window] = []
    for h in hours:
        last = out[-1] if out else None
        if last is not None and last.end == h and last.seconds < max_hours * 3600:
            out[-1] = Window(last.start, h + HOUR)
        else:
            out.append(Window(h, h + HOUR))
    return [*out, recent]


def rollup_recent(
    engine: Engine, config: BillingConfig, now: datetime, metrics: RollupMetrics | None = None
) -> RecentRollup:
    """Re-attribute every hour ingest marked (however old) and the last ``rollup_lookback_h``
    hours up to the current (partial) one; then clear the marks read, unless re-marked since.
    """
    end = floor_hour(now) + HOUR
    recent = Window(end - timedelta(hours=config.rollup_lookback_h), end)
    with engine.connect() as conn:
        marks = read_marks(conn)
    windows = plan_windows(marks, recent, config.rollup_max_window_h)
    results = tuple(rollup(engine, w, config) for w in windows)
    with engine.begin() as conn:
        cleared = clear_marks(conn, marks)
    if metrics is not None:
        metrics.observe(u for r in results for u in r.unpriced)
    run = RecentRollup(recent, tuple(windows), results, len(marks), cleared)
    log.info("rollup: %s", run)
    return run


def rollup_job(
    engine: Engine, config: BillingConfig, metrics: RollupMetrics | None = None
) -> JobSpec:
    """The rollup as a worker job: ``rollup_recent`` every ``config.rollup_interval_s``."""
    return JobSpec(
        "billing.rollup",
        Every(config.rollup_interval_s),
        lambda now: rollup_recent(engine, config, now, metrics),
    )
