"""Ingestion on both backends: exactly once per idempotency key, one transaction per batch."""

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing.ingest import ingest_gpu_samples, ingest_usage, validate_usage_batch
from billing.models import GpuProcessSample, GpuSample, UsageEvent, table_of
from billing.schemas import USAGE_EVENT
from tests.utils.api import event
from tests.utils.factories import Fleet, GpuSpec


def count(engine: Engine, model: type) -> int:
    with engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(table_of(model))).scalar_one())


def test_resending_a_batch_never_double_counts(engine: Engine) -> None:
    batch = [USAGE_EVENT.validate_python(event(i)) for i in range(500)]
    first = ingest_usage(engine, batch)
    again = ingest_usage(engine, [*batch[:300], USAGE_EVENT.validate_python(event(900))])
    assert (first.inserted, first.duplicates) == (500, 0)
    assert (again.inserted, again.duplicates) == (1, 300)
    assert count(engine, UsageEvent) == 501
    with engine.connect() as c:
        tokens = c.execute(select(func.sum(table_of(UsageEvent).c.input_tokens))).scalar_one()
    assert tokens == sum(100 + i for i in range(500)) + 1000


def test_same_id_twice_in_one_batch_counts_once(engine: Engine) -> None:
    e = USAGE_EVENT.validate_python(event(1))
    r = ingest_usage(engine, [e, e, e])
    assert (r.received, r.inserted, r.duplicates) == (3, 1, 2)
    assert count(engine, UsageEvent) == 1


def test_same_id_from_another_source_is_another_event(engine: Engine) -> None:
    r = ingest_usage(engine, [USAGE_EVENT.validate_python(event(1, source=s)) for s in "ab"])
    assert r.inserted == 2


def test_timestamps_round_trip_in_utc(engine: Engine) -> None:
    ingest_usage(engine, [USAGE_EVENT.validate_python(event(1, time="2026-11-23T12:00:00+02:00"))])
    with engine.connect() as c:
        ts = c.execute(select(table_of(UsageEvent).c.ts)).scalar_one()
    assert ts.replace(tzinfo=UTC) == datetime(2026, 11, 23, 10, tzinfo=UTC)


def test_gpu_samples_are_idempotent(engine: Engine) -> None:
    fleet = Fleet(gpus=[GpuSpec("g0", seconds=60)], processes=[("llama", "g0", 30.0)])
    samples, procs = fleet.sample_rows()
    r1 = ingest_gpu_samples(engine, samples, procs)
    r2 = ingest_gpu_samples(engine, samples, procs)
    assert (r1.inserted, r2.inserted, r2.duplicates) == (24, 0, 24)  # 12 + 12 rows of 5 s
    assert count(engine, GpuSample) == 12
    assert count(engine, GpuProcessSample) == 12


def test_validation_reports_every_bad_event_by_index() -> None:
    raw = [event(0), event(1, input_tokens=-5), event(2), event(3, time="yesterday"), {"id": "x"}]
    good, errors = validate_usage_batch(raw)
    assert [e["id"] for e in good] == ["e0", "e2"]
    assert {(e["index"], e["loc"][-1]) for e in errors} >= {(1, "input_tokens"), (3, "time")}
    assert {e["index"] for e in errors} == {1, 3, 4}


def test_cloudevents_and_reserved_names() -> None:
    ce = {
        "specversion": "1.0",
        "id": "c1",
        "source": "gw",
        "type": "costctl.usage.v1",
        "time": "2026-11-23T10:00:00Z",
        "data": {k: v for k, v in event(0).items() if k not in ("id", "source", "time")},
    }
    good, errors = validate_usage_batch([ce, event(1, customer="__idle__")])
    assert [g["id"] for g in good] == ["c1"] and good[0]["source"] == "gw"
    assert errors[0]["index"] == 1 and errors[0]["loc"][-1] == "customer"
    assert good[0]["time"] == datetime(2026, 11, 23, 10, tzinfo=UTC)


def test_a_row_breaking_not_null_is_an_error_not_a_silent_drop(engine: Engine) -> None:
    import pytest
    from sqlalchemy.exc import IntegrityError

    from billing.ingest import bulk_insert_ignore

    table = table_of(GpuSample)
    cols = ("ts", "node", "gpu_uuid", "gpu_type", "interval_s", "gpu_index")
    row = (datetime(2026, 11, 23, tzinfo=UTC), "n", "g", "A30", 5.0, None)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        bulk_insert_ignore(conn, table, cols, [row])
    assert count(engine, GpuSample) == 0


def test_bad_cloudevent_and_bad_field_keep_their_own_indexes() -> None:
    bad_ce = {"specversion": "0.3", "id": "x", "source": "s", "data": {}}
    good, errors = validate_usage_batch([bad_ce, event(1), event(2, input_tokens=-1), event(3)])
    assert [e["id"] for e in good] == ["e1", "e3"]
    assert [(e["index"], e["loc"]) for e in errors] == [
        (0, ["events", 0]),
        (2, ["events", 2, "input_tokens"]),
    ]
