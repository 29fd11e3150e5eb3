"""APScheduler job of the dashboard: the weekly cost-review export (cron, UTC)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy.engine import Engine

from billing.config import BillingConfig
from dashboard.export import export_weekly, week_label

log = logging.getLogger(__name__)
JOB_ID = "dashboard.weekly_export"


def export_last_week(engine: Engine, config: BillingConfig, now: datetime) -> list[Path]:
    """Export the ISO week before the one holding ``now`` in the configured formats."""
    week = week_label(now - timedelta(days=7))
    paths = export_weekly(engine, week, config, config.export.dir, config.export.formats)
    log.info("weekly cost review %s: %s", week, ", ".join(str(p) for p in paths))
    return paths


def add_weekly_export_job(
    scheduler: BaseScheduler,
    engine: Engine,
    config: BillingConfig,
    clock: Callable[[], datetime],
) -> bool:
    """Schedule ``export_last_week`` at ``config.export`` day/hour/minute UTC (default Monday
    06:00). Returns False (nothing scheduled) when the export is disabled."""
    e = config.export
    if not e.enabled:
        return False
    scheduler.add_job(
        lambda: export_last_week(engine, config, clock()),
        "cron",
        day_of_week=e.day_of_week,
        hour=e.hour,
        minute=e.minute,
        timezone="UTC",
        id=JOB_ID,
        max_instances=1,
        coalesce=True,
        replace_existing=True,
        misfire_grace_time=3600,
    )
    return True
