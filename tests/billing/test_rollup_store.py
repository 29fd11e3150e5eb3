"""The rollup over a real store: double collectors, unpriced GPUs, late data, observed vs
planned; on SQLite, PostgreSQL and a PostgreSQL database in Asia/Kolkata."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.engine import Engine

import billing.jobs
from billing.allocations import ingest_allocations
from billing.config import BillingConfig
from billing.dirty import mark_dirty_hours, read_marks
from billing.ingest import ingest_gpu_samples, ingest_usage
from billing.jobs import plan_windows, rollup_recent
from billing.ledger import query_costs, rollup
from billing.metrics import RollupMetrics
from billing.models import UNPRICED, DeviceHour, LedgerHour, table_of
from billing.pricebook import add_price_versions, read_price_book, store_prices
from billing.schemas import USAGE_BATCH, AllocationIn
from billing.windows import Window
from tests.utils.factories import T0, Fleet, GpuSpec

HOUR = timedelta(hours=1)
CONFIG = BillingConfig()


def prices(engine: Engine) -> None:
    store_prices(engine, read_price_book(CONFIG.price_book_path), T0 - timedelta(days=1))


def allocate(
    engine: Engine,
    model: str,
    gpu: str,
    start: datetime,
    end: datetime | None = None,
    *,
    source: str = "observed",
    fraction: float = 1.0,
) -> None:
    item = AllocationIn(
        device_uuid=gpu,
        gpu_uuid=gpu,
        node="node-a",
        namespace="ns",
        pod=f"{model}-{source}",
        container="c",
        model=model,
        mode="gpu",
        fraction=fraction,
        start=start,
        end=end,
        source=source,  # type: ignore[arg-type]
        observer="test",
    )
    ingest_allocations(engine, [item])
    with engine.begin() as c:  # what billing.allocations should do (see the report)
        mark_dirty_hours(c, start, end or start + 2 * HOUR)


def use(engine: Engine, n: int, at: datetime, *, model: str = "llama", tag: str = "e") -> None:
    events = [
        {
            "id": f"{tag}{i}",
            "source": "test",
            "time": (at + timedelta(seconds=i)).isoformat(),
            "model": model,
            "customer": "acme",
            "request_type": "chat",
            "input_tokens": 100,
            "output_tokens": 25,
        }
        for i in range(n)
    ]
    ingest_usage(engine, USAGE_BATCH.validate_python(events))


def gpu(engine: Engine, uuid: str, start: datetime, seconds: float, **kw: object) -> None:
    samples, _ = Fleet(gpus=[GpuSpec(uuid, start=start, seconds=seconds, **kw)]).sample_rows()  # type: ignore[arg-type]
    ingest_gpu_samples(engine, samples)


def kinds(engine: Engine, window: Window) -> dict[tuple[str, str], tuple[float, int]]:
    df = query_costs(engine, window, group_by=["kind", "model"])
    return {
        (r.kind, r.model): (round(float(r.gpu_seconds), 6), int(r.cost_cents))
        for r in df.itertuples()
    }


def test_two_collectors_on_one_gpu_meter_each_hour_once(store: Engine) -> None:
    prices(store)
    gpu(store, "g0", T0, 7200)  # every 5 s from 00:00:00
    gpu(store, "g0", T0 + timedelta(seconds=2.5), 7200)  # a second collector, half a beat later
    allocate(store, "llama", "g0", T0)
    use(store, 10, T0)
    use(store, 10, T0 + HOUR, tag="f")
    rollup(store, Window(T0, T0 + 2 * HOUR), CONFIG)
    h = table_of(LedgerHour).c
    with store.connect() as c:
        metered = c.execute(select(h.metered_gpu_seconds, h.metered_cost_cents).order_by(h.hour))
        assert [(pytest.approx(s), cents) for s, cents in metered] == [(3600, 512), (3600, 512)]
        d = table_of(DeviceHour).c
        booked = c.execute(select(d.sample_s)).scalars().all()
    # device_hour: the union of both streams, [00:00, 02:00:02.5), not 2 x 7200 s
    assert sum(booked) == pytest.approx(7202.5)
    assert kinds(store, Window(T0, T0 + 2 * HOUR)) == {("attributed", "llama"): (7200.0, 1024)}


def test_an_unpriced_gpu_is_a_row_a_warning_and_a_metric(
    store: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    prices(store)
    gpu(store, "g0", T0, 3600)
    gpu(store, "g1", T0, 3600, gpu_type="B200")
    allocate(store, "llama", "g0", T0)
    allocate(store, "llama", "g1", T0)
    use(store, 10, T0)
    metrics = RollupMetrics(CollectorRegistry())
    with caplog.at_level(logging.WARNING, logger="billing.ledger"):
        r = rollup(store, Window(T0, T0 + HOUR), CONFIG, metrics)
    assert r.unpriced == (("B200", "on-demand", 3600.0),)
    assert "B200/on-demand have no price" in caplog.text
    labels = {"gpu_type": "B200", "pricing_class": "on-demand"}
    assert metrics.registry.get_sample_value("costctl_unpriced_gpu_seconds", labels) == 3600
    assert metrics.registry.get_sample_value("costctl_rollups_with_unpriced_time_total") == 1
    w = Window(T0, T0 + HOUR)
    assert kinds(store, w) == {
        ("attributed", "llama"): (3600.0, 512),  # g0 priced as usual
        ("unpriced", UNPRICED): (3600.0, 0),
    }
    # pricing B200 afterwards re-prices its past hours on the next scheduled rollup
    new = pd.DataFrame(
        [("B200", "on-demand", 10.0)], columns=["gpu_type", "pricing_class", "usd_per_hour"]
    )
    assert add_price_versions(store, new, now=T0 + 30 * HOUR) == 1
    rollup_recent(store, CONFIG, T0 + 30 * HOUR, metrics)
    assert kinds(store, w) == {("attributed", "llama"): (7200.0, 1512)}
    assert metrics.registry.get_sample_value("costctl_unpriced_gpu_seconds", labels) is None


def test_data_30_hours_late_reaches_the_ledger_on_the_next_scheduled_rollup(store: Engine) -> None:
    prices(store)
    gpu(store, "g0", T0, 3600)
    allocate(store, "llama", "g0", T0)
    use(store, 10, T0)
    first = rollup_recent(store, CONFIG, T0 + 30 * timedelta(minutes=1))
    assert first.marks_read >= 1 and first.marks_cleared == first.marks_read
    with store.connect() as c:
        assert read_marks(c) == {}
    w = Window(T0, T0 + HOUR)
    before = query_costs(store, w, group_by=[])
    assert int(before["requests"].iloc[0]) == 10
    # 30 hours later: late usage for 00:xx, and a second GPU's samples for 00:00-01:00
    now = T0 + 31 * HOUR
    use(store, 30, T0 + timedelta(minutes=20), tag="late")
    gpu(store, "g1", T0, 3600)
    allocate(store, "mistral", "g1", T0, T0 + HOUR)
    use(store, 5, T0 + timedelta(minutes=40), model="mistral", tag="m")
    run = rollup_recent(store, CONFIG, now)
    assert Window(T0, T0 + HOUR) in run.windows  # recomputed although 30 h old
    after = query_costs(store, w, group_by=["model"]).set_index("model")
    assert after["requests"].to_dict() == {"llama": 40, "mistral": 5}
    assert after["cost_cents"].to_dict() == {"llama": 512, "mistral": 512}
    with store.connect() as c:
        assert read_marks(c) == {}


def test_a_write_during_the_rollup_keeps_its_mark(
    store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    prices(store)
    gpu(store, "g0", T0, 3600)
    allocate(store, "llama", "g0", T0)
    use(store, 10, T0)
    real = billing.jobs.rollup
    done: list[Window] = []

    def rollup_then_ingest(engine: Engine, window: Window, config: BillingConfig) -> object:
        out = real(engine, window, config)
        if window.start == T0 and not done:  # lands after the hour was read and computed
            done.append(window)
            use(engine, 7, T0 + timedelta(minutes=50), tag="during")
        return out

    monkeypatch.setattr(billing.jobs, "rollup", rollup_then_ingest)
    now = T0 + 10 * HOUR
    rollup_recent(store, CONFIG, now)
    with store.connect() as c:
        assert set(read_marks(c)) == {T0}  # re-marked while the rollup ran: not cleared
    assert int(query_costs(store, Window(T0, T0 + HOUR), group_by=[])["requests"].iloc[0]) == 10
    rollup_recent(store, CONFIG, now)
    assert int(query_costs(store, Window(T0, T0 + HOUR), group_by=[])["requests"].iloc[0]) == 17
    with store.connect() as c:
        assert read_marks(c) == {}


def test_observed_beats_planned_through_the_store(store: Engine) -> None:
    prices(store)
    gpu(store, "g0", T0, 3600)
    allocate(store, "planned-model", "g0", T0, source="planned")
    allocate(store, "llama", "g0", T0 + timedelta(minutes=30), source="observed", fraction=0.5)
    use(store, 10, T0, model="planned-model", tag="p")
    use(store, 10, T0 + timedelta(minutes=31), tag="o")
    rollup(store, Window(T0, T0 + HOUR), CONFIG)
    # planned holds 00:00-00:30 (256 cents); from 00:30 the observed half (128) wins and the
    # other half is unallocated (128), not the planned model's
    assert kinds(store, Window(T0, T0 + HOUR)) == {
        ("attributed", "planned-model"): (1800.0, 256),
        ("attributed", "llama"): (900.0, 128),
        ("unallocated", "__unallocated__"): (900.0, 128),
    }


def test_plan_windows_groups_marked_hours_and_caps_their_length() -> None:
    recent = Window(T0 + 48 * HOUR, T0 + 50 * HOUR)
    marks = [T0, T0 + HOUR, T0 + 2 * HOUR, T0 + 10 * HOUR, T0 + 49 * HOUR]
    got = plan_windows(marks, recent, max_hours=2)
    assert got == [
        Window(T0, T0 + 2 * HOUR),
        Window(T0 + 2 * HOUR, T0 + 3 * HOUR),
        Window(T0 + 10 * HOUR, T0 + 11 * HOUR),
        recent,  # 49:00 lies inside the recent window
    ]
    assert plan_windows([], recent, 24) == [recent]
    assert datetime(2026, 1, 1, tzinfo=UTC).tzinfo is UTC


def test_a_sample_that_began_before_the_window_counts_its_part_inside(store: Engine) -> None:
    prices(store)
    gpu(store, "g0", T0 - timedelta(seconds=1795), 1800, interval_s=10.0)  # 23:30:05 .. 00:00:05
    r = rollup(store, Window(T0, T0 + HOUR), CONFIG)
    # the reading at 23:59:55 stands for 10 s: 5 of them in 00:00-01:00
    h = table_of(LedgerHour).c
    with store.connect() as c:
        assert c.execute(select(h.metered_gpu_seconds)).scalars().all() == [pytest.approx(5.0)]
    assert r.samples == 1  # the one reading that covers time in the window
