"""Scheduled jobs of billing: the attribution rollup (run by `costctl worker`)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from billing.config import BillingConfig
from billing.ledger import RollupResult, rollup
from billing.runner.runner import JobSpec
from billing.runner.schedule import Every
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


def rollup_job(engine: Engine, config: BillingConfig) -> JobSpec:
    """The rollup as a worker job: ``rollup_recent`` every ``config.rollup_interval_s``."""
    return JobSpec(
        "billing.rollup",
        Every(config.rollup_interval_s),
        lambda now: rollup_recent(engine, config, now),
    )
