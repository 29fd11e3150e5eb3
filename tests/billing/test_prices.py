"""Effective-dated prices: versions from the YAML loader and `costctl prices set`, each ledger
hour priced by the version in force at its start, re-priced hours recomputed by the job."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from billing.config import DEFAULT_PRICE_BOOK, BillingConfig
from billing.dirty import read_marks
from billing.jobs import rollup_recent
from billing.ledger import query_costs
from billing.pricebook import (
    FIRST_EFFECTIVE,
    add_price_versions,
    load_price_book,
    price_versions,
)
from costctl.cli import app
from tests.billing.test_rollup_store import allocate, gpu, use
from tests.utils.factories import T0

HOUR = timedelta(hours=1)
NOW = T0 + 40 * HOUR
runner = CliRunner()


def _book(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "prices.yaml"
    p.write_text(text)
    return p


def test_loading_adds_versions_only_for_changed_prices(store: Engine, tmp_path: Path) -> None:
    book = load_price_book(DEFAULT_PRICE_BOOK)
    assert add_price_versions(store, book.prices, now=NOW) == len(book.prices) == 39
    assert add_price_versions(store, book.prices, now=NOW) == 0  # re-load: nothing new
    edited = book.prices.copy()
    edited.loc[edited["gpu_type"] == "T4", "usd_per_hour"] += 0.10  # 3 prices change
    assert add_price_versions(store, edited, now=NOW) == 3
    v = price_versions(store)
    t4 = v[(v["gpu_type"] == "T4") & (v["pricing_class"] == "on-demand")]
    assert list(zip(t4["effective_from"], t4["usd_per_hour"].round(2), strict=True)) == [
        (pd.Timestamp(FIRST_EFFECTIVE), 0.53),
        (pd.Timestamp(NOW), 0.63),  # an edit is in force from now
    ]
    dated = load_price_book(
        _book(
            tmp_path,
            "effective_from: 2026-12-01T00:00:00Z\nprices:\n  T4: {on-demand: 0.70}\n",
        )
    )
    assert (
        add_price_versions(store, dated.prices, now=NOW, effective_from=dated.effective_from) == 1
    )
    assert (
        add_price_versions(store, dated.prices, now=NOW, effective_from=dated.effective_from) == 0
    )
    t4 = price_versions(store).query("gpu_type == 'T4' and pricing_class == 'on-demand'")
    assert t4["effective_from"].dt.strftime("%Y-%m-%d").tolist() == [
        "2020-01-01",
        "2026-11-24",
        "2026-12-01",
    ]


def test_each_hour_is_priced_by_the_version_in_force_at_its_start(store: Engine) -> None:
    add_price_versions(store, load_price_book(DEFAULT_PRICE_BOOK).prices, now=T0)
    gpu(store, "g0", T0, 3 * 3600)
    allocate(store, "llama", "g0", T0, T0 + 3 * HOUR)
    use(store, 30, T0)
    use(store, 30, T0 + HOUR, tag="b")
    use(store, 30, T0 + 2 * HOUR, tag="c")
    rollup_recent(store, BillingConfig(), T0 + 2 * HOUR)
    a100 = pd.DataFrame(
        [("A100-80GB", "on-demand", 6.00)], columns=["gpu_type", "pricing_class", "usd_per_hour"]
    )
    # a change at 00:30 takes effect from the next hour (01:00); back-dated: the job re-prices
    assert add_price_versions(store, a100, now=NOW, effective_from=T0 + HOUR / 2) == 1
    with store.connect() as c:
        marked = set(read_marks(c))
    # the hours with samples from 00:30 on (and the hour after the last one, which a sample
    # could reach into), not 2020-01-01 onward
    assert {T0, T0 + HOUR, T0 + 2 * HOUR} <= marked <= {T0 + k * HOUR for k in range(4)}
    rollup_recent(store, BillingConfig(), NOW)
    by_hour = query_costs(store, _w(T0, 3), group_by=["hour"]).sort_values("hour")
    assert by_hour["cost_cents"].tolist() == [512, 600, 600]


def _w(start, hours):  # type: ignore[no-untyped-def]
    from billing.windows import Window

    return Window(start, start + hours * HOUR)


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    return ["--database-url", f"sqlite:///{tmp_path}/cli.db"]


def test_prices_cli_set_list_load(db: list[str], tmp_path: Path) -> None:
    r = runner.invoke(app, [*db, "prices", "load"])
    assert r.exit_code == 0 and "39 prices, 39 new version(s)" in r.output
    r = runner.invoke(app, [*db, "prices", "load"])
    assert "39 prices, 0 new version(s)" in r.output
    r = runner.invoke(
        app, [*db, "prices", "set", "H100-80GB", "spot", "3.5", "--from", "2026-11-23T00:00:00Z"]
    )
    assert r.exit_code == 0 and "3.5 USD/h from 2026-11-23T00:00:00+00:00" in r.output
    r = runner.invoke(
        app, [*db, "prices", "set", "H100-80GB", "spot", "3.5", "--from", "2026-11-23T00:00:00Z"]
    )
    assert "already in force" in r.output and "(0 new)" in r.output
    rows = json.loads(runner.invoke(app, [*db, "prices", "list", "-o", "json"]).output)
    spot = [x for x in rows if (x["gpu_type"], x["pricing_class"]) == ("H100-80GB", "spot")]
    assert [(x["usd_per_hour"], x["in_force"]) for x in spot] == [(3.92, False), (3.5, True)]
    table = runner.invoke(app, [*db, "prices", "list"]).output
    assert "* H100-80GB      spot" in table and "  H100-80GB      spot" in table
    edited = _book(tmp_path, "prices:\n  H100-80GB: {spot: 4.0, on-demand: 9.80}\n")
    r = runner.invoke(app, [*db, "prices", "load", "--file", str(edited)])
    assert "2 prices, 1 new version(s)" in r.output  # on-demand is unchanged


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["H100-80GB", "bogus", "1"], "unknown pricing class 'bogus'"),
        (["--", "H100-80GB", "spot", "-1"], "must be a number >= 0"),
        (["H100-80GB", "spot", "1", "--from", "tomorrow"], "--from: not an RFC 3339 time"),
        (["H100-80GB", "spot", "1", "--from", "2026-11-23T00:00:00"], "--from: time needs a"),
    ],
)
def test_prices_set_refuses_bad_input_with_exit_2(
    db: list[str], args: list[str], message: str
) -> None:
    r = runner.invoke(app, [*db, "prices", "set", *args])
    assert r.exit_code == 2 and message in r.output


def test_a_bad_effective_from_in_yaml_exits_2(db: list[str], tmp_path: Path) -> None:
    bad = _book(tmp_path, "effective_from: 2026-12-01\nprices:\n  T4: {spot: 1}\n")
    r = runner.invoke(app, [*db, "prices", "load", "--file", str(bad)])
    assert r.exit_code == 2 and "effective_from: needs a time zone" in r.output
