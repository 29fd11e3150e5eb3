"""Budget burn-down for the dashboard and budget status for the weekly review.

Budgets, their periods, basis and rates are billing.enforcement's. The burn-down curve per hour
comes from the ledger ('cost' budgets: its cost_cents; 'price' budgets: its tokens at the rate
card); the point at ``now`` is ``billing.enforcement.burn.budget_burn``'s spent (ledger +
not-yet-rolled-up tail), the same figure as ``costctl status``, ``/v1/budgets/burn`` and the
weekly review's budget status.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import pandas as pd
import plotly.graph_objects as go
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing.config import BillingConfig
from billing.enforcement.burn import budget_burn
from billing.enforcement.config import EnforcementConfig
from billing.enforcement.domain import DIMS, Budget, Scope, period_bounds
from billing.enforcement.models import MICROS, Basis, Period
from billing.enforcement.rates import MICROS_PER_CENT
from billing.enforcement.store import load_policy
from billing.models import LedgerEntry, LedgerKind, table_of
from dashboard import figures
from dashboard.auth import Viewer
from dashboard.queries import as_bucket, raw_time
from dashboard.report import BUDGET_COLUMNS

TITLE = "Budget burn-down (% of the hard limit; dashed = soft line)"


def visible(budgets: Sequence[Budget], viewer: Viewer) -> list[Budget]:
    """The budgets a viewer may see: a tenant only those scoped to its customer."""
    if viewer.customer is None:
        return list(budgets)
    return [b for b in budgets if b.scope.customer == viewer.customer]


def burn_series(
    usage: pd.DataFrame,
    budget: Budget,
    price: Callable[[str], tuple[float, float]],
    now: datetime,
    spent: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """Cumulative spend of ``budget`` through its current period, hour by hour (pure).

    ``usage``: hour, model, input_tokens, output_tokens (cost_cents for a 'cost' budget; scope
    columns, if not filtered). Details: spend per row = cost_cents x 10^4 µUSD ('cost'), else
    in x in_price + out x out_price µUSD (USD/Mtok = µUSD/token); pct = cumulative / limit x
    100 (USD limit if set, else tokens). ``spent`` (µUSD, tokens) is the period's spend at
    ``now`` (budget_burn): it is the last point. Returns hour, spent_usd, tokens, pct; the
    first row is the period start at 0.
    """
    start, _end = period_bounds(budget.period, now)
    u = usage[(usage["hour"] >= pd.Timestamp(start)) & (usage["hour"] < pd.Timestamp(now))]
    for dim in DIMS:
        value = getattr(budget.scope, dim)
        if value is not None and dim in u.columns:  # read_usage filters in SQL already
            u = u[u[dim] == value]
    prices = {m: price(str(m)) for m in u["model"].unique()}
    if budget.basis == Basis.cost and "cost_cents" in u.columns:
        micros = [float(c) * MICROS_PER_CENT for c in u["cost_cents"]]
    else:
        micros = [
            i * prices[m][0] + o * prices[m][1]
            for m, i, o in zip(u["model"], u["input_tokens"], u["output_tokens"], strict=True)
        ]
    per_hour = (
        u.assign(micros=micros, tokens=u["input_tokens"] + u["output_tokens"])
        .groupby("hour", sort=True)[["micros", "tokens"]]
        .sum()
    )
    head = pd.DataFrame({"micros": [0.0], "tokens": [0]}, index=[pd.Timestamp(start)])
    s = pd.concat([head, per_hour]).cumsum()
    # a point at the end of each hour (or now, for the current hour): the spend up to then
    end = pd.Timestamp(now)
    s.index = [s.index[0], *[min(h + pd.Timedelta(hours=1), end) for h in s.index[1:]]]
    if spent is not None:
        s = s[s.index < end]
        s = pd.concat(
            [s, pd.DataFrame({"micros": [float(spent[0])], "tokens": [spent[1]]}, index=[end])]
        )
    if budget.limit_micros:
        pct = s["micros"] / budget.limit_micros * 100
    elif budget.limit_tokens:
        pct = s["tokens"] / budget.limit_tokens * 100
    else:
        pct = s["micros"] * 0.0
    return pd.DataFrame(
        {
            "hour": s.index,
            "spent_usd": (s["micros"] / MICROS).to_numpy(),
            "tokens": s["tokens"].astype("int64").to_numpy(),
            "pct": pct.to_numpy(),
        }
    )


def projection(
    series: pd.DataFrame, start: datetime, end: datetime, now: datetime
) -> tuple[pd.Timestamp, float] | None:
    """(period end, pct) if the period's run rate so far holds to its end (pure); None before
    any time has passed.

    Details: pct_end = pct_now x (end - start) / (now - start), a straight line from now.
    """
    elapsed = (now - start).total_seconds()
    if elapsed <= 0 or series.empty:
        return None
    pct_now = float(series["pct"].iloc[-1])
    return pd.Timestamp(end), pct_now * (end - start).total_seconds() / elapsed


def read_usage(engine: Engine, scope: Scope, start: datetime, end: datetime) -> pd.DataFrame:
    """Attributed tokens and cost_cents per hour x model inside ``scope`` from the ledger."""
    t = table_of(LedgerEntry).c
    stmt = (
        select(
            raw_time(t.hour),
            t.model,
            func.sum(t.input_tokens).label("input_tokens"),
            func.sum(t.output_tokens).label("output_tokens"),
            func.sum(t.cost_cents).label("cost_cents"),
        )
        .where(t.kind == LedgerKind.attributed.value, t.hour >= start, t.hour < end)
        .group_by(t.hour, t.model)
    )
    for dim in DIMS:
        value = getattr(scope, dim)
        if value is not None:
            stmt = stmt.where(t[dim] == value)
    with engine.connect() as conn:
        df = pd.read_sql(stmt, conn)
    df["hour"] = as_bucket(df["hour"])
    return df


def burn_figure(
    series: dict[str, pd.DataFrame],
    budgets: Sequence[Budget],
    projections: dict[str, tuple[pd.Timestamp, float] | None] | None = None,
) -> go.Figure:
    """One line per budget (% of its hard limit) over its period to date, a dotted projection
    to the period's end at the run rate so far, the hard line at 100 % and soft lines."""
    if not budgets:
        return figures.empty(TITLE, "no budgets defined (costctl budgets set ...)")
    fig = go.Figure()
    fig.update_layout(
        title={"text": TITLE, "x": 0.01, "font": {"size": 15}},
        template=figures.TEMPLATE,
        height=figures.HEIGHT,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        yaxis={"title": "% of limit", "rangemode": "tozero"},
    )
    palette = list(figures.TEMPLATE["layout"]["colorway"])  # type: ignore[index]
    for i, b in enumerate(budgets):
        s, color = series[b.name], palette[i % len(palette)]
        fig.add_scatter(
            x=s["hour"],
            y=s["pct"],
            name=(
                f"{b.name} ({b.scope.label()}, {b.period.value}, {b.basis.value}): "
                f"spent ${float(s['spent_usd'].iloc[-1]):,.2f}"
            ),
            mode="lines+markers",
            line={"color": color},
            customdata=s["spent_usd"],
            hovertemplate="%{y:.1f}% ($%{customdata:,.2f})<extra></extra>",
        )
        p = (projections or {}).get(b.name)
        if p is not None and not s.empty:
            fig.add_scatter(
                x=[s["hour"].iloc[-1], p[0]],
                y=[float(s["pct"].iloc[-1]), p[1]],
                name=f"{b.name} projected",
                mode="lines+markers",
                line={"color": color, "dash": "dot"},
                marker={"symbol": "circle-open"},
                hovertemplate="projected %{y:.0f}% at %{x}<extra></extra>",
            )
    fig.add_hline(
        y=100,
        line={"color": "#d62728", "width": 2},
        annotation_text="hard limit",
        annotation_position="top left",
    )
    for ratio in sorted({b.soft_ratio for b in budgets}):
        fig.add_hline(
            y=ratio * 100,
            line={"color": "#ff7f0e", "dash": "dash"},
            annotation_text=f"soft {ratio:.0%}",
            annotation_position="bottom left",
        )
    return fig


def make_budget_panel(
    engine: Engine, config: BillingConfig
) -> Callable[[datetime, Viewer], go.Figure]:
    """The dashboard's budget panel over ``engine`` (a Panel for dashboard.callbacks)."""
    enf = config.enforcement

    def pricer(customer: str | None) -> Callable[[str], tuple[float, float]]:
        def price(model: str) -> tuple[float, float]:
            p = enf.price(model, customer)
            return p.input_usd_per_mtok, p.output_usd_per_mtok

        return price

    def panel(now: datetime, viewer: Viewer) -> go.Figure:
        budgets = visible(load_policy(engine).budgets, viewer)
        burns = {
            x.budget.id: x
            for x in budget_burn(
                engine, enf, now, budgets=budgets, resolution_s=config.ledger_resolution_s
            )
        }
        series = {
            b.name: burn_series(
                read_usage(engine, b.scope, period_bounds(b.period, now)[0], now),
                b,
                pricer(b.scope.customer),
                now,
                (burns[b.id].spent_micros, burns[b.id].spent_tokens),
            )
            for b in budgets
        }
        bounds = {b.name: period_bounds(b.period, now) for b in budgets}
        proj = {n: projection(series[n], a, e, now) for n, (a, e) in bounds.items()}
        return burn_figure(series, budgets, proj)

    return panel


def _burn_rows(
    engine: Engine, config: EnforcementConfig, as_of: datetime, resolution_s: int
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for burn in budget_burn(engine, config, as_of, resolution_s=resolution_s):
        b = burn.budget
        rows.append(
            {
                "name": b.name,
                **{d: getattr(b.scope, d) for d in DIMS},
                "period": b.period.value,
                "period_start": burn.period_start.isoformat(),
                "limit_usd": None if b.limit_micros is None else b.limit_micros / MICROS,
                "limit_tokens": b.limit_tokens,
                "spent_usd": burn.spent_micros / MICROS,
                "spent_tokens": burn.spent_tokens,
                "ratio": round(burn.ratio, 4),
                "status": burn.status,
                "action": b.action.value,
                "basis": b.basis.value,
            }
        )
    return rows


def budget_status_frame(
    engine: Engine, config: EnforcementConfig, as_of: datetime, resolution_s: int = 3600
) -> pd.DataFrame:
    """Every budget's burn at ``as_of`` as BUDGET_COLUMNS + USD columns (for the review)."""
    return _frame(_burn_rows(engine, config, as_of, resolution_s))


def budget_period_frame(
    engine: Engine,
    config: EnforcementConfig,
    start: datetime,
    end: datetime,
    resolution_s: int = 3600,
) -> pd.DataFrame:
    """Every budget judged per its own period inside [start, end): a daily budget once per
    day (at each day's end), a weekly or monthly one at ``end``; ``worst`` marks each
    budget's highest ratio."""
    ends, t = [], start
    while t < end:
        t = min(end, period_bounds(Period.daily, t)[1])
        ends.append(t - timedelta(microseconds=1))
    rows: list[dict[str, object]] = []
    for as_of in ends:
        last = as_of == ends[-1]
        rows += [
            r
            for r in _burn_rows(engine, config, as_of, resolution_s)
            if last or r["period"] == "daily"
        ]
    df = _frame(rows)
    if df.empty:
        return df.assign(worst=pd.Series(dtype=bool))
    top = df.groupby("name")["ratio"].transform("max")
    first = df.assign(_top=df["ratio"] == top).groupby("name")["_top"].cumsum() == 1
    df["worst"] = (df["ratio"] == top) & first
    return df


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows,
        columns=[
            *BUDGET_COLUMNS[:5],
            "period_start",
            "limit_usd",
            "limit_tokens",
            "spent_usd",
            "spent_tokens",
            "ratio",
            "status",
            "action",
            "basis",
        ],
    )
