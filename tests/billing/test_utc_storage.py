"""Times with a UTC offset are stored and read back as the same instant, on every write path.

The bug this pins: SQLite's DateTime wrote an aware value's local wall clock with the offset
dropped, so an allocation starting 05:30+05:30 (= 00:00 UTC) was read as 05:30 UTC and its
GPU cost went to __unallocated__.
"""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

import billing.enforcement.models  # noqa: F401  (registers the enforcement tables)
from billing.allocations import ingest_allocations
from billing.config import BillingConfig
from billing.ingest import bulk_insert_ignore, ingest_gpu_samples, ingest_usage
from billing.ledger import query_costs, rollup
from billing.models import Allocation, LedgerHour, UsageEvent, table_of
from billing.pricebook import read_price_book, store_prices
from billing.schemas import USAGE_BATCH, AllocationIn
from billing.utc import UTCDateTime, is_timestamp
from billing.windows import Window
from tests.utils.factories import T0, Fleet, GpuSpec

OFFSETS = {
    "+05:30": timezone(timedelta(hours=5, minutes=30)),
    "-08:00": timezone(timedelta(hours=-8)),
}
HOUR = timedelta(hours=1)


def _alloc_row(tz: timezone) -> dict[str, object]:
    return {
        "model": "llama",
        "node": "node-a",
        "gpu_uuid": "g0",
        "device_uuid": "g0",
        "namespace": "ns",
        "pod": "p",
        "container": "c",
        "mode": "gpu",
        "fraction": 1.0,
        "start": T0.astimezone(tz),
        "end": (T0 + HOUR).astimezone(tz),
        "source": "observed",
        "observer": "test",
    }


def _write_allocation(engine: Engine, path: str, tz: timezone) -> None:
    row = _alloc_row(tz)
    if path == "orm":
        with Session(engine) as s:
            s.add(Allocation(**row))
            s.commit()
    elif path == "core":
        with engine.begin() as c:
            c.execute(insert(table_of(Allocation)), [row])
    else:
        ingest_allocations(engine, [AllocationIn.model_validate(row)])


def _usage(tz: timezone, n: int = 20) -> list[dict[str, object]]:
    events = [
        {
            "id": f"e{i}",
            "source": "test",
            "time": (T0 + timedelta(minutes=10, seconds=i)).astimezone(tz).isoformat(),
            "model": "llama",
            "customer": "acme",
            "request_type": "chat",
            "input_tokens": 100,
            "output_tokens": 25,
        }
        for i in range(n)
    ]
    return USAGE_BATCH.validate_python(events)  # type: ignore[return-value]


@pytest.mark.parametrize("path", ["orm", "core", "api-schema"])
@pytest.mark.parametrize("offset", list(OFFSETS))
def test_offset_times_keep_their_instant_and_their_cost(
    store: Engine, path: str, offset: str
) -> None:
    tz = OFFSETS[offset]
    store_prices(store, read_price_book(BillingConfig().price_book_path), T0 - timedelta(days=1))
    samples, _ = Fleet(gpus=[GpuSpec("g0")]).sample_rows()
    for s in samples:  # the collector's clock is in the offset zone
        s.ts = s.ts.astimezone(tz)
    ingest_gpu_samples(store, samples)
    _write_allocation(store, path, tz)
    ingest_usage(store, _usage(tz))

    with Session(store) as s:
        got = s.exec(select(Allocation.start, Allocation.end)).one()  # type: ignore[call-overload]
    assert got == (T0, T0 + HOUR)
    assert got[0].utcoffset() == timedelta(0)  # aware UTC on both backends
    rollup(store, Window(T0, T0 + HOUR), BillingConfig())
    by_kind = query_costs(store, Window(T0, T0 + HOUR), group_by=["kind", "model"])
    # one A100-80GB on-demand hour = 512 cents, all held by llama, which served 20 requests
    # with sm_util unknown (no process samples): billed in full, nothing unallocated
    assert by_kind[["kind", "model", "cost_cents"]].values.tolist() == [
        ["attributed", "llama", 512]
    ]
    assert int(by_kind["requests"].sum()) == 20
    with store.connect() as c:
        hours = c.execute(select(table_of(LedgerHour).c.hour)).scalars().all()
    assert hours == [T0]


@pytest.mark.parametrize("offset", list(OFFSETS))
def test_core_bulk_insert_converts_offsets(store: Engine, offset: str) -> None:
    """bulk_insert_ignore (SQLite executemany / PostgreSQL binary COPY) stores UTC too."""
    tz = OFFSETS[offset]
    t = table_of(UsageEvent)
    ts = datetime(2026, 11, 23, 23, 59, 59, 999_999, tzinfo=UTC)
    row = ("s", "e1", ts.astimezone(tz), "m", "c", "chat", 1, 2, None, "ok", None)
    cols = [c.name for c in t.c]
    with store.begin() as c:
        assert bulk_insert_ignore(c, t, cols, [row]) == 1
    with store.connect() as c:
        assert c.execute(select(t.c.ts)).scalar_one() == ts
        # the UTC instant is what the database compares against
        at = {"a": ts - timedelta(microseconds=1), "b": ts + timedelta(microseconds=1)}
        n = c.execute(text("SELECT count(*) FROM usage_event WHERE ts > :a AND ts < :b"), at)
        assert n.scalar_one() == 1


def test_every_timestamp_column_is_utc_typed() -> None:
    """The class fix: no table keeps a timestamp column outside UTCDateTime."""
    loose = [
        f"{t.name}.{c.name}"
        for t in SQLModel.metadata.sorted_tables
        for c in t.columns
        if is_timestamp(c.type) and not isinstance(c.type, UTCDateTime)
    ]
    assert loose == []
