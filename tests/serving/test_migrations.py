"""Schema migrations: first revision + data -> head loses nothing; idempotent; downgrade;
the models equal the migrated schema; pre-migration stores; PostgreSQL in another time zone."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import billing.enforcement.models  # noqa: F401  (tables on the metadata)
from billing import migrations
from billing.apikeys import create_key, verify_key
from billing.config import BillingConfig
from billing.db import init_db, make_engine
from billing.enforcement.store import list_budgets
from billing.ingest import (
    SAMPLE_COLUMNS,
    USAGE_COLUMNS,
    bulk_insert_ignore,
    ingest_gpu_samples,
    ingest_usage,
    usage_rows,
)
from billing.ledger import rollup
from billing.migrations import SchemaStatus
from billing.models import ApiRole, GpuSample, UsageEvent, table_of
from billing.pricebook import read_price_book, store_prices
from billing.schemas import USAGE_EVENT, GpuSampleIn
from billing.windows import Window
from tests.utils.factories import T0

TABLES = (
    "usage_event",
    "gpu_sample",
    "ledger_entry",
    "ledger_hour",
    "api_key",
    "enf_budget",
    "allocation",
    "price",
)


def _events(n: int, t0: datetime = T0) -> list:  # type: ignore[type-arg]
    return [
        USAGE_EVENT.validate_python(
            {
                "id": f"e{i}",
                "source": "gw",
                "time": (t0 + timedelta(minutes=10, seconds=i)).isoformat(),
                "model": "llama",
                "customer": "acme" if i % 2 else "globex",
                "request_type": "chat",
                "input_tokens": 100,
                "output_tokens": 25,
            }
        )
        for i in range(n)
    ]


def _samples(t0: datetime = T0) -> list[GpuSampleIn]:
    return [
        GpuSampleIn(
            ts=t0 + timedelta(seconds=60 * (i + 1)),
            node="n",
            gpu_uuid="GPU-0",
            gpu_type="H100-80GB",
            sm_util=50.0,
            interval_s=60,
        )
        for i in range(60)
    ]


def _fill_first_revision(engine: Engine) -> str:
    """Data written through the code paths whose tables revision 0001 already had."""
    store_prices(engine, read_price_book(BillingConfig().price_book_path), T0 - timedelta(days=1))
    # usage and samples as rows only: today's ingest also marks dirty_hour (revision 0004)
    sample_rows = [tuple(getattr(s, k) for k in SAMPLE_COLUMNS) for s in _samples()]
    with engine.begin() as c:
        sqlite = engine.dialect.name == "sqlite"
        rows = usage_rows(_events(50), sqlite_text=sqlite)
        bulk_insert_ignore(c, table_of(UsageEvent), USAGE_COLUMNS, rows)
        bulk_insert_ignore(c, table_of(GpuSample), SAMPLE_COLUMNS, sample_rows)
    key = create_key(engine, name="old", role=ApiRole.read, customer="acme", now=T0)
    with engine.begin() as c:
        # revision 0001's enf_budget had no basis (such budgets counted the rate card)
        c.execute(
            text(
                "INSERT INTO enf_budget (name, customer, period, limit_micros, soft_ratio, "
                "action, created_at, updated_at) VALUES ('acme-daily', 'acme', 'daily', "
                "10000000, 0.8, 'block', :t, :t)"
            ),
            {"t": T0},
        )
        # revision 0001's allocation had no pod fields and an optional device_uuid
        c.execute(
            text(
                "INSERT INTO allocation (model, node, gpu_uuid, device_uuid, mode, fraction, "
                "start) VALUES ('llama', 'n', 'GPU-0', NULL, 'gpu', 1.0, :t)"
            ),
            {"t": T0},
        )
        c.execute(
            text(
                "INSERT INTO ledger_entry (hour, model, customer, request_type, kind, gpu_seconds, "
                "input_tokens, output_tokens, requests, gpu_cost_usd, cost_adjustment_usd, "
                "cost_cents) VALUES (:h, 'llama', 'acme', 'chat', 'attributed', 10, 1, 1, 1, 0.5, "
                "0, 50)"
            ),
            {"h": T0 - timedelta(hours=5)},
        )
        c.execute(
            text(
                "INSERT INTO ledger_hour (hour, metered_gpu_seconds, metered_cost_usd, "
                "metered_cost_cents, computed_at) VALUES (:h, 10, 0.5, 50, :h)"
            ),
            {"h": T0 - timedelta(hours=5)},
        )
    return key


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as c:
        return {t: c.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def test_first_revision_with_data_upgrades_to_head_losing_nothing(bare_engine: Engine) -> None:
    migrations.upgrade(bare_engine, migrations.BASELINE)
    assert migrations.state(bare_engine).status is SchemaStatus.behind
    key = _fill_first_revision(bare_engine)
    before = _counts(bare_engine)
    assert before["usage_event"] == 50 and before["gpu_sample"] == 60

    assert migrations.upgrade(bare_engine) == ("0001", migrations.head())
    assert _counts(bare_engine) == before
    assert migrations.state(bare_engine).ok
    # old rows answer the new code
    principal = verify_key(bare_engine, key)
    assert principal is not None and principal.customer == "acme"
    assert [(b.name, b.basis.value) for b in list_budgets(bare_engine)] == [("acme-daily", "price")]
    with bare_engine.connect() as c:
        row = c.execute(text("SELECT source, device_uuid, pod, observer FROM allocation")).one()
    assert tuple(row) == ("planned", "GPU-0", "", "")
    result = rollup(bare_engine, Window(T0, T0 + timedelta(hours=1)), BillingConfig())
    assert result.metered_cost_cents > 0
    assert result.ledger_cost_cents == result.metered_cost_cents


def test_upgrade_twice_is_a_noop_and_the_last_revision_downgrades(bare_engine: Engine) -> None:
    init_db(bare_engine)
    head = migrations.head()
    assert migrations.upgrade(bare_engine) == (head, head)
    down = next(r.down_revision for r in migrations.history() if r.revision == head)
    before, after = migrations.downgrade(bare_engine, "-1")
    assert (before, after) == (head, down)
    assert migrations.state(bare_engine).status is SchemaStatus.behind
    assert migrations.upgrade(bare_engine) == (down, head)


def test_models_match_the_migrated_schema(engine: Engine) -> None:
    with engine.connect() as c:
        diff = compare_metadata(
            MigrationContext.configure(c, opts={"compare_type": True}), SQLModel.metadata
        )
    assert diff == []


def test_a_store_made_before_migrations_is_stamped_then_upgraded(bare_engine: Engine) -> None:
    migrations.upgrade(bare_engine, migrations.BASELINE)
    with bare_engine.begin() as c:
        c.execute(text("DROP TABLE alembic_version"))
    st = migrations.state(bare_engine)
    assert (st.current, st.status) == (None, SchemaStatus.behind)
    assert migrations.upgrade(bare_engine) == (None, migrations.head())


def test_a_revision_the_code_does_not_know_is_ahead(engine: Engine) -> None:
    with engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    st = migrations.state(engine)
    assert st.status is SchemaStatus.ahead
    assert "newer than this costctl" in st.message()


@pytest.mark.postgres
def test_postgres_sessions_are_utc_whatever_the_database_zone(kolkata_db: str) -> None:
    kolkata_url = kolkata_db
    raw = create_engine(kolkata_url.replace("postgresql://", "postgresql+psycopg://"))
    with raw.connect() as c:  # a plain connection sees the database's zone
        assert c.execute(text("SHOW timezone")).scalar_one() == "Asia/Kolkata"
    raw.dispose()
    engine = make_engine(kolkata_url)
    with engine.connect() as c:
        assert c.execute(text("SHOW timezone")).scalar_one() == "UTC"
    init_db(engine)
    store_prices(engine, read_price_book(BillingConfig().price_book_path), T0 - timedelta(days=1))
    ingest_usage(engine, _events(40))
    ingest_gpu_samples(engine, _samples())
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO allocation (model, node, gpu_uuid, device_uuid, namespace, pod, "
                "container, mode, fraction, start, source, observer) VALUES ('llama', 'n', "
                "'GPU-0', 'GPU-0', 'ns', 'p', 'c', 'gpu', 1.0, :t, 'observed', 'test')"
            ),
            {"t": T0},
        )
    rollup(engine, Window(T0, T0 + timedelta(hours=1)), BillingConfig())
    with engine.connect() as c:
        tokens = c.execute(
            text("SELECT sum(input_tokens + output_tokens) FROM ledger_entry WHERE hour = :h"),
            {"h": T0},
        ).scalar_one()
        hours = c.execute(select(func.count()).select_from(text("ledger_hour"))).scalar_one()
    engine.dispose()
    assert tokens == 40 * 125  # every token in the hour it happened, none lost to +05:30
    assert hours == 1


def test_a_dropped_column_is_drift_not_ready(engine: Engine) -> None:
    with engine.begin() as c:
        c.execute(text("ALTER TABLE usage_event DROP COLUMN request_type"))
    st = migrations.state(engine)
    assert (st.status, st.missing) == (SchemaStatus.drift, ("usage_event.request_type",))
    assert "lacks usage_event.request_type" in st.message()
