"""Weekly cost review: built from a real two-week ledger, written in every format, read back
and checked against the ledger totals."""

import re
from datetime import timedelta
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from billing.config import BillingConfig
from billing.enforcement.models import Period
from billing.enforcement.schemas import BudgetCreate
from billing.enforcement.store import set_budget
from billing.ledger import metered_cents, query_costs
from billing.windows import Window, WindowError
from dashboard.export import export_weekly, load_weekly, week_label, week_window, write_report
from dashboard.jobs import export_last_week
from tests.dashboard.ledger import CONV, build_ledger
from tests.utils.factories import T0

pytestmark = pytest.mark.skipif(not CONV.exists(), reason=f"shared data missing: {CONV}")
WEEK = "2026-W48"  # T0 = Monday 2026-11-23
W = Window(T0, T0 + timedelta(days=7))
PREV = Window(T0 - timedelta(days=7), T0)


@pytest.fixture
def two_weeks(engine: Engine) -> Engine:
    build_ledger(engine, t0=T0 - timedelta(days=7), seed=8)
    build_ledger(engine, t0=T0, seed=7)
    now = T0 - timedelta(days=8)
    for name, spec in {
        "all": BudgetCreate(period=Period.weekly, limit_usd=1e6),
        "acme-weekly": BudgetCreate(customer="acme", period=Period.weekly, limit_usd=1.0),
        "acme-daily": BudgetCreate(customer="acme", period=Period.daily, limit_usd=0.5),
    }.items():
        set_budget(engine, name=name, spec=spec, actor="test", now=now)
    return engine


def test_week_parsing() -> None:
    assert week_window(WEEK) == W
    assert week_label(T0 + timedelta(days=6, hours=23)) == WEEK
    with pytest.raises(WindowError):
        week_window("2026-47")
    with pytest.raises(WindowError):
        week_window("2026-W60")


def test_report_matches_the_ledger(two_weeks: Engine) -> None:
    r = load_weekly(two_weeks, WEEK, BillingConfig())
    metered = metered_cents(two_weeks, W)
    assert metered == 6927  # 3 h x 23.09 USD/h
    # every cent of the week: lines (attributed) + idle/unallocated
    assert r.lines["cost_usd"].sum() + r.idle["cost_usd"].sum() == pytest.approx(metered / 100)
    assert r.summary["metered_cost_usd"].iloc[0] == pytest.approx(69.27)
    assert r.summary["prev_metered_cost_usd"].iloc[0] == pytest.approx(69.27)
    assert r.summary["wow_change_usd"].iloc[0] == 0.0
    assert r.lines["requests"].sum() == 19366
    want = query_costs(two_weeks, W).set_index(["customer", "model", "request_type"])
    got = r.lines.set_index(["customer", "model", "request_type"])
    key = ("acme", "llama-3-70b", "chat")
    assert got.loc[key, "cost_usd"] == pytest.approx(want.loc[key, "cost_usd"])
    assert got.loc[key, "tokens"] == want.loc[key, "input_tokens"] + want.loc[key, "output_tokens"]
    per_1m = (
        want.loc[key, "cost_usd"]
        / (want.loc[key, "input_tokens"] + want.loc[key, "output_tokens"])
        * 1e6
    )
    assert got.loc[key, "usd_per_1m_tokens"] == pytest.approx(per_1m, rel=1e-5)
    prev = query_costs(two_weeks, PREV, group_by=[], filters={"kind": "attributed"})
    assert r.lines["prev_cost_usd"].sum() == pytest.approx(prev["cost_usd"].iloc[0])
    # WoW per line = this week - last week
    assert (
        r.lines["wow_change_usd"] - (r.lines["cost_usd"] - r.lines["prev_cost_usd"])
    ).abs().max() < 1e-9
    # movers: largest absolute change first, at most top_n
    assert len(r.movers) <= 10
    assert r.movers["wow_change_usd"].abs().is_monotonic_decreasing
    # budget status: acme's 1 USD weekly budget is past its hard line; others only the global
    status = r.customers.set_index("customer")["budget_status"]
    assert status["acme"] == "hard" and status["globex"] == "ok"
    assert set(r.lines.loc[r.lines["customer"] == "acme", "budget_status"]) == {"hard"}
    assert r.budgets.set_index("name").loc["acme-weekly", "status"] == "hard"
    assert r.idle["cost_usd"].sum() == pytest.approx(
        query_costs(two_weeks, W, group_by=[], filters={"kind": "idle"})["cost_usd"].iloc[0]
        + query_costs(two_weeks, W, group_by=[], filters={"kind": "unallocated"})["cost_usd"].iloc[
            0
        ]
    )


def test_every_format_reads_back(two_weeks: Engine, tmp_path: Path) -> None:
    config = BillingConfig()
    paths = export_weekly(two_weeks, WEEK, config, tmp_path, ["csv", "parquet", "xlsx", "html"])
    names = {p.name for p in paths}
    assert f"costctl-weekly-{WEEK}-lines.csv" in names
    assert f"costctl-weekly-{WEEK}.xlsx" in names and f"costctl-weekly-{WEEK}.html" in names
    total = 6927 / 100
    csv_lines = pd.read_csv(tmp_path / f"costctl-weekly-{WEEK}-lines.csv")
    csv_idle = pd.read_csv(tmp_path / f"costctl-weekly-{WEEK}-idle.csv")
    assert csv_lines["BilledCost"].sum() + csv_idle["BilledCost"].sum() == pytest.approx(total)
    assert csv_lines["x_Requests"].sum() == 19366
    pq = pd.read_parquet(tmp_path / f"costctl-weekly-{WEEK}-lines.parquet")
    assert pq["BilledCost"].sum() == pytest.approx(csv_lines["BilledCost"].sum())
    wb = openpyxl.load_workbook(tmp_path / f"costctl-weekly-{WEEK}.xlsx", read_only=True)
    assert wb.sheetnames == ["summary", "customers", "movers", "lines", "idle", "budgets"]
    xl = pd.read_excel(tmp_path / f"costctl-weekly-{WEEK}.xlsx", sheet_name=None)
    assert xl["lines"]["BilledCost"].sum() + xl["idle"]["BilledCost"].sum() == pytest.approx(total)
    assert xl["summary"]["metered_cost_usd"].iloc[0] == pytest.approx(total)
    # finance-ready text: fixed decimals, no e-notation, no "None"
    for path in tmp_path.glob("*.csv"):
        text = path.read_text()
        assert not re.search(r"\d[eE][+-]\d", text), path.name
        assert "None" not in text and "nan" not in text.lower().replace("nanosec", ""), path.name
    raw = pd.read_csv(
        tmp_path / f"costctl-weekly-{WEEK}-lines.csv", dtype=str, keep_default_na=False
    )
    assert all(re.fullmatch(r"-?\d+\.\d{2}", v) for v in raw["BilledCost"])
    assert all(v == "" or re.fullmatch(r"\d+\.\d{4}", v) for v in raw["x_UsdPer1MTokens"])
    # FOCUS names where a column has a FOCUS meaning, the rest behind the x_ prefix
    assert {
        "ChargePeriodStart",
        "ChargePeriodEnd",
        "BilledCost",
        "EffectiveCost",
        "ServiceName",
        "ResourceId",
        "ConsumedQuantity",
        "ConsumedUnit",
        "BillingCurrency",
        "x_Customer",
    } <= set(raw.columns)
    assert (raw["ChargePeriodStart"] == W.start.isoformat()).all()
    assert (raw["BilledCost"] == raw["EffectiveCost"]).all()
    # XLSX: numbers with formats, widths, a frozen bold header, one sheet per table
    full = openpyxl.load_workbook(tmp_path / f"costctl-weekly-{WEEK}.xlsx")
    ws = full["lines"]
    assert ws.freeze_panes == "A2" and ws["A1"].font.b
    head = [c.value for c in ws[1]]
    cost = ws.cell(row=2, column=head.index("BilledCost") + 1)
    assert isinstance(cost.value, float) and cost.number_format == "#,##0.00"
    req = ws.cell(row=2, column=head.index("x_Requests") + 1)
    assert isinstance(req.value, int) and req.number_format == "#,##0"
    assert ws.column_dimensions["A"].width >= len("2026-11-23T00:00:00+00:00")
    page = (tmp_path / f"costctl-weekly-{WEEK}.html").read_text()
    assert "@media print" in page and '"displayModeBar": false' in page
    assert page.count('class="plotly-graph-div"') == 3
    assert "costctl weekly cost review" in page and "$69.27" in page
    assert "acme-weekly" in page


def test_budgets_are_judged_per_their_own_period(two_weeks: Engine) -> None:
    from billing.enforcement.burn import budget_burn

    r = load_weekly(two_weeks, WEEK, BillingConfig())
    b = r.budgets
    daily = b[b["name"] == "acme-daily"]
    # a daily budget: one row per day of the week, each its own day, exactly one worst
    assert len(daily) == 7
    assert daily["period_start"].tolist() == [
        (T0 + timedelta(days=i)).isoformat() for i in range(7)
    ]
    assert int(daily["worst"].sum()) == 1
    worst = daily[daily["worst"]].iloc[0]
    assert worst["ratio"] == daily["ratio"].max()
    # each day's figure is the enforcement truth at that day's end
    day = T0 + timedelta(days=1)
    truth = {
        x.budget.name: x
        for x in budget_burn(
            two_weeks, BillingConfig().enforcement, day - timedelta(microseconds=1)
        )
    }["acme-daily"]
    assert daily["spent_usd"].iloc[0] == pytest.approx(truth.spent_micros / 1e6)
    assert len(b[b["name"] == "acme-weekly"]) == 1  # a weekly budget: once, at the week's end


def test_empty_week_still_writes(engine: Engine, tmp_path: Path) -> None:
    r = load_weekly(engine, "2020-W01", BillingConfig())
    assert r.lines.empty and r.summary["metered_cost_usd"].iloc[0] == 0
    for fmt in ("csv", "parquet", "xlsx", "html"):
        assert all(p.exists() for p in write_report(r, tmp_path, fmt))  # type: ignore[arg-type]
    assert "no data yet" in (tmp_path / "costctl-weekly-2020-W01.html").read_text()


def test_job_exports_last_week(two_weeks: Engine, tmp_path: Path) -> None:
    config = BillingConfig.model_validate({"export": {"dir": tmp_path, "formats": ["csv"]}})
    paths = export_last_week(two_weeks, config, T0 + timedelta(days=7, hours=6))  # Mon 06:00
    assert paths[0].name == f"costctl-weekly-{WEEK}-summary.csv"
    assert pd.read_csv(paths[0])["metered_cost_usd"].iloc[0] == pytest.approx(69.27)
