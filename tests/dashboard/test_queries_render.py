"""Queries over a real ledger (both backends) and the pure render, with asserted numbers."""

import math
from datetime import timedelta

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from billing.ledger import metered_cents, query_costs
from dashboard.auth import Viewer
from dashboard.callbacks import Panels, Selection, kpi_items, render, render_page
from dashboard.queries import load
from tests.dashboard.ledger import CONV, WHOLE, build_ledger
from tests.utils.factories import T0

pytestmark = pytest.mark.skipif(not CONV.exists(), reason=f"shared data missing: {CONV}")
ADMIN = Viewer("admin", "admin")
ACME = Viewer("acme-key", "read", customer="acme", key_id=9)


@pytest.fixture
def built(engine: Engine) -> Engine:
    b = build_ledger(engine)
    # 3 h x (5.12 + 2.05 + 9.80 + 6.12) USD/h = 69.27 USD
    assert b.result.metered_cost_cents == 6927
    return engine


def test_load_reads_ledger_devices_allocations(built: Engine) -> None:
    d = load(built, WHOLE)
    assert int(d.ledger["cost_cents"].sum()) == metered_cents(built, WHOLE) == 6927
    assert int(d.hours["metered_cost_cents"].sum()) == 6927
    assert int(d.ledger["requests"].sum()) == 19366
    assert sorted(d.devices["gpu_uuid"].unique()) == [
        "g0",
        "g0/mig-3g",
        "g0/mig-4g",
        "g1",
        "g2",
        "g3",
    ]
    # every device sampled every 30 s for 3 h: 3 rows of 3600 s each
    assert d.devices.groupby("gpu_uuid")["sample_s"].sum().tolist() == [10800.0] * 6
    assert len(d.allocations) == 4


def test_day_buckets_keep_every_total(built: Engine) -> None:
    hourly = load(built, WHOLE).ledger
    daily = load(built, WHOLE, bucket="day").ledger
    assert len(daily) < len(hourly)
    assert set(daily["hour"]) == {pd.Timestamp(T0)}
    for c in ("cost_cents", "requests", "input_tokens", "output_tokens"):
        assert daily[c].sum() == hourly[c].sum()
    assert daily["gpu_seconds"].sum() == pytest.approx(hourly["gpu_seconds"].sum())


def test_tenant_load_is_scoped(built: Engine) -> None:
    d = load(built, WHOLE, customer="acme")
    assert set(d.ledger["customer"]) == {"acme"}
    assert d.devices.empty and d.allocations.empty
    acme = query_costs(built, WHOLE, group_by=[], filters={"customer": "acme"})
    assert int(d.ledger["cost_cents"].sum()) == int(acme["cost_cents"].iloc[0])


def test_render_admin_numbers(built: Engine) -> None:
    out = render(load(built, WHOLE), Selection(window="x", top_n=3), ADMIN)
    assert out.kpis.cost_usd == pytest.approx(69.27)
    assert out.kpis.requests == 19366
    by_kind = query_costs(built, WHOLE, group_by=["kind"]).set_index("kind")["cost_cents"]
    assert out.kpis.attributed_usd == pytest.approx(by_kind["attributed"] / 100)
    assert out.kpis.idle_usd == pytest.approx(by_kind["idle"] / 100)
    for gid in (
        "g-cost-per-1m",
        "g-series-model",
        "g-series-customer",
        "g-by-customer",
        "g-by-request-type",
        "g-utilization",
        "g-idle",
    ):
        fig = out.figures[gid]
        assert len(fig.data) > 0, gid
    # stacked customer bars add up to the metered cost, with top 3 + other + idle + unallocated
    bars = out.figures["g-by-customer"].data
    assert sum(sum(t.y) for t in bars) == pytest.approx(69.27)
    names = [t.name for t in bars]
    assert names[0] == "acme" and "other" in names and len(names) == 6
    assert out.options["customer"][0] == "acme" and len(out.options["customer"]) == 8
    assert out.options["model"] == ["llama-3-70b", "llama-3-8b", "mistral-7b", "mixtral-8x7b"]
    # the table holds every cent in view, numbers rounded for display, no None/NaN
    assert sum(r["cost_usd"] for r in out.table) == pytest.approx(69.27, abs=0.01 * len(out.table))
    assert all(r["usd_per_1m"] is not None for r in out.table)
    assert {r["kind"] for r in out.table} == {"attributed", "idle", "unallocated"}
    util = out.figures["g-utilization"].data
    allocated = dict(zip(util[0].y, util[0].x, strict=True))
    used = dict(zip(util[1].y, util[1].x, strict=True))
    g2 = next(k for k in allocated if k.startswith("g2 "))
    assert allocated[g2] == pytest.approx(100.0) and used[g2] == pytest.approx(50.0)
    g3 = next(k for k in allocated if k.startswith("g3 "))
    assert allocated[g3] == pytest.approx(50.0)  # MPS half share
    g1 = next(k for k in allocated if k.startswith("g1 "))
    assert allocated[g1] == 0.0
    slice3 = next(k for k in allocated if "3g.40gb" in k)
    assert allocated[slice3] == pytest.approx(100.0) and used[slice3] == pytest.approx(60.0)


def test_render_series_metrics(built: Engine) -> None:
    data = load(built, WHOLE)
    util = render(data, Selection(metric="utilization"), ADMIN).figures
    assert "% of held GPU time busy" in util["g-series-model"].layout.title.text
    ys = [y for t in util["g-series-model"].data for y in t.y if not math.isnan(y)]
    assert ys and all(0 <= y <= 100 for y in ys)
    assert "busy GPU-hours" in util["g-series-customer"].layout.title.text
    per_1m = render(data, Selection(metric="usd_per_1m"), ADMIN).figures["g-series-model"]
    assert per_1m.layout.yaxis.tickformat == "$.3~r"  # significant digits, no e-notation


def test_render_filters(built: Engine) -> None:
    sel = Selection(models=("llama-3-8b",), request_types=("summarize",))
    out = render(load(built, WHOLE), sel, ADMIN)
    want = query_costs(
        built,
        WHOLE,
        group_by=[],
        filters={"model": "llama-3-8b", "request_type": "summarize", "kind": "attributed"},
    )
    assert out.kpis.cost_usd == pytest.approx(want["cost_usd"].iloc[0])
    assert out.kpis.requests == int(want["requests"].iloc[0]) > 0
    lines = out.figures["g-cost-per-1m"].data
    assert {t.name for t in lines if t.showlegend is not False} == {"llama-3-8b"}


def test_render_tenant_sees_only_itself(built: Engine) -> None:
    d = load(built, WHOLE, customer="acme")
    out = render(d, Selection(customers=("globex",)), ACME)  # the page cannot widen the scope
    assert out.options["customer"] == ["acme"]
    names = {t.name for t in out.figures["g-by-customer"].data}
    assert names == {"acme"}
    assert len(out.figures["g-utilization"].data) == 0
    labels = [label for label, _ in kpi_items(out.kpis, ACME)]
    assert "GPU cost (metered)" not in labels and "idle + unallocated" not in labels


def test_render_page_missing_panels_say_so(built: Engine) -> None:
    out, w = render_page(built, Selection(window="24h"), ADMIN, T0 + timedelta(hours=3), Panels())
    assert w == WHOLE.__class__(T0 - timedelta(hours=21), T0 + timedelta(hours=3))
    assert out.kpis.cost_usd == pytest.approx(69.27)
    budget = out.figures["g-budget"]
    assert len(budget.data) == 0
    assert "no data yet" in budget.layout.annotations[0].text


def test_render_margin_per_customer_and_model(built: Engine) -> None:
    """The margin panel: price (rate card) - attributed cost, per customer and per model."""
    from billing.enforcement.config import EnforcementConfig
    from billing.enforcement.rates import add_price

    card = EnforcementConfig()
    out = render(load(built, WHOLE), Selection(window="x"), ADMIN, card)
    cost, price, margin = out.figures["g-margin"].data
    att = query_costs(built, WHOLE, group_by=["customer", "model"], filters={"kind": "attributed"})
    priced = add_price(att, card)
    n_cust = priced["customer"].nunique()
    by_cust = priced.groupby("customer")[["cost_usd", "price_usd"]].sum()
    got = dict(zip(cost.x[:n_cust], margin.y[:n_cust], strict=True))
    for c, row in by_cust.iterrows():
        assert got[f"customer: {c}"] == pytest.approx(row["price_usd"] - row["cost_usd"], abs=1e-6)
    assert sum(cost.y[:n_cust]) == pytest.approx(sum(cost.y[n_cust:]))  # both views: every cent
    assert sum(price.y[:n_cust]) == pytest.approx(float(priced["price_usd"].sum()))
    tenant = render(load(built, WHOLE, customer="acme"), Selection(window="x"), ACME, card)
    assert len(tenant.figures["g-margin"].data) == 0  # a fleet panel: hidden from a tenant
