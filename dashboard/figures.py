"""Plotly figures from the frames of ``dashboard.transforms`` (pure: frame in, figure out).

A figure with nothing to show says why in its middle ("no data yet: ...") instead of drawing
empty axes; such a figure has no traces, which is what the browser test checks for.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from dashboard.transforms import IDLE_LABEL, OTHER, UNALLOCATED_LABEL

_GRID = {"gridcolor": "#EBF0F8", "linecolor": "#EBF0F8", "zerolinecolor": "#EBF0F8"}
# plotly_white's look in a few keys: a named template is deep-copied into every figure, which
# cost ~40 ms a figure (a third of a render); this small one costs a tenth of that.
TEMPLATE: dict[str, object] = {
    "layout": {
        "colorway": [
            "#636efa",
            "#EF553B",
            "#00cc96",
            "#ab63fa",
            "#FFA15A",
            "#19d3f3",
            "#FF6692",
            "#B6E880",
            "#FF97FF",
            "#FECB52",
        ],
        "plot_bgcolor": "white",
        "paper_bgcolor": "white",
        "font": {"color": "#2a3f5f"},
        "xaxis": {**_GRID, "automargin": True},
        "yaxis": {**_GRID, "automargin": True},
        "hovermode": "closest",
    }
}
HEIGHT = 340
FIXED_COLORS = {IDLE_LABEL: "#c7c7c7", UNALLOCATED_LABEL: "#8c8c8c", OTHER: "#dcb0f2"}


def _base(title: str, **layout: object) -> go.Figure:
    fig = go.Figure()
    base: dict[str, object] = {
        "title": {"text": title, "x": 0.01, "font": {"size": 15}},
        "template": TEMPLATE,
        "height": HEIGHT,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 40},
        "legend": {"font": {"size": 11}},
    }
    fig.update_layout(**{**base, **layout})
    return fig


def layout_only(title: str, **layout: object) -> go.Figure:
    """An empty figure with the house layout (other panels add their traces)."""
    return _base(title, **layout)


def _x(buckets: pd.Series, n_buckets: int) -> pd.Series | list[str]:
    """Bucket starts; as text labels when there is a single bucket (a lone date on a time
    axis gets a sub-millisecond scale)."""
    if n_buckets > 1:
        return buckets
    return [f"{pd.Timestamp(b):%Y-%m-%d %H:%M} UTC" for b in buckets]


def empty(title: str, reason: str) -> go.Figure:
    """A figure without traces that states why it is empty."""
    fig = _base(title, xaxis={"visible": False}, yaxis={"visible": False})
    fig.add_annotation(
        text=f"no data yet: {reason}",
        showarrow=False,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        font={"size": 14, "color": "#666"},
    )
    return fig


# d3 formats: significant digits in fixed notation (never e-notation), "~" drops zeros
SIG3 = "$.3~r"
SIG3_PLAIN = ",.3~r"


def cost_per_1m(df: pd.DataFrame) -> go.Figure:
    """Lines per model: billed USD per 1M tokens (solid) and loaded with idle (dotted, open
    markers, so it shows with a single bucket too)."""
    title = "Cost per 1M tokens by model (USD; dotted = incl. the model's idle)"
    if df.empty:
        return empty(title, "no tokens in this window")
    fig = _base(
        title, yaxis={"title": "USD / 1M tokens", "rangemode": "tozero", "tickformat": SIG3}
    )
    palette = fig.layout.template.layout.colorway or ()  # from TEMPLATE
    n = df["bucket"].nunique()
    for i, (model, g) in enumerate(df.groupby("model", sort=True)):
        color = palette[i % len(palette)] if palette else None
        fig.add_scatter(
            x=_x(g["bucket"], n),
            y=g["billed_per_1m"],
            name=str(model),
            mode="lines+markers",
            line={"color": color},
            legendgroup=str(model),
            hovertemplate=f"{model}: %{{y:{SIG3}}} per 1M tokens<extra></extra>",
        )
        fig.add_scatter(
            x=_x(g["bucket"], n),
            y=g["loaded_per_1m"],
            name=f"{model} incl. idle",
            mode="lines+markers",
            line={"color": color, "dash": "dot"},
            marker={"symbol": "circle-open", "size": 9},
            legendgroup=str(model),
            showlegend=False,
            hovertemplate=f"{model} incl. idle: %{{y:{SIG3}}} per 1M tokens<extra></extra>",
        )
    return fig


METRICS = {
    "cost_usd": ("cost (USD)", SIG3),
    "tokens": ("tokens", SIG3_PLAIN),
    "usd_per_1m": ("USD per 1M tokens", SIG3),
    "utilization": ("utilization", SIG3_PLAIN),
}
# the utilization metric's unit differs by chart: % busy of held GPU time per model, busy
# GPU-hours per customer
UTILIZATION_LABEL = {"model": "% of held GPU time busy", "customer": "busy GPU-hours billed"}


def series(df: pd.DataFrame, key: str, metric: str, title: str) -> go.Figure:
    """Lines per ``key`` value of one metric over the buckets (markers show a lone bucket)."""
    label, fmt = METRICS[metric]
    if metric == "utilization":
        label = UTILIZATION_LABEL.get(key, label)
    full = f"{title}: {label}"
    if df.empty:
        return empty(full, "no ledger rows in this window")
    fig = _base(full, yaxis={"title": label, "rangemode": "tozero", "tickformat": fmt})
    n = df["bucket"].nunique()
    for name, g in df.groupby(key, sort=True):
        fig.add_scatter(
            x=_x(g["bucket"], n),
            y=g[metric],
            name=str(name),
            mode="lines+markers",
            hovertemplate=f"{name}: %{{y:{fmt}}}<extra></extra>",
        )
    return fig


def cost_stack(df: pd.DataFrame, title: str) -> go.Figure:
    """Stacked bars of USD per bucket, one trace per label (largest first)."""
    if df.empty:
        return empty(title, "no ledger rows in this window")
    fig = _base(title, barmode="stack", yaxis={"title": "USD"})
    n = df["bucket"].nunique()
    for label in df["label"].drop_duplicates():
        g = df[df["label"] == label]
        fig.add_bar(
            x=_x(g["bucket"], n),
            y=g["cost_usd"],
            name=str(label),
            marker={"color": FIXED_COLORS.get(str(label))},
        )
    return fig


def utilization(df: pd.DataFrame) -> go.Figure:
    """Horizontal bars per GPU / MIG slice: allocated % next to used SM %."""
    title = "GPU and MIG-slice utilization vs allocation (% of the device)"
    if df.empty:
        return empty(title, "no GPU samples in this window")
    names = [
        f"{'  └ ' + str(p) + ' ' + str(d)[-4:] if isinstance(p, str) and p else str(d)[:18]}"
        f" {t}{' · ' + m if m else ''}"
        for d, p, t, m in zip(
            df["device"], df["profile"], df["gpu_type"], df["models"], strict=True
        )
    ]
    fig = _base(
        title,
        barmode="group",
        height=max(HEIGHT, 60 + 28 * len(df)),
        xaxis={"title": "%", "range": [0, 100]},
        yaxis={"autorange": "reversed", "automargin": True},
    )
    fig.add_bar(y=names, x=df["allocated_pct"], name="allocated", orientation="h")
    fig.add_bar(y=names, x=df["used_pct"], name="used (SM busy)", orientation="h")
    return fig


def idle_cost(df: pd.DataFrame) -> go.Figure:
    """Bars of idle USD per model plus unallocated GPU time."""
    title = "Idle cost: allocated but not busy, per model, and unallocated"
    if df.empty:
        return empty(title, "no idle or unallocated cost in this window")
    fig = _base(title, yaxis={"title": "USD"})
    colors = [FIXED_COLORS.get(str(lbl), "#ff7f0e") for lbl in df["label"]]
    fig.add_bar(
        x=df["label"],
        y=df["cost_usd"],
        marker={"color": colors},
        text=[f"${v:,.2f}" for v in df["cost_usd"]],
        customdata=df["gpu_hours"],
        hovertemplate="%{x}: $%{y:,.2f} (%{customdata:.2f} GPU-h)<extra></extra>",
        name="idle",
    )
    return fig


def bars(
    title: str,
    x: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    yaxis: str,
    empty_reason: str,
) -> go.Figure:
    """Grouped bars, one trace per series (used by the plan and what-if panels)."""
    if not x:
        return empty(title, empty_reason)
    fig = _base(title, barmode="group", yaxis={"title": yaxis})
    for name, ys in series.items():
        fig.add_bar(x=list(x), y=list(ys), name=name)
    return fig


def margin(df: pd.DataFrame) -> go.Figure:
    """Grouped bars per customer and per model: cost_usd, price_usd and margin_usd."""
    title = "Cost, price (rate card) and margin = price - cost (USD), per customer and model"
    if df.empty:
        return empty(title, "no attributed ledger rows in this window")
    fig = _base(title, barmode="group", yaxis={"title": "USD"})
    x = [f"{d}: {v}" for d, v in zip(df["dim"], df["label"], strict=True)]
    for col, name in (("cost_usd", "cost"), ("price_usd", "price"), ("margin_usd", "margin")):
        fig.add_bar(
            x=x, y=df[col], name=name, hovertemplate="%{x}: $%{y:,.2f}<extra>" + name + "</extra>"
        )
    return fig
