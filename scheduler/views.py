"""Pure views for the dashboard and the CLI: the plan per GPU, and what-if demand scaling."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from scheduler.model import GpuSnapshot, Plan, Snapshot
from scheduler.planner import plan
from scheduler.policy import Policy

NODE_GPUS = 8


def plan_to_dict(p: Plan) -> dict[str, Any]:
    """A JSON/YAML-able dict of the plan: totals, per-GPU rows, unplaced and moves."""
    return {
        "usd_per_hour": p.usd_per_hour,
        "gpus_used": p.gpus_used,
        "current_usd_per_hour": p.current_usd_per_hour,
        "saving_vs_current_usd_per_hour": round(p.saving_vs_current, 6),
        "one_per_gpu": asdict(p.one_per_gpu),
        "saving_vs_one_per_gpu_usd_per_hour": round(p.saving_vs_one_per_gpu, 6),
        "lower_bound": asdict(p.lower_bound),
        "gpus": packing_rows(p),
        "nodes": [
            {"name": n.name, "sharing": n.sharing.value, "mig_config": n.mig_config}
            for n in p.nodes
        ],
        "unplaced": [
            {
                "model": u.model,
                "replica": u.replica,
                "reasons": [{"gpu": g, **asdict(r)} for g, r in u.reasons],
            }
            for u in p.unplaced
        ],
        "moves": [
            {
                "action": m.action,
                "model": m.model,
                "gpu": m.gpu_uuid,
                "mode": m.mode.value,
                "profile": m.profile,
            }
            for m in p.moves
        ],
    }


def packing_rows(p: Plan) -> list[dict[str, Any]]:
    """Per GPU: node, type, mode, price, and each slot's model, profile/share and USD/hour.

    Details: a slot costs share x the GPU's USD/hour; ``allocated`` = Σ shares (≤ 1).
    """
    rows = []
    for g in p.gpus:
        slots = [s for s in p.slots if s.gpu_uuid == g.uuid]
        rows.append(
            {
                "node": g.node,
                "gpu_uuid": g.uuid,
                "gpu_type": g.gpu_type,
                "mode": g.mode.value,
                "usd_per_hour": g.usd_per_hour,
                "allocated": round(min(1.0, sum(s.share for s in slots)), 6),
                "slots": [
                    {
                        "model": s.model,
                        "replica": s.replica,
                        "profile": s.profile,
                        "mig_start": s.mig_start,
                        "thread_pct": s.thread_pct,
                        "share": s.share,
                        "usd_per_hour": round(s.share * g.usd_per_hour, 6),
                    }
                    for s in slots
                ],
            }
        )
    return rows


@dataclass(frozen=True)
class PackingView:
    """What the dashboard's plan panel shows."""

    plan: Plan
    rows: list[dict[str, Any]]
    usd_per_hour: float
    one_per_gpu_usd_per_hour: float
    saving_vs_one_per_gpu_usd_per_hour: float
    saving_vs_current_usd_per_hour: float


def packing_view(snapshot: Snapshot, policy: Policy | None = None) -> PackingView:
    """The current packing plan per GPU with its cost and savings (pure)."""
    p = plan(snapshot, policy)
    return PackingView(
        p,
        packing_rows(p),
        p.usd_per_hour,
        p.one_per_gpu.usd_per_hour,
        round(p.saving_vs_one_per_gpu, 6),
        round(p.saving_vs_current, 6),
    )


@dataclass(frozen=True)
class WhatIf:
    """GPUs and USD/hour for demand x multiplier: packed by the planner, the current placement
    scaled alike, and one model per GPU."""

    multiplier: float
    packed_gpus: int
    packed_usd_per_hour: float
    naive_gpus: int
    naive_usd_per_hour: float
    unplaced: int
    current_usd_per_hour: float = 0.0


def _elastic_fleet(gpus: Sequence[GpuSnapshot], n: int) -> tuple[GpuSnapshot, ...]:
    """``gpus`` plus, per kind (type, pricing class, price), enough extra GPUs to have ``n``."""
    kinds = sorted({(g.gpu_type, g.pricing_class, g.usd_per_hour) for g in gpus})
    have = Counter((g.gpu_type, g.pricing_class, g.usd_per_hour) for g in gpus)
    out = list(gpus)
    for t, c, usd in kinds:
        for i in range(max(0, n - have[(t, c, usd)])):
            node = f"whatif-{t}-{c}-{i // NODE_GPUS}"
            out.append(GpuSnapshot(f"{node}/{i % NODE_GPUS}", node, i % NODE_GPUS, t, c, usd))
    return tuple(out)


def what_if(
    demand: Snapshot, multipliers: Sequence[float] = (1, 3, 5, 10), policy: Policy | None = None
) -> list[WhatIf]:
    """Scale every model's replicas by each multiplier and plan it with the same planner,
    policy and demand basis as the plan panel (pure).

    Details: at 1x this is ``plan(demand, policy)`` itself (same fleet, same current
    placement). Above 1x the fleet is the snapshot's GPUs plus GPUs of the same kinds (type,
    pricing class, price) until each kind could hold one replica per GPU; the current
    placement is scaled by the multiplier (its USD/hour x m) and the plan starts from none.
    """
    base = plan(demand, policy)
    out = []
    for m in multipliers:
        p = base
        if m != 1:
            workloads = tuple(
                replace(w, replicas=max(1, round(w.replicas * m))) for w in demand.workloads
            )
            need = sum(w.replicas * w.gpus for w in workloads)
            snap = Snapshot(_elastic_fleet(demand.gpus, need), workloads, demand.nodes)
            p = plan(snap, policy)
        out.append(
            WhatIf(
                m,
                p.gpus_used,
                p.usd_per_hour,
                p.one_per_gpu.gpus,
                p.one_per_gpu.usd_per_hour,
                len(p.unplaced),
                round(base.current_usd_per_hour * m, 6),
            )
        )
    return out
