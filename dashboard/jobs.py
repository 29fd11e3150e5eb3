"""Scheduled job of the dashboard: the weekly cost-review export (UTC, run by `costctl worker`)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from billing.config import BillingConfig
from billing.runner.runner import JobSpec
from billing.runner.schedule import Weekly
from dashboard.export import export_weekly, week_label

log = logging.getLogger(__name__)
JOB_ID = "dashboard.weekly_export"


def export_last_week(engine: Engine, config: BillingConfig, now: datetime) -> list[Path]:
    """Export the ISO week before the one holding ``now`` in the configured formats."""
    week = week_label(now - timedelta(days=7))
    paths = export_weekly(engine, week, config, config.export.dir, config.export.formats)
    log.info("weekly cost review %s: %s", week, ", ".join(str(p) for p in paths))
    return paths


def weekly_export_job(engine: Engine, config: BillingConfig) -> JobSpec | None:
    """``export_last_week`` at ``config.export`` day/hour/minute UTC (default Monday 06:00) as a
    worker job; None when the export is disabled. A slot missed by more than 6 hours (no
    worker was up) is skipped, not exported late."""
    e = config.export
    if not e.enabled:
        return None
    return JobSpec(
        JOB_ID,
        Weekly(e.day_of_week, e.hour, e.minute),
        lambda now: export_last_week(engine, config, now),
        grace_s=6 * 3600,
    )
