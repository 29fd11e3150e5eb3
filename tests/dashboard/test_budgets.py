"""Budget burn-down: the pure series (asserted numbers) and the panel over a real store."""

from datetime import timedelta

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from billing.config import BillingConfig
from billing.enforcement.burn import budget_burn
from billing.enforcement.domain import Budget, Scope
from billing.enforcement.models import BudgetAction, Period
from billing.enforcement.schemas import BudgetCreate
from billing.enforcement.store import set_budget
from dashboard.auth import Viewer
from dashboard.budgets import burn_series, make_budget_panel, projection, visible
from tests.dashboard.ledger import CONV, build_ledger
from tests.utils.factories import T0

H = pd.Timedelta(hours=1)
USAGE = pd.DataFrame(
    {
        "hour": [pd.Timestamp(T0), pd.Timestamp(T0), pd.Timestamp(T0) + H],
        "model": ["m1", "m2", "m1"],
        "customer": ["acme", "acme", "globex"],
        "request_type": ["chat"] * 3,
        "input_tokens": [1_000_000, 2_000_000, 4_000_000],
        "output_tokens": [1_000_000, 0, 0],
    }
)
PRICES = {"m1": (0.5, 1.5), "m2": (1.0, 1.0)}


def budget(**kw: object) -> Budget:
    base: dict[str, object] = {
        "id": 1,
        "name": "b",
        "scope": Scope(),
        "period": Period.daily,
        "limit_micros": 10_000_000,
        "limit_tokens": None,
    }
    base.update(kw)
    return Budget(**base)  # type: ignore[arg-type]


def test_burn_series_global_and_scoped() -> None:
    now = T0 + timedelta(hours=5)
    s = burn_series(USAGE, budget(), PRICES.__getitem__, now)
    # hour 0: 1M x 0.5 + 1M x 1.5 + 2M x 1.0 = 4 USD; hour 1: 4M x 0.5 = 2 USD
    assert s["spent_usd"].tolist() == pytest.approx([0.0, 4.0, 6.0])
    assert s["pct"].tolist() == pytest.approx([0.0, 40.0, 60.0])
    assert s["hour"].tolist() == [pd.Timestamp(T0), pd.Timestamp(T0) + H, pd.Timestamp(T0) + 2 * H]
    acme = burn_series(USAGE, budget(scope=Scope(customer="acme")), PRICES.__getitem__, now)
    assert acme["spent_usd"].iloc[-1] == pytest.approx(4.0)
    tok = burn_series(
        USAGE, budget(limit_micros=None, limit_tokens=16_000_000), PRICES.__getitem__, now
    )
    assert tok["pct"].iloc[-1] == pytest.approx(50.0)  # 8M of 16M tokens
    # the next day is a new daily period: nothing spent yet
    nxt = burn_series(USAGE, budget(), PRICES.__getitem__, T0 + timedelta(days=1, hours=1))
    assert nxt["spent_usd"].tolist() == [0.0]


def test_projection_runs_the_rate_so_far_to_the_period_end() -> None:
    now = T0 + timedelta(hours=5)
    s = burn_series(USAGE, budget(), PRICES.__getitem__, now)
    end, pct = projection(s, T0, T0 + timedelta(days=1), now) or (None, 0.0)
    # 60 % after 5 h of a 24 h period -> 60 x 24 / 5 = 288 % at the end of the day
    assert end == pd.Timestamp(T0 + timedelta(days=1)) and pct == pytest.approx(288.0)
    assert projection(s, T0, T0 + timedelta(days=1), T0) is None


def test_visible_budgets_for_a_tenant() -> None:
    bs = [budget(name="g"), budget(name="a", scope=Scope(customer="acme"))]
    assert [b.name for b in visible(bs, Viewer("x", "read", customer="acme"))] == ["a"]
    assert len(visible(bs, Viewer("x", "admin"))) == 2


@pytest.mark.skipif(not CONV.exists(), reason=f"shared data missing: {CONV}")
def test_panel_ends_at_the_enforcement_truth(engine: Engine) -> None:
    build_ledger(engine)
    now = T0 + timedelta(hours=3)
    set_budget(
        engine,
        name="acme-day",
        spec=BudgetCreate(customer="acme", period=Period.daily, limit_usd=20.0),
        actor="t",
        now=T0,
    )
    fig = make_budget_panel(engine, BillingConfig())(now, Viewer("admin", "admin"))
    truth = budget_burn(engine, BillingConfig().enforcement, now)[0]
    spent = f"${truth.spent_micros / 1e6:,.2f}"
    assert [t.name for t in fig.data] == [
        f"acme-day (customer=acme, daily, cost): spent {spent}",
        "acme-day projected",
    ]
    assert fig.data[1].x[-1] == pd.Timestamp(T0 + timedelta(days=1))  # to the period's end
    assert fig.data[1].y[-1] == pytest.approx(fig.data[0].y[-1] * 24 / 3)
    # the curve ends at the enforcement truth (ledger + tail), exactly
    assert fig.data[0].customdata[-1] == truth.spent_micros / 1e6
    assert fig.data[0].y[-1] == pytest.approx(truth.spent_micros / 20e6 * 100, abs=1e-3)
    hidden = make_budget_panel(engine, BillingConfig())(now, Viewer("g", "read", customer="globex"))
    assert len(hidden.data) == 0
    assert BudgetAction.block.value == truth.budget.action.value
