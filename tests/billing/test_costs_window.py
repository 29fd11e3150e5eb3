"""GET /v1/costs sums whole ledger buckets and says which; `costctl attribute` says when
nothing could be attributed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from billing.api.deps import get_now
from billing.config import BillingConfig
from billing.db import make_engine
from billing.ledger import rollup
from billing.models import LedgerHour, table_of
from billing.windows import Window
from costctl.cli import app
from tests.billing.test_rollup_store import allocate, gpu, prices, use
from tests.utils.api import make_api
from tests.utils.factories import T0

HOUR = timedelta(hours=1)
MIN = timedelta(minutes=1)


def _fill(engine: Engine, config: BillingConfig) -> None:
    prices(engine)
    gpu(engine, "g0", T0, 3600)
    allocate(engine, "llama", "g0", T0)
    use(engine, 60, T0)
    rollup(engine, Window(T0, T0 + HOUR), config)


def _metered(engine: Engine, start: timedelta, end: timedelta) -> int:
    h = table_of(LedgerHour).c
    with engine.connect() as c:
        q = select(func.sum(h.metered_cost_cents)).where(h.hour >= T0 + start, h.hour < T0 + end)
        return int(c.execute(q).scalar_one() or 0)


def test_a_window_below_the_resolution_is_a_422_naming_it(store: Engine) -> None:
    config = BillingConfig()
    _fill(store, config)
    api = make_api(store, config)
    api.client.app.dependency_overrides[get_now] = lambda: T0 + 47 * MIN  # type: ignore[attr-defined]
    r = api.client.get("/v1/costs?window=30m", headers=api.h("read"))
    assert r.status_code == 422
    err = r.json()["detail"][0]
    assert err["loc"] == ["query", "window"] and "ledger resolution of 3600 s" in err["msg"]
    r = api.client.get("/v1/costs?window=1h&group_by=kind", headers=api.h("read"))
    body = r.json()
    # [23:47, 00:47) overlaps the hours 23:00 and 00:00: both are summed, and said so
    assert body["effective_window"] == {
        "start": (T0 - HOUR).isoformat(),
        "end": (T0 + HOUR).isoformat(),
        "resolution_s": 3600,
    }
    assert body["metered_cost_usd"] == pytest.approx(5.12) and body["totals"]["cost_cents"] == 512


def test_five_minute_resolution_makes_30m_exact(store: Engine) -> None:
    config = BillingConfig(ledger_resolution_s=300)
    _fill(store, config)
    api = make_api(store, config)
    api.client.app.dependency_overrides[get_now] = lambda: T0 + 45 * MIN  # type: ignore[attr-defined]
    body = api.client.get("/v1/costs?window=30m&group_by=kind", headers=api.h("read")).json()
    assert body["effective_window"] == {
        "start": (T0 + 15 * MIN).isoformat(),
        "end": (T0 + 45 * MIN).isoformat(),
        "resolution_s": 300,
    }
    # 6 buckets of the hour's 512 cents, split 42/43 by largest remainder
    cents = _metered(store, 15 * MIN, 45 * MIN)
    assert cents in (255, 256, 257) and body["totals"]["cost_cents"] == cents
    assert body["metered_cost_usd"] == pytest.approx(cents / 100)
    assert _metered(store, timedelta(0), HOUR) == 512  # the hour is what an hourly ledger says
    # a window off the 5-minute grid is widened to whole buckets, and the response says so
    body = api.client.get(
        "/v1/costs",
        params={"window": f"{(T0 + 17 * MIN).isoformat()},{(T0 + 29 * MIN).isoformat()}"},
        headers=api.h("read"),
    ).json()
    assert body["effective_window"]["start"] == (T0 + 15 * MIN).isoformat()
    assert body["effective_window"]["end"] == (T0 + 30 * MIN).isoformat()
    assert body["totals"]["cost_cents"] == _metered(store, 15 * MIN, 30 * MIN)


def test_ledger_resolution_must_divide_an_hour() -> None:
    with pytest.raises(ValueError, match="divide 3600"):
        BillingConfig(ledger_resolution_s=700)


runner = CliRunner()


@pytest.fixture
def cli_db(tmp_path: Path) -> tuple[list[str], Engine]:
    url = f"sqlite:///{tmp_path}/cli.db"
    assert runner.invoke(app, ["--database-url", url, "init-db"]).exit_code == 0
    return ["--database-url", url], make_engine(url)


WINDOW = ["attribute", "--window", f"{T0.isoformat()},{(T0 + HOUR).isoformat()}"]


def test_attribute_warns_when_usage_has_no_samples(cli_db: tuple[list[str], Engine]) -> None:
    db, engine = cli_db
    use(engine, 12, T0)
    r = runner.invoke(app, [*db, *WINDOW])
    assert r.exit_code == 0
    assert (
        "warning: no GPU samples in 2026-11-23T00:00:00+00:00..2026-11-23T01:00:00+00:00: "
        "nothing metered (12 requests recorded)" in r.stderr
    )
    assert '"metered_usd": 0.0' in r.stdout


def test_attribute_warns_when_nothing_is_allocated(cli_db: tuple[list[str], Engine]) -> None:
    db, engine = cli_db
    gpu(engine, "g0", T0, 3600)
    use(engine, 12, T0)
    r = runner.invoke(app, [*db, *WINDOW])
    assert r.exit_code == 0
    assert "warning: all GPU time unallocated: no allocations recorded for 2026-11-23" in r.stderr
    assert '"unallocated_usd": 5.12' in r.stdout
    allocate(engine, "llama", "g0", T0)
    r = runner.invoke(app, [*db, *WINDOW])
    assert r.exit_code == 0 and "warning" not in r.stderr


def test_rollup_result_counts_what_the_window_held(store: Engine) -> None:
    """The figures the CLI warnings come from, on every backend."""
    use(store, 12, T0)
    r = rollup(store, Window(T0, T0 + HOUR), BillingConfig())
    assert (r.requests, r.samples, r.allocations, r.metered_cost_cents) == (12, 0, 0, 0)
    prices(store)
    gpu(store, "g0", T0, 3600)
    r = rollup(store, Window(T0, T0 + HOUR), BillingConfig())
    assert (r.samples, r.allocations, r.unallocated_cost_cents) == (720, 0, 512)
