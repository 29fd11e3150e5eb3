"""One callback renders the page: read once (``queries.load``), transform, draw.

``render`` is the pure part (frames + selection -> figures and headline figures) and is what
the tests and the benchmark call; ``register`` wires it to Dash with the clock and the
session's viewer at the edge.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from dash import Dash, Input, Output
from sqlalchemy.engine import Engine

from billing.enforcement.config import EnforcementConfig
from billing.windows import Window, WindowError, parse_window
from dashboard import figures
from dashboard import transforms as tf
from dashboard.auth import Viewer, current_viewer
from dashboard.layout import FLEET_GRAPHS, GRAPHS, kpi_cards
from dashboard.queries import Bucket, DashData, load

log = logging.getLogger(__name__)

# A panel fed by another package (budgets, packing plan, what-if): now, viewer -> figure.
Panel = Callable[[datetime, Viewer], go.Figure]


@dataclass(frozen=True)
class Selection:
    """The filters as the page sends them (empty tuples mean all)."""

    window: str = "7d"
    customers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    request_types: tuple[str, ...] = ()
    top_n: int = 5
    metric: str = "cost_usd"


@dataclass(frozen=True)
class Rendered:
    """What one render produces."""

    figures: dict[str, go.Figure]
    kpis: tf.Kpis
    options: dict[str, list[str]]
    rows: int
    table: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Panels:
    """Panels owned by other packages; a missing one shows a 'no data yet' figure."""

    budget: Panel | None = None
    plan: Panel | None = None
    whatif: Panel | None = None
    rate_card: EnforcementConfig | None = None  # prices the margin panel
    missing: dict[str, str] = field(
        default_factory=lambda: {
            "g-budget": "budgets are not available in this build",
            "g-plan": "the packing plan is not available in this build",
            "g-whatif": "the what-if is not available in this build",
        }
    )


def resolve_window(text: str, now: datetime) -> Window:
    """The window of a selection (falls back to 24h on a bad value)."""
    try:
        return parse_window(text, now)
    except WindowError:
        return parse_window("24h", now)


def sig(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits in fixed notation (never e-notation).

    Details: 1,000 and more keep their integer digits with separators (12,345.6 -> "12,346");
    0 -> "0"; at most 12 decimals.
    """
    if value == 0 or not math.isfinite(value):
        return "0"
    decimals = max(0, min(12, digits - 1 - math.floor(math.log10(abs(value)))))
    return f"{value:,.{decimals}f}"


def usd_small(usd: float) -> str:
    """USD to 3 significant digits, never in e-notation (0.00000255 -> "$0.00000255")."""
    return f"${sig(usd, 3)}"


def table_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """``tf.table_rows`` as DataTable records: numbers rounded for display, no NaN/None."""
    out = df.assign(
        bucket=df["bucket"].map(lambda b: f"{pd.Timestamp(b):%Y-%m-%d %H:%M}"),
        cost_usd=df["cost_usd"].round(2),
        gpu_hours=df["gpu_hours"].round(3),
        usd_per_1m=[
            float(sig(v, 4).replace(",", "")) if math.isfinite(v) else "" for v in df["usd_per_1m"]
        ],
    )
    return [{str(k): v for k, v in r.items()} for r in out.to_dict("records")]


def render(
    data: DashData, sel: Selection, viewer: Viewer, rate_card: EnforcementConfig | None = None
) -> Rendered:
    """Figures and headline figures of ``data`` under ``sel`` (pure); ``rate_card`` prices
    the margin panel.

    A tenant's selection is forced to its customer whatever the page sent.
    """
    customers = (viewer.customer,) if viewer.customer else sel.customers
    led = tf.filter_ledger(
        data.ledger, models=sel.models, customers=customers, request_types=sel.request_types
    )
    freq = tf.bucket_freq(data.window)
    att = data.ledger[data.ledger["kind"] == tf.ATTRIBUTED]
    options = {
        "customer": sorted(att["customer"].unique().tolist()),
        "model": sorted(data.ledger.loc[data.ledger["kind"] != tf.UNALLOCATED, "model"].unique()),
        "request_type": sorted(att["request_type"].unique().tolist()),
    }
    n = max(1, sel.top_n)
    metric = sel.metric if sel.metric in figures.METRICS else "cost_usd"
    figs = {
        "g-cost-per-1m": figures.cost_per_1m(tf.cost_per_1m_tokens(led, freq)),
        "g-series-model": figures.series(
            tf.series(led, "model", freq), "model", metric, "By model (incl. idle)"
        ),
        "g-series-customer": figures.series(
            tf.series(led, "customer", freq), "customer", metric, "By customer"
        ),
        "g-by-customer": figures.cost_stack(
            tf.cost_stack(led, "customer", n, freq), f"Cost by customer (USD, top {n} + other)"
        ),
        "g-by-request-type": figures.cost_stack(
            tf.cost_stack(led, "request_type", n, freq),
            f"Cost by request type (USD, top {n} + other)",
        ),
    }
    if viewer.is_tenant:
        for gid in FLEET_GRAPHS:
            figs[gid] = figures.empty(GRAPHS[gid], "fleet panels are not shown to a customer key")
    else:
        figs["g-utilization"] = figures.utilization(
            tf.device_utilization(data.devices, data.allocations)
        )
        figs["g-idle"] = figures.idle_cost(tf.idle_by_model(led))
        figs["g-margin"] = (
            figures.margin(tf.margin_by(led, rate_card))
            if rate_card is not None
            else figures.empty(GRAPHS["g-margin"], "no rate card in this build")
        )
    table = table_records(tf.table_rows(led, freq))
    return Rendered(figs, tf.kpis(led), options, len(led), table)


def kpi_items(k: tf.Kpis, viewer: Viewer) -> list[tuple[str, str]]:
    """Formatted headline figures (a tenant sees only what it is billed)."""
    per_1m = "–" if k.usd_per_1m_tokens is None else usd_small(k.usd_per_1m_tokens)
    items = [
        ("billed cost", f"${k.attributed_usd:,.2f}"),
        ("billed per 1M tokens", per_1m),
        ("tokens", f"{k.tokens:,}"),
        ("requests", f"{k.requests:,}"),
    ]
    if not viewer.is_tenant:
        idle = "–" if k.idle_share is None else f"{k.idle_share:.1%}"
        loaded = "–" if k.loaded_per_1m_tokens is None else usd_small(k.loaded_per_1m_tokens)
        items = [
            ("GPU cost (metered)", f"${k.cost_usd:,.2f}"),
            *items,
            ("per 1M tokens incl. idle", loaded),
            ("idle + unallocated", f"${k.idle_usd + k.unallocated_usd:,.2f} ({idle})"),
            ("GPU-hours", f"{k.gpu_hours:,.2f}"),
        ]
    return items


def _panel(panels: Panels, gid: str, panel: Panel | None, now: datetime, v: Viewer) -> go.Figure:
    if v.is_tenant and gid in FLEET_GRAPHS:
        return figures.empty(GRAPHS[gid], "fleet panels are not shown to a customer key")
    if panel is None:
        return figures.empty(GRAPHS[gid], panels.missing[gid])
    try:
        return panel(now, v)
    except Exception as exc:  # one failing panel must not blank the page; logged with trace
        log.exception("dashboard panel %s failed", gid)
        return figures.empty(GRAPHS[gid], f"this panel failed ({type(exc).__name__}); see the log")


def render_page(
    engine: Engine, sel: Selection, viewer: Viewer, now: datetime, panels: Panels
) -> tuple[Rendered, Window]:
    """Read and render everything one refresh shows (the edge: DB reads + panels).

    Details: the page's reads and the three injected panels run on a small thread pool, each
    on its own connection; the database drivers release the GIL while a query runs, so the
    slowest read (the device scan of a long window) overlaps the others.
    """
    window = resolve_window(sel.window, now)
    bucket: Bucket = "hour" if tf.bucket_freq(window.hour_aligned()) == "h" else "day"
    side = {"g-budget": panels.budget, "g-plan": panels.plan, "g-whatif": panels.whatif}
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="render") as pool:
        data_f = pool.submit(load, engine, window, customer=viewer.customer, bucket=bucket)
        side_f = {
            gid: pool.submit(_panel, panels, gid, panel, now, viewer) for gid, panel in side.items()
        }
        data = data_f.result()
        out = render(data, sel, viewer, panels.rate_card)
        for gid, f in side_f.items():
            out.figures[gid] = f.result()
    return out, data.window


def _tuple(v: Sequence[str] | str | None) -> tuple[str, ...]:
    if v is None:
        return ()
    return (v,) if isinstance(v, str) else tuple(v)


def register(
    app: Dash,
    engine: Engine,
    *,
    clock: Callable[[], datetime],
    require_auth: bool,
    panels: Panels,
) -> None:
    """Wire the page's one callback."""
    outputs = [Output(gid, "figure") for gid in GRAPHS] + [
        Output("kpis", "children"),
        Output("status", "children"),
        Output("f-customer", "options"),
        Output("f-model", "options"),
        Output("f-request-type", "options"),
        Output("t-rows", "data"),
    ]
    inputs = [
        Input("f-window", "value"),
        Input("f-customer", "value"),
        Input("f-model", "value"),
        Input("f-request-type", "value"),
        Input("f-top-n", "value"),
        Input("f-metric", "value"),
        Input("tick", "n_intervals"),
    ]

    @app.callback(outputs, inputs)  # type: ignore[misc,untyped-decorator]
    def update(
        window: str | None,
        customers: Sequence[str] | None,
        models: Sequence[str] | None,
        request_types: Sequence[str] | None,
        top_n: int | None,
        metric: str | None,
        _tick: int | None,
    ) -> list[Any]:
        viewer = current_viewer(require_auth)
        if viewer is None:  # the guard already answered 401; belt and braces
            raise PermissionError("not signed in")
        sel = Selection(
            window or "7d",
            _tuple(customers),
            _tuple(models),
            _tuple(request_types),
            int(top_n or 5),
            metric or "cost_usd",
        )
        now = clock()
        out, w = render_page(engine, sel, viewer, now, panels)
        status = (
            f"window {w.start:%Y-%m-%d %H:%M}–{w.end:%Y-%m-%d %H:%M} UTC · {out.rows} ledger rows"
            f" · refreshed {now:%H:%M:%S} UTC"
        )
        return [
            *[out.figures[gid] for gid in GRAPHS],
            kpi_cards(kpi_items(out.kpis, viewer)),
            status,
            out.options["customer"],
            out.options["model"],
            out.options["request_type"],
            out.table,
        ]
