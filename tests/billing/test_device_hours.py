"""device_hour: samples summed per hour x device by the rollup, replaced on re-runs."""

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing.config import BillingConfig
from billing.ingest import ingest_gpu_samples
from billing.ledger import rollup
from billing.models import DeviceHour, table_of
from billing.pricebook import read_price_book, store_prices
from billing.windows import Window
from tests.utils.factories import T0, Fleet, GpuSpec


def test_rollup_sums_samples_per_device_hour(engine: Engine) -> None:
    store_prices(engine, read_price_book(BillingConfig().price_book_path), T0 - timedelta(days=1))
    fleet = Fleet(gpus=[GpuSpec("g0", seconds=7200), GpuSpec("g1", seconds=5400)])
    samples, _ = fleet.sample_rows()  # sm_util 50 % on every sample, every 5 s
    ingest_gpu_samples(engine, samples)
    window = Window(T0, T0 + timedelta(hours=3))
    for _ in range(2):  # a re-run replaces the hours
        rollup(engine, window, BillingConfig())
    d = table_of(DeviceHour).c
    with engine.connect() as c:
        rows = c.execute(
            select(d.hour, d.gpu_uuid, d.sample_s, d.busy_s, d.interval_s, d.gpu_type).order_by(
                d.gpu_uuid, d.hour
            )
        ).all()
    got = [(r.gpu_uuid, r.hour.replace(tzinfo=None), r.sample_s, r.busy_s) for r in rows]
    t0 = T0.replace(tzinfo=None)
    assert got == [
        ("g0", t0, 3600.0, 1800.0),
        ("g0", t0 + timedelta(hours=1), 3600.0, 1800.0),
        ("g1", t0, 3600.0, 1800.0),
        ("g1", t0 + timedelta(hours=1), 1800.0, 900.0),  # 5400 s of samples: half the 2nd hour
    ]
    assert {r.interval_s for r in rows} == {5.0} and {r.gpu_type for r in rows} == {"A100-80GB"}
    # a window over the 2nd hour only replaces that hour
    rollup(engine, Window(T0 + timedelta(hours=1), T0 + timedelta(hours=2)), BillingConfig())
    with engine.connect() as c:
        assert len(c.execute(select(d.hour)).all()) == 4
    assert sum(r.sample_s for r in rows) == pytest.approx(7200 + 5400)
