"""The packing-plan and what-if panels: scheduler's pure views over a snapshot of the store.

The snapshot is built the way ``costctl plan`` builds it from the store: GPUs from the last
hour of samples (``scheduler.snapshot.gpus_from_samples``), demand measured from process
samples (``scheduler.demand``), the current placement from open allocations
(``scheduler.jobs.current_slots``) and prices from the price table. The plan and the what-if
come from ``scheduler.views.packing_view`` / ``what_if``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import plotly.graph_objects as go
from sqlalchemy.engine import Engine

from dashboard import figures
from dashboard.auth import Viewer
from scheduler.config import SchedulerConfig
from scheduler.model import Snapshot
from scheduler.policy import Policy
from scheduler.store_snapshot import snapshot_from_store
from scheduler.views import PackingView, WhatIf, packing_view, what_if

PLAN_TITLE = "Packing plan per GPU (share of each GPU per model)"
WHATIF_TITLE = "What-if: USD/hour at 1x (the plan), 3x, 5x, 10x today's measured demand"
MULTIPLIERS = (1.0, 3.0, 5.0, 10.0)


def load_snapshot(engine: Engine, config: SchedulerConfig, now: datetime) -> Snapshot | None:
    """The fleet as sampled in the last 10 minutes, with measured demand; None without data."""
    return snapshot_from_store(engine, config, now, lookback=timedelta(minutes=10))


def _slot_label(slot: dict[str, object]) -> str:
    if slot.get("profile"):
        return str(slot["profile"])
    if slot.get("thread_pct"):
        return f"MPS {slot['thread_pct']}%"
    share = float(str(slot.get("share", 1.0)))
    return "whole GPU" if share >= 0.999 else f"{share:.0%}"


def plan_figure(view: PackingView) -> go.Figure:
    """Stacked bars per GPU: each model's share (MIG profile / MPS % as text)."""
    title = (
        f"{PLAN_TITLE}<br><sup>plan ${view.usd_per_hour:,.2f}/h on "
        f"{len(view.rows)} GPUs · one model per GPU ${view.one_per_gpu_usd_per_hour:,.2f}/h · "
        f"saving ${view.saving_vs_one_per_gpu_usd_per_hour:,.2f}/h</sup>"
    )
    if not view.rows:
        return figures.empty(PLAN_TITLE, "the plan places nothing")
    labels = [f"{r['node']}/{r['gpu_uuid'][-6:]} {r['gpu_type']} ({r['mode']})" for r in view.rows]
    per_model: dict[str, dict[str, list[object]]] = {}
    for label, r in zip(labels, view.rows, strict=True):
        for s in r["slots"]:
            d = per_model.setdefault(str(s["model"]), {"x": [], "y": [], "text": [], "usd": []})
            d["x"].append(label)
            d["y"].append(float(s["share"]) * 100)
            d["text"].append(_slot_label(s))
            d["usd"].append(float(s["usd_per_hour"]))
    fig = figures.layout_only(
        title, barmode="stack", yaxis={"title": "% of GPU", "range": [0, 100]}
    )
    for model, d in sorted(per_model.items()):
        fig.add_bar(
            x=d["x"],
            y=d["y"],
            name=model,
            text=d["text"],
            customdata=d["usd"],
            hovertemplate="%{x}<br>%{text}: %{y:.0f}% ($%{customdata:.2f}/h)<extra>"
            + model
            + "</extra>",
        )
    fig.update_layout(margin={"t": 70})
    return fig


def whatif_figure(rows: list[WhatIf]) -> go.Figure:
    """Grouped bars of USD/hour: packed, current placement scaled, one model per GPU."""
    if not rows:
        return figures.empty(WHATIF_TITLE, "no measured demand yet")
    x = [f"{r.multiplier:g}x load" for r in rows]
    fig = figures.layout_only(WHATIF_TITLE, barmode="group", yaxis={"title": "USD / hour"})
    fig.add_bar(
        x=x,
        y=[r.packed_usd_per_hour for r in rows],
        name="packed (planner)",
        text=[
            f"{r.packed_gpus} GPUs" + (f", {r.unplaced} unplaced" if r.unplaced else "")
            for r in rows
        ],
    )
    fig.add_bar(x=x, y=[r.current_usd_per_hour for r in rows], name="current placement")
    fig.add_bar(
        x=x,
        y=[r.naive_usd_per_hour for r in rows],
        name="one model per GPU",
        text=[f"{r.naive_gpus} GPUs" for r in rows],
    )
    return fig


@dataclass
class FleetPanels:
    """Plan and what-if panels sharing one snapshot per render (keyed by ``now``)."""

    engine: Engine
    config: SchedulerConfig
    _memo: tuple[datetime, Snapshot | None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self, now: datetime) -> Snapshot | None:
        """The store's snapshot at ``now`` (computed once per ``now``)."""
        with self._lock:
            if self._memo is None or self._memo[0] != now:
                self._memo = (now, load_snapshot(self.engine, self.config, now))
            return self._memo[1]

    def plan(self, now: datetime, _viewer: Viewer) -> go.Figure:
        """The plan panel."""
        snap = self.snapshot(now)
        if snap is None:
            return figures.empty(PLAN_TITLE, "no GPU or process samples in the last 10 minutes")
        return plan_figure(packing_view(snap, Policy.from_config(self.config)))

    def whatif(self, now: datetime, _viewer: Viewer) -> go.Figure:
        """The what-if panel."""
        snap = self.snapshot(now)
        if snap is None:
            return figures.empty(WHATIF_TITLE, "no measured demand in the last samples")
        return whatif_figure(what_if(snap, MULTIPLIERS, Policy.from_config(self.config)))


def panels_for(
    engine: Engine, config: SchedulerConfig
) -> tuple[Callable[[datetime, Viewer], go.Figure], Callable[[datetime, Viewer], go.Figure]]:
    """(plan panel, what-if panel) over ``engine``."""
    fp = FleetPanels(engine, config)
    return fp.plan, fp.whatif
