"""APScheduler jobs of billing: the attribution rollup."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy.engine import Engine

from billing.config import BillingConfig
from billing.ledger import RollupResult, rollup
from billing.windows import Window, floor_hour

log = logging.getLogger(__name__)


def rollup_recent(engine: Engine, config: BillingConfig, now: datetime) -> RollupResult:
    """Re-attribute the last ``rollup_lookback_h`` hours up to the current (partial) hour."""
    end = floor_hour(now) + timedelta(hours=1)
    window = Window(end - timedelta(hours=config.rollup_lookback_h), end)
    result = rollup(engine, window, config)
    log.info(
        "rollup %s..%s: %d rows, %d cents metered",
        window.start,
        window.end,
        result.rows,
        result.metered_cost_cents,
    )
    return result


def add_rollup_job(
    scheduler: BaseScheduler,
    engine: Engine,
    config: BillingConfig,
    clock: Callable[[], datetime],
) -> None:
    """Run ``rollup_recent`` every ``config.rollup_interval_s`` seconds (one at a time)."""
    scheduler.add_job(
        lambda: rollup_recent(engine, config, clock()),
        "interval",
        seconds=config.rollup_interval_s,
        id="billing.rollup",
        max_instances=1,
        coalesce=True,
        replace_existing=True,
        next_run_time=clock(),
    )
