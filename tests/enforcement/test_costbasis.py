"""Cost and price, named: budget basis, measured cost rate, period spend from the database,
reconcile after a rollup, budgets created mid-period, the rpm floor, price and margin in
/v1/costs, and one spent figure across status, burn API, dashboard and weekly export."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from billing.config import BillingConfig
from billing.enforcement.api import ENFORCER
from billing.enforcement.config import EnforcementConfig, TokenPrice
from billing.enforcement.domain import Budget, Scope
from billing.enforcement.enums import Basis, Period
from billing.enforcement.jobs import evaluate_budgets
from billing.enforcement.rates import Rates, add_price, measure
from billing.enforcement.service import Enforcer
from billing.enforcement.spend import period_spent
from billing.ingest import ingest_usage
from billing.kinds import LedgerKind
from billing.models import LedgerEntry, LedgerHour, table_of
from billing.schemas import USAGE_EVENT
from costctl.cli import app
from costctl.commands import enforcement as enforcement_cmd
from dashboard.auth import Viewer
from dashboard.budgets import budget_status_frame, make_budget_panel
from dashboard.export import load_weekly
from tests.enforcement.conftest import NOW, authorize, make_enf_api, usage
from tests.utils.api import Api

H10 = NOW.replace(hour=10)
H11 = NOW.replace(hour=11)


def _ingest(engine: Engine, *events: dict[str, object]) -> None:
    ingest_usage(engine, [USAGE_EVENT.validate_python(e) for e in events])


def _ledger(engine: Engine, hour: datetime, cents: int, inp: int, out: int) -> None:
    """What a rollup writes for one hour of acme on llama-70b (one attributed row)."""
    with engine.begin() as conn:
        conn.execute(
            insert(table_of(LedgerEntry)).values(
                hour=hour,
                model="llama-70b",
                customer="acme",
                request_type="chat",
                kind=LedgerKind.attributed.value,
                input_tokens=inp,
                output_tokens=out,
                requests=1,
                cost_cents=cents,
                gpu_cost_usd=cents / 100,
            )
        )
        conn.execute(
            insert(table_of(LedgerHour)).values(
                hour=hour, metered_cost_cents=cents, metered_cost_usd=cents / 100, computed_at=hour
            )
        )


def _history(engine: Engine) -> None:
    """Hour 10 rolled up (50 cents for 1000 in + 1000 out); hour 11 not yet (2000 + 2000)."""
    at10, at11 = (H10 + timedelta(minutes=30)).isoformat(), (H11 + timedelta(minutes=30))
    _ingest(engine, usage("e10", 1000, 1000, time=at10), usage("e11", 2000, 2000, time=at11))
    _ledger(engine, H10, 50, 1000, 1000)


def test_measured_rate_follows_the_rate_card_split() -> None:
    cfg = EnforcementConfig(
        prices={"free": TokenPrice(input_usd_per_mtok=0, output_usd_per_mtok=0)}
    )
    got = measure([("llama-70b", 50, 1000, 1000), ("free", 30, 1000, 2000), ("none", 9, 0, 0)], cfg)
    # default card 0.5 / 1.5 µUSD per token: 2000 µUSD list, 500000 µUSD cost: x250
    assert got["llama-70b"] == TokenPrice(input_usd_per_mtok=125.0, output_usd_per_mtok=375.0)
    assert got["free"] == TokenPrice(input_usd_per_mtok=100.0, output_usd_per_mtok=100.0)
    assert "none" not in got
    rates = Rates(cfg, got)
    assert rates.cost("unseen") == cfg.default_price  # no history, no fallback: the card
    fb = TokenPrice(input_usd_per_mtok=7, output_usd_per_mtok=9)
    assert Rates(cfg.model_copy(update={"cost_fallback": fb}), got).cost("unseen") == fb


def test_customer_override_prices_and_margin() -> None:
    import pandas as pd

    cfg = EnforcementConfig(
        customer_prices={
            "acme": {"llama-70b": TokenPrice(input_usd_per_mtok=2, output_usd_per_mtok=4)}
        }
    )
    assert cfg.price("llama-70b", "acme").input_usd_per_mtok == 2
    assert cfg.price("llama-70b", "globex") == cfg.default_price
    frame = pd.DataFrame(
        {
            "model": ["llama-70b", "llama-70b", "__idle__"],
            "customer": ["acme", "globex", "__idle__"],
            "input_tokens": [1_000_000, 1_000_000, 0],
            "output_tokens": [1_000_000, 1_000_000, 0],
            "cost_usd": [1.0, 1.0, 3.0],
        }
    )
    out = add_price(frame, cfg)
    assert out["price_usd"].tolist() == [6.0, 2.0, 0.0]
    assert out["margin_usd"].tolist() == [5.0, 1.0, -3.0]


def test_period_spent_is_ledger_plus_tail_at_the_measured_rate(engine: Engine) -> None:
    _history(engine)
    cfg = EnforcementConfig()
    rates = Rates(cfg, measure([("llama-70b", 50, 1000, 1000)], cfg))
    cost = Budget(1, "b", Scope(customer="acme"), Period.daily, 10**7, None, basis=Basis.cost)
    price = Budget(2, "p", Scope(customer="acme"), Period.daily, 10**7, None, basis=Basis.price)
    # 500000 (ledger, hour 10) + 2000 x 125 + 2000 x 375 (tail, hour 11)
    assert period_spent(engine, cost, rates, NOW) == (1_500_000, 6000)
    # the rate card: 3000 x 0.5 + 3000 x 1.5
    assert period_spent(engine, price, rates, NOW) == (6000, 6000)
    other = Budget(3, "o", Scope(customer="globex"), Period.daily, 1, None)
    assert period_spent(engine, other, rates, NOW) == (0, 0)


def _enf(api: Api) -> Enforcer:
    enf: Enforcer = api.client.app.state.costctl.extras[ENFORCER]  # type: ignore[attr-defined]
    return enf


def _burn(api: Api) -> dict[str, Any]:
    rows = api.client.get("/v1/budgets/burn", headers=api.h("read")).json()
    assert len(rows) == 1
    row: dict[str, Any] = rows[0]
    return row


@pytest.mark.parametrize("counters", ["sql", "redis"])
def test_mid_period_cost_budget_authorize_settle_and_reconcile(
    engine: Engine, counters: str, request: pytest.FixtureRequest
) -> None:
    _history(engine)
    url = request.getfixturevalue("redis_url") if counters == "redis" else None
    api, _ = make_enf_api(engine, redis_url=url)
    assert _enf(api).reservations.name == counters
    body = {"customer": "acme", "period": "daily", "limit_usd": 2.0}
    r = api.client.put("/v1/budgets/acme", json=body, headers=api.h("admin"))
    assert r.status_code == 201 and r.json()["basis"] == "cost"
    burn = _burn(api)
    assert (burn["spent_usd"], burn["basis"], burn["spent_tokens"]) == (1.5, "cost", 6000)
    # the counters start from the period's spend: estimate 1000 output tokens x 375 µUSD
    first = authorize(api)
    assert first["allowed"] and first["reserved_usd"] == 0.375
    second = authorize(api)
    assert not second["allowed"] and second["reason"] == "budget_usd"
    used = usage(
        str(first["reservation_id"]), 0, 1000, time=(H11 + timedelta(minutes=45)).isoformat()
    )
    assert api.client.post("/v1/usage", json=[used], headers=api.h("ingest")).status_code == 200
    burn = _burn(api)
    assert (burn["spent_usd"], burn["reserved_usd"]) == (1.875, 0.0)
    enf = _enf(api)
    assert enf.reservations.levels(enf.policy().budgets, NOW)[1].spent_micros == 1_875_000
    # the rollup computes hour 11 at 80 cents: the job moves the counters to the ledger
    _ledger(engine, H11, 80, 2000, 3000)
    report = evaluate_budgets(enf, NOW)
    assert report.corrections == {"acme": 1_300_000 - 1_875_000}
    assert report.max_drift_micros == 0
    assert _burn(api)["spent_usd"] == 1.3
    assert evaluate_budgets(enf, NOW).corrections == {}
    assert authorize(api)["allowed"]  # 1.3 + estimate at the re-measured rate fits in 2.0
    api.client.close()


def test_price_budget_keeps_the_rate_card_next_to_a_cost_budget(engine: Engine) -> None:
    api, _ = make_enf_api(engine)
    for name, basis in (("c", "cost"), ("p", "price")):
        body = {"customer": "acme", "period": "daily", "limit_usd": 5.0, "basis": basis}
        assert (
            api.client.put(f"/v1/budgets/{name}", json=body, headers=api.h("admin")).status_code
            == 201
        )
    got = authorize(api, estimated_tokens=1000)
    assert got["allowed"] and got["reserved_usd"] == 0.003  # 1500 µUSD on each basis
    used = usage(str(got["reservation_id"]), 200, 300)
    assert api.client.post("/v1/usage", json=[used], headers=api.h("ingest")).status_code == 200
    rows = {r["name"]: r for r in api.client.get("/v1/budgets/burn", headers=api.h("read")).json()}
    assert {n: (r["basis"], r["spent_usd"], r["reserved_usd"]) for n, r in rows.items()} == {
        "c": ("cost", 0.00055, 0.0),
        "p": ("price", 0.00055, 0.0),
    }
    enf = _enf(api)
    assert enf.reservations.in_flight() == 0
    api.client.close()


def test_rpm_below_what_priorities_can_use_is_422(engine: Engine) -> None:
    api, _ = make_enf_api(engine)
    r = api.client.put("/v1/rate-limits/slow", json={"rpm": 1.5}, headers=api.h("admin"))
    assert r.status_code == 422
    d = r.json()["detail"][0]
    assert d["loc"] == ["body", "rpm"] and "minimum 2" in d["msg"] and "'low'" in d["msg"]
    r = api.client.put("/v1/rate-limits/ok", json={"rpm": 2}, headers=api.h("admin"))
    assert r.status_code == 201
    # rpm 2 is a bucket of 2: low priority (keeps 50 %) passes once when it is full
    assert authorize(api, priority="low")["allowed"]
    assert not authorize(api, priority="low")["allowed"]
    api.client.close()


def test_costs_include_price_and_margin(engine: Engine) -> None:
    _history(engine)
    api, _ = make_enf_api(engine)
    q = "/v1/costs?window=2026-11-25T00:00:00Z,2026-11-26T00:00:00Z&group_by=customer"
    plain = api.client.get(q, headers=api.h("read")).json()
    assert "price_usd" not in plain["totals"] and plain["rows"][0]["price_usd"] is None
    got = api.client.get(q + "&include=price", headers=api.h("read")).json()
    assert got["rows"] == [
        {
            **plain["rows"][0],
            "price_usd": 0.002,  # 1000 x 0.5 + 1000 x 1.5 µUSD (ledger tokens of hour 10)
            "margin_usd": 0.002 - 0.5,
        }
    ]
    assert (got["totals"]["cost_usd"], got["totals"]["margin_usd"]) == (0.5, -0.498)
    bad = api.client.get(q + "&include=colour", headers=api.h("read"))
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "include"]
    api.client.close()


def test_one_spent_in_status_burn_dashboard_and_export(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Done-when: the same budget and window read the same spent everywhere, basis named."""
    _history(engine)
    api, _ = make_enf_api(engine)
    body = {"customer": "acme", "period": "daily", "limit_usd": 100.0}
    assert api.client.put("/v1/budgets/acme", json=body, headers=api.h("admin")).status_code == 201
    burn = _burn(api)
    assert (burn["spent_usd"], burn["basis"]) == (1.5, "cost")
    cfg = BillingConfig()
    fig = make_budget_panel(engine, cfg)(NOW, Viewer("admin", "admin"))
    line = fig.data[0]
    assert float(line.customdata[-1]) == burn["spent_usd"]
    assert "cost" in line.name and "$1.50" in line.name
    frame = budget_status_frame(engine, cfg.enforcement, NOW)
    assert frame[["spent_usd", "basis"]].values.tolist() == [[1.5, "cost"]]
    # the weekly export: the budget judged at the end of each day, price and margin per line
    weekly = load_weekly(engine, "2026-W48", cfg)
    b = weekly.budgets
    day = b[b["period_start"] == NOW.replace(hour=0).isoformat()]
    assert day[["spent_usd", "basis"]].values.tolist() == [[1.5, "cost"]]
    lines = weekly.lines[["customer", "cost_usd", "price_usd", "margin_usd"]]
    assert lines.values.tolist() == [["acme", 0.5, 0.002, -0.498]]
    assert weekly.customers[["price_usd", "margin_usd"]].values.tolist() == [[0.002, -0.498]]
    if engine.dialect.name == "sqlite":  # the CLI opens the database by URL (PG: a schema)
        monkeypatch.setattr(enforcement_cmd, "now", lambda: NOW)
        monkeypatch.delenv("COSTCTL_REDIS_URL", raising=False)
        url = engine.url.render_as_string(hide_password=False)
        r = CliRunner().invoke(app, ["--database-url", url, "status", "--json"])
        assert r.exit_code == 0, r.output
        (row,) = json.loads(r.output)["budgets"]
        assert (row["spent_usd"], row["basis"]) == (1.5, "cost")
        r = CliRunner().invoke(app, ["--database-url", url, "ratelimits", "set", "x", "--rpm", "1"])
        assert r.exit_code == 2 and "rpm 1 is below the minimum 2" in r.output
    api.client.close()
