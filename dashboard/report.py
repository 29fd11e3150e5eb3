"""The weekly cost review as tables (pure: ledger frames of two weeks in, tables out).

Per customer x model x request_type: requests, tokens, GPU-seconds, cost, cost per 1k
tokens, week-over-week change, budget status; plus per-customer totals, top movers, idle
cost per model and a one-row summary. Invariant (tested): Σ lines.cost + Σ idle.cost =
the week's metered cost (the ledger's rows add up to it to the cent).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from billing.enforcement.config import EnforcementConfig
from billing.enforcement.rates import add_price
from billing.windows import Window
from dashboard import transforms as tf

KEYS = ["customer", "model", "request_type"]
NUMS = ["requests", "input_tokens", "output_tokens", "gpu_seconds", "cost_cents"]
BUDGET_COLUMNS = ["name", "customer", "model", "request_type", "period", "ratio", "status"]
STATUS_RANK = {"ok": 0, "soft": 1, "hard": 2}


@dataclass(frozen=True)
class WeeklyReport:
    """One ISO week's cost review (every frame has plain columns, ready to write)."""

    week: str
    window: Window
    summary: pd.DataFrame
    lines: pd.DataFrame
    customers: pd.DataFrame
    movers: pd.DataFrame
    idle: pd.DataFrame
    budgets: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        """Name -> table, in reading order."""
        return {
            "summary": self.summary,
            "customers": self.customers,
            "movers": self.movers,
            "lines": self.lines,
            "idle": self.idle,
            "budgets": self.budgets,
        }


def _sum(ledger: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    att = ledger[ledger["kind"] == tf.ATTRIBUTED]
    return att.groupby(keys, sort=True)[NUMS].sum().reset_index()


def _wow(cur: pd.DataFrame, prev: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Current-week sums joined with last week's cost; change in USD and %."""
    p = prev[[*keys, "cost_cents"]].rename(columns={"cost_cents": "prev_cost_cents"})
    m = cur.merge(p, on=keys, how="outer").fillna({c: 0 for c in [*NUMS, "prev_cost_cents"]})
    for c in [*NUMS[:3], "cost_cents", "prev_cost_cents"]:
        m[c] = m[c].astype("int64")
    m["tokens"] = m["input_tokens"] + m["output_tokens"]
    m["cost_usd"] = m["cost_cents"] / 100.0
    m["usd_per_1m_tokens"] = m["cost_usd"] / m["tokens"].where(m["tokens"] > 0) * 1e6
    m["gpu_hours"] = m["gpu_seconds"] / 3600.0
    m["prev_cost_usd"] = m["prev_cost_cents"] / 100.0
    m["wow_change_usd"] = (m["cost_cents"] - m["prev_cost_cents"]) / 100.0
    prev_usd = m["prev_cost_usd"].where(m["prev_cost_usd"] > 0)
    m["wow_change_pct"] = (m["wow_change_usd"] / prev_usd * 100).round(2)
    return m.drop(columns=["cost_cents", "prev_cost_cents", "gpu_seconds"])


def budget_status(row: pd.Series, budgets: pd.DataFrame) -> str:
    """Worst status of the budgets whose scope covers a line ('' when none does).

    Details: a budget column left empty (None/NaN) matches any value, so a global budget
    covers every line; the order is ok < soft < hard.
    """
    if budgets.empty:
        return ""
    hit = pd.Series(True, index=budgets.index)
    for k in KEYS:
        if k in row.index:
            hit &= budgets[k].isna() | (budgets[k] == row[k])
    found = budgets.loc[hit, "status"]
    if found.empty:
        return ""
    return str(max(found, key=lambda s: STATUS_RANK.get(str(s), -1)))


def build_weekly(
    week: str,
    window: Window,
    ledger: pd.DataFrame,
    prev_ledger: pd.DataFrame,
    *,
    budgets: pd.DataFrame | None = None,
    top_n: int = 10,
    rate_card: EnforcementConfig | None = None,
) -> WeeklyReport:
    """The review of ``week`` from its ledger rows and the previous week's (pure).

    ``budgets`` has BUDGET_COLUMNS (scope dims None = any), as read at the week's end.
    Returns: frames with USD columns; lines sorted by cost, movers by |change|. With
    ``rate_card``, lines and customers also have price_usd (their tokens at the rate card)
    and margin_usd = price_usd - cost_usd.
    """
    budgets = budgets if budgets is not None else pd.DataFrame(columns=BUDGET_COLUMNS)
    lines = _wow(_sum(ledger, KEYS), _sum(prev_ledger, KEYS), KEYS)
    lines["budget_status"] = [budget_status(r, budgets) for _, r in lines.iterrows()]
    lines = lines.sort_values(["cost_usd", *KEYS], ascending=[False, True, True, True])
    customers = _wow(_sum(ledger, ["customer"]), _sum(prev_ledger, ["customer"]), ["customer"])
    if rate_card is not None:
        lines = add_price(lines, rate_card).round({"price_usd": 6, "margin_usd": 6})
        per = lines.groupby("customer")["price_usd"].sum()
        customers["price_usd"] = customers["customer"].map(per).fillna(0.0).round(6)
        customers["margin_usd"] = (customers["price_usd"] - customers["cost_usd"]).round(6)
    customers["budget_status"] = [budget_status(r, budgets) for _, r in customers.iterrows()]
    customers = customers.sort_values(["cost_usd", "customer"], ascending=[False, True])
    order = lines["wow_change_usd"].abs().sort_values(ascending=False, kind="stable").index
    movers = lines.loc[order[:top_n]]
    movers = movers[movers["wow_change_usd"] != 0]
    idle = _idle(ledger, prev_ledger)
    k, kp = tf.kpis(ledger), tf.kpis(prev_ledger)
    summary = pd.DataFrame(
        [
            {
                "week": week,
                "start": window.start.isoformat(),
                "end": window.end.isoformat(),
                "metered_cost_usd": k.cost_usd,
                "attributed_usd": k.attributed_usd,
                "idle_usd": k.idle_usd,
                "unallocated_usd": k.unallocated_usd,
                "idle_share_pct": None if k.idle_share is None else round(k.idle_share * 100, 2),
                "requests": k.requests,
                "tokens": k.tokens,
                "gpu_hours": round(k.gpu_hours, 4),
                "usd_per_1m_tokens": k.usd_per_1m_tokens,
                "prev_metered_cost_usd": kp.cost_usd,
                "wow_change_usd": round(k.cost_usd - kp.cost_usd, 2),
                "wow_change_pct": round((k.cost_usd - kp.cost_usd) / kp.cost_usd * 100, 2)
                if kp.cost_usd
                else None,
            }
        ]
    )
    return WeeklyReport(
        week=week,
        window=window,
        summary=summary,
        lines=lines.reset_index(drop=True),
        customers=customers.reset_index(drop=True),
        movers=movers.reset_index(drop=True),
        idle=idle,
        budgets=budgets.reset_index(drop=True),
    )


def _idle(ledger: pd.DataFrame, prev_ledger: pd.DataFrame) -> pd.DataFrame:
    """Idle USD per model and unallocated, this week and last."""
    cur = tf.idle_by_model(ledger).rename(columns={"label": "model"})
    prev = tf.idle_by_model(prev_ledger).rename(
        columns={"label": "model", "cost_usd": "prev_cost_usd"}
    )
    out = cur.merge(prev[["model", "prev_cost_usd"]], on="model", how="left")
    out["prev_cost_usd"] = out["prev_cost_usd"].fillna(0.0)
    out["wow_change_usd"] = (out["cost_usd"] - out["prev_cost_usd"]).round(2)
    out["gpu_hours"] = out["gpu_hours"].astype(float).round(4)
    return out
