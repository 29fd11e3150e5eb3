"""``plan(snapshot, policy) -> Plan``: pure packing of model replicas onto a GPU fleet.

Order: gangs (several whole GPUs on one node) first, then replicas by decreasing size. Each
replica is offered candidate GPUs (open ones that may take it, one free GPU per equivalence
group) under every mode its strategy admits; the filters reject, the scorers rank, the best
wins. Then an improvement pass tries to empty the emptiest GPUs into the others.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from scheduler.framework import Framework, Request, ScorePlugin
from scheduler.model import (
    Insufficient,
    Isolation,
    Mode,
    NodeSharing,
    Plan,
    Snapshot,
    Unplaced,
    Workload,
)
from scheduler.plan_result import build_plan, keep_current
from scheduler.plugins.efficiency import EfficiencyScore
from scheduler.plugins.filters import NODE_SHARING, FitFilter, GpuTypeFilter, NodeSharingFilter
from scheduler.plugins.host_balance import HostBalanceScore
from scheduler.plugins.isolation_match import IsolationMatchScore
from scheduler.plugins.most_allocated import MostAllocatedScore
from scheduler.plugins.node_pack import NodePackScore
from scheduler.plugins.price import PriceScore
from scheduler.plugins.stability import StabilityScore
from scheduler.policy import Policy
from scheduler.state import GpuState, Member, PackState
from scheduler.strategies import (
    EqualMpsShare,
    Strategy,
    equal_mps_replicas,
    equal_mps_request,
    strategy_table,
)

MAX_REASONS = 20


def make_framework(snapshot: Snapshot, policy: Policy) -> Framework:
    """The configured plugins. Raises: ValueError for an unknown plugin name in the weights."""
    max_usd = max((g.usd_per_hour for g in snapshot.gpus), default=0.0)
    scorers: dict[str, ScorePlugin] = {
        p.name: p
        for p in (
            PriceScore(max_usd),
            MostAllocatedScore(),
            EfficiencyScore(),
            IsolationMatchScore(),
            StabilityScore(),
            HostBalanceScore(),
            NodePackScore(),
        )
    }
    unknown = [n for n, _ in policy.weights if n not in scorers]
    if unknown:
        raise ValueError(f"unknown score plugin(s) {unknown}; known: {sorted(scorers)}")
    filters = (
        GpuTypeFilter(),
        NodeSharingFilter(),
        FitFilter(policy.max_mps_clients, policy.max_timeslice_replicas),
    )
    return Framework(filters, [(scorers[n], w) for n, w in policy.weights])


STRICTNESS = {Isolation.strict: 0, Isolation.shared: 1, Isolation.best_effort: 2}


def replica_order(w: Workload) -> tuple[int, int, int, float, float, str]:
    """Sort key, most constrained first: gangs, then GPU-type restrictions (fewest allowed
    types), then the strictest isolation class, then decreasing compute and memory
    (first-fit-decreasing order)."""
    types = len(w.gpu_types) or 1_000
    return (-w.gpus, types, STRICTNESS[w.isolation], -w.compute, -w.mem_mib, w.model)


@dataclass
class _Packer:
    state: PackState
    fw: Framework
    table: dict[Mode, Strategy]
    resplits_left: int = 64  # unplaced replicas that may try a resplit (bounds plan time)
    _requests: dict[Workload, list[tuple[str, Request]]] = field(default_factory=dict)

    def requests(self, w: Workload) -> list[tuple[str, Request]]:
        cached = self._requests.get(w)
        if cached is not None:
            return cached
        out: list[tuple[str, Request]] = []
        for type_name in self.state.types:
            if not w.allows(type_name):
                continue
            for strategy in self.table.values():
                many = getattr(strategy, "requests", None)
                reqs = many(w, type_name) if many else [strategy.request(w, type_name)]
                out.extend((type_name, r) for r in reqs if r is not None)
        self._requests[w] = out
        return out

    def place(self, w: Workload, replica: int, *, open_only: bool = False) -> Unplaced | None:
        """Put one replica on the best GPU; Unplaced with the reasons when none fits."""
        reasons: list[tuple[str, Insufficient]] = []
        reqs = self.requests(w)
        if not reqs:
            why = Insufficient("mode", "no admitted mode on any GPU type in the fleet")
            return Unplaced(w.model, replica, (("*", why),))
        best: tuple[int, int, Request] | None = None
        for type_name, req in reqs:
            cands = self.state.open_candidates(req, type_name, w)
            if not open_only:
                cands += self.state.free_representatives(type_name, NODE_SHARING[req.mode], w)
            for pos in cands:
                view = self.state.view(pos)
                bad = self.fw.run_filters(w, req, view)
                if bad:
                    if len(reasons) < MAX_REASONS:
                        reasons.extend((view.uuid, r) for r in bad)
                    continue
                score = self.fw.run_scores(w, req, view)
                if best is None or score > best[0]:
                    best = (score, pos, req)
        if best is None:
            if not reasons:
                reasons.append(("*", Insufficient("gpu", "no free or open GPU can take it")))
            return Unplaced(w.model, replica, tuple(reasons[:MAX_REASONS]))
        self.state.add(best[1], w, replica, best[2])
        return None

    def place_gang(self, w: Workload, replica: int) -> Unplaced | None:
        """``w.gpus`` whole GPUs of one node: the allowed node with the fewest free GPUs."""
        nodes: list[tuple[int, str, list[int]]] = []
        for node in self.state.gang_nodes(w.gpus):
            cpu, mem = self.state.host_free(node)
            if w.cpu_milli > cpu + 1e-9 or w.host_mem_mib > mem + 1e-9:
                continue
            free = self.state.node_free[node]
            if w.gpu_types:
                free = [p for p in free if w.allows(self.state.gpus[p].snap.gpu_type)]
            if len(free) >= w.gpus:
                nodes.append((len(free), node, free[: w.gpus]))
        if not nodes:
            why = Insufficient("gpus", "no node has enough free GPUs", w.gpus, 0, 0)
            return Unplaced(w.model, replica, (("*", why),))
        fewest = min(n[0] for n in nodes)
        gpus = self.state.gpus
        _, _, picked = min(
            (n for n in nodes if n[0] == fewest),
            key=lambda n: (sum(gpus[p].snap.usd_per_hour for p in n[2]), n[1]),
        )
        for p in picked:
            mem = float(math.ceil(w.mem_mib / w.gpus))
            self.state.add(p, w, replica, Request(Mode.gpu, 1000, mem, 1.0))
        return None

    def resplit(self, w: Workload, replica: int) -> bool:
        """Place an unplaced replica by splitting an MPS node into fewer, larger equal shares
        (every replica already there must fit the larger share); False if no node can."""
        mps = self.table.get(Mode.mps)
        if not isinstance(mps, EqualMpsShare) or self.resplits_left <= 0:
            return False
        self.resplits_left -= 1
        max_r = mps.max_replicas
        st = self.state
        for node, r in sorted(st.node_mps_replicas.items()):
            if not r or st.node_sharing[node] is not NodeSharing.mps:
                continue
            gpus = [g for g in st.gpus if g.snap.node == node and g.members]
            types = {g.snap.gpu_type for g in gpus}
            fits = min((equal_mps_replicas(w, t, max_r) for t in types if w.allows(t)), default=0)
            for new in range(min(r - 1, fits), 1, -1):
                ok = all(
                    len(g.members) <= new
                    and all(
                        equal_mps_replicas(m.w, g.snap.gpu_type, max_r) >= new for m in g.members
                    )
                    for g in gpus
                )
                if not ok:
                    continue
                self._reshare(gpus, new)
                if self.place(w, replica) is None:
                    return True
                self._reshare(gpus, r)
        return False

    def _reshare(self, gpus: list[GpuState], replicas: int) -> None:
        moved = [(g, list(g.members)) for g in gpus]
        for g, members in moved:
            for m in members:
                self.state.remove(g.pos, m)
        for g, members in moved:
            for m in members:
                req = equal_mps_request(g.snap.gpu_type, replicas)
                self.state.add(g.pos, m.w, m.replica, req)

    def improve(self, rounds: int) -> None:
        """Try to empty the emptiest GPUs by moving their replicas onto other open GPUs."""
        for _ in range(rounds):
            changed = False
            for g in sorted(self.state.open_gpus(), key=lambda g: g.compute_used):
                if g.mode in (None, Mode.gpu) or not g.members:
                    continue
                if self._evacuate(g.pos):
                    changed = True
            if not changed:
                return

    def _evacuate(self, pos: int) -> bool:
        g = self.state.gpus[pos]
        moving = list(g.members)
        for m in moving:
            self.state.remove(pos, m)
        moved: list[tuple[int, Member]] = []
        for m in moving:
            found = self._best_open(m, exclude=pos)
            if found is None:
                for p, mm in moved:
                    self.state.remove(p, mm)
                for mm in moving:
                    self.state.add(pos, mm.w, mm.replica, mm.req)
                return False
            target, req = found
            self.state.add(target, m.w, m.replica, req)
            moved.append((target, self.state.gpus[target].members[-1]))
        return True

    def _best_open(self, m: Member, exclude: int) -> tuple[int, Request] | None:
        best: tuple[int, int, Request] | None = None
        for type_name, req in self.requests(m.w):
            for pos in self.state.open_candidates(req, type_name, m.w):
                if pos == exclude:
                    continue
                view = self.state.view(pos)
                if self.fw.run_filters(m.w, req, view):
                    continue
                score = self.fw.run_scores(m.w, req, view)
                if best is None or score > best[0]:
                    best = (score, pos, req)
        return None if best is None else (best[1], best[2])


def plan(snapshot: Snapshot, policy: Policy | None = None) -> Plan:
    """Pack every replica of ``snapshot.workloads`` onto ``snapshot.gpus``.

    When the current placement covers the demand and the repack would not be cheaper, the
    current placement is returned unchanged (zero moves).
    Returns: a Plan with slots, per-GPU and per-node configs, unplaced replicas with reasons,
    its cost, a lower bound, the one-replica-per-GPU baseline and the moves from
    ``snapshot.current``. Pure: no clock, no I/O; same snapshot and policy, same plan.
    Raises: ValueError for an unknown mode or score plugin in ``policy``.
    """
    policy = policy or Policy()
    packer = _Packer(
        PackState(snapshot),
        make_framework(snapshot, policy),
        strategy_table(policy.modes, policy.mps_shares, policy.max_mps_clients),
    )
    unplaced: list[Unplaced] = []
    replicas = [(w, r) for w in snapshot.workloads for r in range(w.replicas)]
    replicas.sort(key=lambda wr: (replica_order(wr[0]), wr[1]))
    for w, r in replicas:
        miss = packer.place_gang(w, r) if w.gpus > 1 else packer.place(w, r)
        if miss is not None and not (w.gpus == 1 and packer.resplit(w, r)):
            unplaced.append(miss)
    if policy.improve:
        packer.improve(policy.improve_rounds)
    new = build_plan(snapshot, packer.state, tuple(unplaced))
    kept = keep_current(snapshot)
    if kept is not None and (new.unplaced or new.usd_per_hour >= kept.usd_per_hour - 1e-9):
        return kept  # a repack that saves nothing is not worth its moves
    return new


def mode_counts(p: Plan) -> Counter[str]:
    """How many replicas each mode holds (for reports)."""
    return Counter(s.mode.value for s in p.slots)


__all__ = ["NodeSharing", "Policy", "make_framework", "mode_counts", "plan"]
