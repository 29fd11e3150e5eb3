"""Turn the packing state into a frozen Plan: slots, GPU and node configs, cost, bounds, diff."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable

from scheduler import mig
from scheduler.bounds import lower_bound, one_per_gpu
from scheduler.catalog import gpu_type
from scheduler.framework import Request
from scheduler.model import (
    GpuPlan,
    Move,
    NodePlan,
    NodeSharing,
    Plan,
    Slot,
    Snapshot,
    Unplaced,
)
from scheduler.model import Mode as M
from scheduler.state import GpuState, PackState

ALL_DISABLED = "all-disabled"


def mig_config_name(devices: Iterable[tuple[int, tuple[str, ...] | None]]) -> str:
    """A stable mig-parted config key for per-device layouts (None: MIG disabled).

    Details: "all-disabled" when no device uses MIG, else "costctl-" + 10 hex of the SHA-1
    of the sorted (index, profiles) list, so equal layouts share one config.
    """
    # key sorts None (MIG off) before layouts, so equal indexes never compare None to a tuple
    items = sorted(devices, key=lambda d: (d[0], d[1] is not None, d[1] or ()))
    if all(p is None for _, p in items):
        return ALL_DISABLED
    digest = hashlib.sha1(repr(items).encode()).hexdigest()[:10]
    return f"costctl-{digest}"


def _thread_pct(req: Request) -> int:
    """MPS active thread %: the per-claim share, or under equal shares ceil(100/replicas) (the
    device plugin's 1/replicas is the limit; the env must not lower it)."""
    if req.replicas:
        return math.ceil(100 / req.replicas)
    return req.compute_milli // 10


def _gpu_slots(g: GpuState) -> tuple[list[Slot], GpuPlan]:
    s = g.snap
    mode = g.mode or M.gpu
    slots: list[Slot] = []
    layout: mig.Layout | None = None
    if mode is M.mig:
        family = gpu_type(s.gpu_type).mig_family or "a100"
        profiles = [m.req.profile for m in g.members if m.req.profile]
        layout = mig.place(family, profiles, s.mig_layout or ())
        free = list(layout)
        for m in g.members:
            key = m.req.profile or ""
            placement = next(p for p in free if p[0] == key)
            free.remove(placement)
            slots.append(
                Slot(
                    m.w.model,
                    m.replica,
                    s.node,
                    s.uuid,
                    M.mig,
                    m.req.share,
                    profile=mig.profile_name(s.gpu_type, key),
                    mig_start=placement[1],
                )
            )
    else:
        n = len(g.members)
        for m in g.members:
            share = m.req.share if mode is M.mps else 1.0 / n if mode is M.timeslice else 1.0
            slots.append(
                Slot(
                    m.w.model,
                    m.replica,
                    s.node,
                    s.uuid,
                    mode,
                    math.floor(share * 1e6) / 1e6 if m.req.replicas else round(share, 6),
                    thread_pct=_thread_pct(m.req) if mode is M.mps else None,
                    mem_limit_mib=math.ceil(m.req.mem_mib) if mode is M.mps else None,
                )
            )
    plan = GpuPlan(
        s.uuid,
        s.node,
        s.gpu_type,
        mode,
        s.usd_per_hour,
        layout,
        mps_clients=len(g.members) if mode is M.mps else 0,
        timeslice_replicas=len(g.members) if mode is M.timeslice else 0,
    )
    return slots, plan


def diff(current: Iterable[Slot], planned: Iterable[Slot]) -> tuple[Move, ...]:
    """Moves from the current placement to the plan: keep what matches, remove, then add.

    Details: slots match on (model, GPU, mode, profile); counts are compared as multisets,
    so replica numbering does not create moves.
    """

    def key(s: Slot) -> tuple[str, str, M, str | None]:
        return (s.model, s.gpu_uuid, s.mode, s.profile)

    cur, new = Counter(map(key, current)), Counter(map(key, planned))
    moves: list[Move] = []
    for label, counts in (("keep", cur & new), ("remove", cur - new), ("add", new - cur)):
        for (model, gpu, mode, profile), n in sorted(counts.items()):
            moves.extend([Move(label, model, gpu, mode, profile)] * n)
    return tuple(moves)


def build_plan(snapshot: Snapshot, state: PackState, unplaced: tuple[Unplaced, ...]) -> Plan:
    """The frozen Plan of a finished packing state."""
    slots: list[Slot] = []
    gpus: list[GpuPlan] = []
    for g in state.open_gpus():
        s, p = _gpu_slots(g)
        slots += s
        gpus.append(p)
    by_node: dict[str, list[GpuPlan]] = {}
    for p in gpus:
        by_node.setdefault(p.node, []).append(p)
    index = {g.uuid: g.index for g in snapshot.gpus}
    nodes = []
    for name, plans in by_node.items():
        devices = [
            (index[p.uuid], mig.multiset(p.mig_layout) if p.mig_layout else None) for p in plans
        ]
        sharing = state.node_sharing[name] or NodeSharing.none
        mps = state.node_mps_replicas[name] if sharing is NodeSharing.mps else 0
        nodes.append(NodePlan(name, sharing, mig_config_name(devices), mps))
    price = {g.uuid: g.usd_per_hour for g in snapshot.gpus}
    current_usd = sum(price.get(u, 0.0) for u in {s.gpu_uuid for s in snapshot.current})
    return Plan(
        slots=tuple(slots),
        gpus=tuple(gpus),
        nodes=tuple(nodes),
        unplaced=unplaced,
        usd_per_hour=round(sum(p.usd_per_hour for p in gpus), 6),
        lower_bound=lower_bound(snapshot),
        one_per_gpu=one_per_gpu(snapshot),
        current_usd_per_hour=round(current_usd, 6),
        moves=diff(snapshot.current, slots),
    )


def _covers(current: Iterable[Slot], snapshot: Snapshot) -> bool:
    """Whether the current placement runs every replica the demand asks for."""
    running = Counter(s.model for s in current if s.mode is not M.gpu)
    gpu_slots = Counter(s.model for s in current if s.mode is M.gpu)
    for w in snapshot.workloads:
        have = running[w.model] + gpu_slots[w.model] // max(1, w.gpus)
        if have < w.replicas:
            return False
    return True


def keep_current(snapshot: Snapshot) -> Plan | None:
    """The current placement as a plan (no moves), or None if it does not cover the demand."""
    if not snapshot.current or not _covers(snapshot.current, snapshot):
        return None
    by_uuid = {g.uuid: g for g in snapshot.gpus}
    if any(s.gpu_uuid not in by_uuid for s in snapshot.current):
        return None
    gpus: dict[str, GpuPlan] = {}
    sharing: dict[str, NodeSharing] = {}
    for s in snapshot.current:
        g = by_uuid[s.gpu_uuid]
        n = sum(1 for x in snapshot.current if x.gpu_uuid == s.gpu_uuid)
        layout = g.mig_layout if s.mode is M.mig else None
        gpus[g.uuid] = GpuPlan(
            g.uuid,
            g.node,
            g.gpu_type,
            s.mode,
            g.usd_per_hour,
            layout,
            mps_clients=n if s.mode is M.mps else 0,
            timeslice_replicas=n if s.mode is M.timeslice else 0,
        )
        if s.mode in (M.mps, M.timeslice):
            sharing[g.node] = NodeSharing(s.mode.value)
    index = {g.uuid: g.index for g in snapshot.gpus}
    nodes = []
    for name in dict.fromkeys(p.node for p in gpus.values()):
        devices = [
            (index[p.uuid], mig.multiset(p.mig_layout) if p.mig_layout else None)
            for p in gpus.values()
            if p.node == name
        ]
        nodes.append(NodePlan(name, sharing.get(name, NodeSharing.none), mig_config_name(devices)))
    usd = round(sum(p.usd_per_hour for p in gpus.values()), 6)
    return Plan(
        slots=snapshot.current,
        gpus=tuple(gpus.values()),
        nodes=tuple(nodes),
        unplaced=(),
        usd_per_hour=usd,
        lower_bound=lower_bound(snapshot),
        one_per_gpu=one_per_gpu(snapshot),
        current_usd_per_hour=usd,
        moves=diff(snapshot.current, snapshot.current),
    )
