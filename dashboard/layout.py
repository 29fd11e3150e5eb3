"""The page: filters on top, headline figures, then the charts in a two-column grid."""

from __future__ import annotations

from typing import Any

from dash import dash_table, dcc, html

from dashboard.auth import Viewer

WINDOWS = [
    ("last hour", "1h"),
    ("last 6 hours", "6h"),
    ("last 24 hours", "24h"),
    ("last 7 days", "7d"),
    ("last 30 days", "30d"),
    ("this ISO week", "week"),
    ("last ISO week", "lastweek"),
    ("this month", "month"),
]
GRAPHS = {
    "g-cost-per-1m": "cost per 1M tokens by model over time",
    "g-series-model": "the chosen metric per model over time",
    "g-series-customer": "the chosen metric per customer over time",
    "g-by-customer": "cost by customer (top-N + other)",
    "g-by-request-type": "cost by request type (top-N + other)",
    "g-utilization": "GPU and MIG-slice utilization vs allocation",
    "g-idle": "idle cost",
    "g-margin": "cost, price and margin per customer and per model",
    "g-budget": "budget burn-down",
    "g-plan": "packing plan per GPU",
    "g-whatif": "what-if at 1x (the plan), 3x, 5x, 10x load",
}
FLEET_GRAPHS = ("g-utilization", "g-idle", "g-margin", "g-plan", "g-whatif")

CARD = {
    "background": "#fff",
    "borderRadius": "8px",
    "boxShadow": "0 1px 3px #0002",
    "padding": "6px",
}


def _filter(label: str, component: Any) -> html.Div:
    return html.Div(
        [html.Label(label, style={"fontSize": "12px", "color": "#555"}), component],
        style={"flex": "1", "minWidth": "180px"},
    )


def _filters(viewer: Viewer, default_window: str) -> html.Div:
    return html.Div(
        [
            _filter(
                "window",
                dcc.Dropdown(
                    id="f-window",
                    options=[{"label": lbl, "value": v} for lbl, v in WINDOWS],
                    value=default_window,
                    clearable=False,
                ),
            ),
            _filter(
                "customer",
                dcc.Dropdown(
                    id="f-customer",
                    multi=True,
                    placeholder=viewer.customer or "all customers",
                    disabled=viewer.is_tenant,
                ),
            ),
            _filter("model", dcc.Dropdown(id="f-model", multi=True, placeholder="all models")),
            _filter(
                "request type",
                dcc.Dropdown(id="f-request-type", multi=True, placeholder="all request types"),
            ),
            _filter(
                "metric",
                dcc.Dropdown(
                    id="f-metric",
                    options=[
                        {"label": "cost (USD)", "value": "cost_usd"},
                        {"label": "tokens", "value": "tokens"},
                        {"label": "USD per 1M tokens", "value": "usd_per_1m"},
                        {"label": "utilization", "value": "utilization"},
                    ],
                    value="cost_usd",
                    clearable=False,
                ),
            ),
            _filter(
                "top-N",
                dcc.Dropdown(
                    id="f-top-n",
                    options=[{"label": str(n), "value": n} for n in (3, 5, 8, 10, 20)],
                    value=5,
                    clearable=False,
                ),
            ),
        ],
        style={"display": "flex", "gap": "12px", "flexWrap": "wrap", "margin": "8px 0"},
    )


def _header(viewer: Viewer) -> html.Div:
    scope = f"customer {viewer.customer}" if viewer.customer else "all customers"
    return html.Div(
        [
            html.H2("costctl · unit economics", style={"margin": "0"}),
            html.Div(
                [
                    html.Span(f"{viewer.name} ({viewer.role}, {scope})  "),
                    html.A("sign out", href="/logout", id="logout"),
                ],
                style={"fontSize": "13px", "color": "#444"},
            ),
        ],
        style={"display": "flex", "justifyContent": "space-between", "alignItems": "center"},
    )


TABLE_COLUMNS = [
    ("bucket", "bucket (UTC)", "text"),
    ("model", "model", "text"),
    ("customer", "customer", "text"),
    ("request_type", "request type", "text"),
    ("kind", "kind", "text"),
    ("cost_usd", "cost (USD)", "numeric"),
    ("tokens", "tokens", "numeric"),
    ("requests", "requests", "numeric"),
    ("gpu_hours", "GPU-hours", "numeric"),
    ("usd_per_1m", "USD per 1M tokens", "numeric"),
]


def rows_table() -> html.Div:
    """The rows in view: sortable, paged, with a CSV download (DataTable's export)."""
    table = dash_table.DataTable(
        id="t-rows",
        columns=[{"id": c, "name": n, "type": t} for c, n, t in TABLE_COLUMNS],
        data=[],
        sort_action="native",
        sort_mode="multi",
        page_size=15,
        export_format="csv",
        export_headers="names",
        style_table={"overflowX": "auto"},
        style_cell={"fontSize": "12px", "padding": "4px 8px", "fontFamily": "system-ui"},
        style_cell_conditional=[
            {"if": {"column_type": "numeric"}, "textAlign": "right"},
        ],
    )
    return html.Div(
        [html.H4("Rows in view", style={"margin": "4px 0"}), table],
        style={**CARD, "marginTop": "12px"},
        title="the ledger rows in view, per bucket; Export downloads them as CSV",
    )


def page(viewer: Viewer, *, default_window: str = "7d", refresh_s: float = 30.0) -> html.Div:
    """The whole page for ``viewer`` (a tenant sees no fleet-wide panels)."""
    hidden = {"display": "none"}
    graphs = [
        html.Div(
            dcc.Graph(id=gid, config={"displaylogo": False, "displayModeBar": False}),
            style=hidden if viewer.is_tenant and gid in FLEET_GRAPHS else CARD,
            title=desc,
        )
        for gid, desc in GRAPHS.items()
    ]
    return html.Div(
        [
            _header(viewer),
            _filters(viewer, default_window),
            html.Div(
                id="kpis",
                style={"display": "flex", "flexWrap": "wrap", "gap": "12px", "margin": "8px 0"},
            ),
            html.Div(id="status", style={"fontSize": "12px", "color": "#777"}),
            html.Div(
                graphs,
                style={
                    "display": "grid",
                    "gridTemplateColumns": "repeat(auto-fit, minmax(460px, 1fr))",
                    "gap": "12px",
                },
            ),
            rows_table(),
            dcc.Interval(id="tick", interval=int(refresh_s * 1000)),
        ],
        style={
            "fontFamily": "system-ui, sans-serif",
            "background": "#f4f6f8",
            "padding": "12px 18px",
            "minHeight": "100vh",
        },
    )


def kpi_cards(items: list[tuple[str, str]]) -> list[html.Div]:
    """Headline figures as cards (label, formatted value)."""
    return [
        html.Div(
            [
                html.Div(label, style={"fontSize": "12px", "color": "#666"}),
                html.Div(value, style={"fontSize": "20px", "fontWeight": "600"}),
            ],
            style={**CARD, "padding": "8px 14px", "minWidth": "130px"},
            className="kpi",
        )
        for label, value in items
    ]
