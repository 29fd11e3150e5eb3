"""Build the planner's frozen Snapshot from a fleet (simulated or sampled) and a price book."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import pandas as pd

from scheduler.model import GpuSnapshot, NodeSnapshot, Slot, Snapshot, Workload
from scheduler.simfleet import SimFleet

PriceMap = Mapping[tuple[str, str], float]


def price_map(prices: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(gpu_type, pricing_class) -> USD/hour from billing's price frame (PRICE_COLUMNS)."""
    rows = zip(prices["gpu_type"], prices["pricing_class"], prices["usd_per_hour"], strict=True)
    return {(str(t), str(c)): float(u) for t, c, u in rows}


def fleet_gpus(fleet: SimFleet, prices: PriceMap) -> tuple[GpuSnapshot, ...]:
    """The simulated GPUs as planner snapshots (current MIG layout included).

    Raises: KeyError when a GPU's type and pricing class have no price.
    """
    out = []
    for g in fleet.gpus:
        layout = tuple(sorted((i.key, i.start) for i in g.instances)) if g.mig_enabled else None
        out.append(
            GpuSnapshot(
                g.uuid,
                g.node,
                g.index,
                g.type.name,
                g.pricing_class,
                prices[(g.type.name, g.pricing_class)],
                layout,
            )
        )
    return tuple(out)


def make_snapshot(
    gpus: Sequence[GpuSnapshot],
    workloads: Iterable[Workload],
    current: Iterable[Slot] = (),
    taken_at: datetime | None = None,
    nodes: Iterable[NodeSnapshot] = (),
) -> Snapshot:
    """A Snapshot (``nodes``: allocatable CPU / memory where known)."""
    return Snapshot(tuple(gpus), tuple(workloads), tuple(nodes), tuple(current), taken_at)


def gpus_from_samples(samples: pd.DataFrame, prices: PriceMap) -> tuple[GpuSnapshot, ...]:
    """GPU snapshots from recent gpu_sample rows (latest reading per GPU; MIG from children).

    ``samples`` columns: ts, node, gpu_uuid, parent_uuid, gpu_index, gpu_type, pricing_class,
    mig_profile. Positions of MIG instances are recomputed (mig-parted chooses its own).
    """
    from scheduler import mig
    from scheduler.catalog import gpu_type

    if samples.empty:
        return ()
    latest = samples.sort_values("ts").groupby("gpu_uuid", sort=False).tail(1)
    phys = latest[latest["parent_uuid"].isna()].sort_values(["node", "gpu_index"])
    children = latest[latest["parent_uuid"].notna()]
    out = []
    for r in phys.itertuples(index=False):
        profiles = children[children["parent_uuid"] == r.gpu_uuid]["mig_profile"].dropna()
        layout = None
        family = gpu_type(str(r.gpu_type)).mig_family
        if len(profiles) and family:
            keys = [mig.key_of(str(r.gpu_type), str(p)) for p in profiles]
            layout = mig.place(family, keys)
        usd = prices.get((str(r.gpu_type), str(r.pricing_class)), 0.0)
        out.append(
            GpuSnapshot(
                str(r.gpu_uuid),
                str(r.node),
                int(str(r.gpu_index)),
                str(r.gpu_type),
                str(r.pricing_class),
                usd,
                layout,
            )
        )
    return tuple(out)
