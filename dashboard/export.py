"""Write the weekly cost review: CSV / Parquet (one file per table), XLSX (one sheet per
table) or HTML (one page with the charts and the tables, plotly.js inlined: readable offline).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from sqlalchemy.engine import Engine

from billing.config import BillingConfig, ExportFormat
from billing.windows import Window, WindowError, iso_week
from dashboard import figures
from dashboard.budgets import budget_period_frame
from dashboard.finance import FOCUS_TABLES, focus_table, text_frame, write_csv, write_xlsx
from dashboard.queries import read_ledger
from dashboard.report import WeeklyReport, build_weekly

WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
FORMATS: tuple[ExportFormat, ...] = ("csv", "parquet", "xlsx", "html")


def week_window(week: str) -> Window:
    """The window of an ISO week ``YYYY-Www``. Raises: WindowError for anything else."""
    m = WEEK.match(week)
    if not m:
        raise WindowError(f"week must look like 2026-W47, got {week!r}")
    return iso_week(int(m.group(1)), int(m.group(2)))


def week_label(ts: datetime) -> str:
    """The ISO week holding ``ts`` as ``YYYY-Www``."""
    y, w, _ = ts.astimezone(UTC).isocalendar()
    return f"{y}-W{w:02d}"


def load_weekly(engine: Engine, week: str, config: BillingConfig) -> WeeklyReport:
    """Read the week and the one before from the ledger, budgets at the week's end; build."""
    w = week_window(week)
    prev = Window(w.start - timedelta(days=7), w.start)
    with engine.connect() as conn:
        cur_ledger = read_ledger(conn, w)
        prev_ledger = read_ledger(conn, prev)
    budgets = budget_period_frame(
        engine, config.enforcement, w.start, w.end, config.ledger_resolution_s
    )
    return build_weekly(
        week,
        w,
        cur_ledger,
        prev_ledger,
        budgets=budgets,
        top_n=config.export.top_n,
        rate_card=config.enforcement,
    )


def write_report(report: WeeklyReport, out_dir: Path, fmt: ExportFormat) -> list[Path]:
    """Write ``report`` under ``out_dir`` as ``costctl-weekly-<week>[-<table>].<ext>``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"costctl-weekly-{report.week}"
    span = (report.window.start.isoformat(), report.window.end.isoformat())
    tables = {
        name: focus_table(df, *span) if name in FOCUS_TABLES and fmt != "html" else df
        for name, df in report.tables().items()
    }
    if fmt == "csv":
        paths = [out_dir / f"{stem}-{name}.csv" for name in tables]
        for path, df in zip(paths, tables.values(), strict=True):
            write_csv(df, path)
        return paths
    if fmt == "parquet":
        paths = [out_dir / f"{stem}-{name}.parquet" for name in tables]
        for path, df in zip(paths, tables.values(), strict=True):
            _parquet_safe(df).to_parquet(path, index=False)
        return paths
    if fmt == "xlsx":
        path = out_dir / f"{stem}.xlsx"
        write_xlsx(tables, path)
        return [path]
    if fmt == "html":
        path = out_dir / f"{stem}.html"
        path.write_text(render_html(report), encoding="utf-8")
        return [path]
    raise ValueError(f"unknown format {fmt!r}; one of {list(FORMATS)}")


def export_weekly(
    engine: Engine, week: str, config: BillingConfig, out_dir: Path, formats: Sequence[ExportFormat]
) -> list[Path]:
    """Build the review of ``week`` once and write it in every format asked for."""
    report = load_weekly(engine, week, config)
    return [p for fmt in formats for p in write_report(report, out_dir, fmt)]


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns mixing None and text become plain strings or floats for Arrow."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].astype("string")
    return out


def report_figures(report: WeeklyReport) -> list[go.Figure]:
    """The review's charts: cost by customer and top movers (this vs last week), idle."""
    c = report.customers
    m = report.movers
    labels = [f"{r.customer} · {r.model} · {r.request_type}" for r in m.itertuples()]
    return [
        figures.bars(
            f"Cost by customer, {report.week} vs the week before (USD)",
            [str(x) for x in c["customer"]],
            {"this week": c["cost_usd"].tolist(), "week before": c["prev_cost_usd"].tolist()},
            yaxis="USD",
            empty_reason="no attributed cost in these two weeks",
        ),
        figures.bars(
            "Top movers: change vs the week before (USD)",
            labels,
            {"change": m["wow_change_usd"].tolist()},
            yaxis="USD",
            empty_reason="nothing moved",
        ),
        figures.idle_cost(
            report.idle.rename(columns={"model": "label"})[["label", "cost_usd", "gpu_hours"]]
        ),
    ]


def _table(title: str, df: pd.DataFrame) -> str:
    body = (
        "<p><em>none</em></p>"
        if df.empty
        else text_frame(df).to_html(index=False, na_rep="", border=0)
    )
    return f"<h2>{html.escape(title)}</h2>{body}"


def render_html(report: WeeklyReport) -> str:
    """One self-contained page: summary, charts, then every table."""
    s = report.summary.iloc[0]
    charts = [
        pio.to_html(
            f,
            full_html=False,
            include_plotlyjs=(i == 0),
            default_width="100%",
            config={"displayModeBar": False, "staticPlot": True},
        )
        for i, f in enumerate(report_figures(report))
    ]
    wow = "n/a" if pd.isna(s["wow_change_pct"]) else f"{s['wow_change_pct']:+.1f}%"
    head = (
        f"<h1>costctl weekly cost review · {html.escape(report.week)}</h1>"
        f"<p>{report.window.start:%Y-%m-%d} to {report.window.end:%Y-%m-%d} (UTC). "
        f"Metered GPU cost <b>${s['metered_cost_usd']:,.2f}</b> ({wow} week over week), "
        f"attributed ${s['attributed_usd']:,.2f}, idle ${s['idle_usd']:,.2f}, unallocated "
        f"${s['unallocated_usd']:,.2f}; {int(s['requests']):,} requests, "
        f"{int(s['tokens']):,} tokens.</p>"
    )
    tables = "".join(
        _table(t, df)
        for t, df in [
            ("Customers", report.customers),
            ("Top movers", report.movers),
            ("Idle cost by model", report.idle),
            ("Budgets (each per its own period: daily ones per day; worst marked)", report.budgets),
            ("Every customer × model × request type", report.lines),
        ]
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}"
        "table{border-collapse:collapse;font-size:13px;margin-bottom:1.5em}"
        "th,td{padding:3px 9px;border-bottom:1px solid #ddd;text-align:right}"
        "th{background:#f0f2f5}td:first-child,th:first-child{text-align:left}"
        "@media print{body{margin:0;max-width:none;font-size:10px}"
        "table{font-size:9px;width:100%;page-break-inside:auto}tr{page-break-inside:avoid}"
        "th,td{padding:1px 4px}h2{page-break-after:avoid}"
        ".plotly-graph-div{page-break-inside:avoid;max-width:100%}}"
        "@page{size:A4 landscape;margin:12mm}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>costctl weekly review {html.escape(report.week)}</title>"
        f"<style>{style}</style></head><body>{head}{''.join(charts)}{tables}</body></html>"
    )
