"""Exactly-once ingestion under concurrent, overlapping re-sends; the rollup job's window."""

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing.config import BillingConfig
from billing.ingest import ingest_usage, validate_usage_batch
from billing.jobs import rollup_recent
from billing.models import LedgerHour, UsageEvent, table_of
from tests.utils.api import event


def test_concurrent_overlapping_batches_count_each_event_once(engine: Engine) -> None:
    events, errors = validate_usage_batch([event(i) for i in range(2000)])
    assert not errors

    def sender(seed: int) -> int:
        rng = random.Random(seed)
        mine = events[:]
        rng.shuffle(mine)
        return sum(ingest_usage(engine, mine[k : k + 250]).inserted for k in range(0, 2000, 250))

    with ThreadPoolExecutor(4) as pool:
        inserted = list(pool.map(sender, range(4)))
    assert sum(inserted) == 2000  # every event inserted by exactly one sender
    with engine.connect() as c:
        u = table_of(UsageEvent).c
        n, tokens = c.execute(select(func.count(), func.sum(u.output_tokens))).one()
    assert n == 2000
    assert tokens == sum(10 + i for i in range(2000))


def test_rollup_job_recomputes_the_lookback_hours(engine: Engine) -> None:
    now = datetime(2026, 11, 23, 10, 25, tzinfo=UTC)
    r = rollup_recent(engine, BillingConfig(rollup_lookback_h=3), now)
    # the current partial hour (10:00-11:00) and the two before it
    assert (r.window.start, r.window.end) == (
        now.replace(minute=0) - timedelta(hours=2),
        now.replace(minute=0) + timedelta(hours=1),
    )
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(table_of(LedgerHour))).scalar_one() == 0
