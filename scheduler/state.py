"""The planner's working state: which replica sits on which GPU, with indexes for candidates.

Mutable and private to ``scheduler.planner``; plugins only ever see frozen ``GpuUse`` views.
Details: free GPUs are grouped by (type, pricing class, price, node sharing) and one
representative per group is offered (equivalent GPUs score alike), open MPS/time-slice GPUs are
bucketed by the smaller of their free SM share and free memory (in 1/1000 of the GPU), so
that a replica is offered the tightest few that can hold both, not all of them (a GPU whose
memory is full sits in bucket 0 whatever its free SM share).
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from dataclasses import dataclass, field

from scheduler.catalog import gpu_type
from scheduler.framework import GpuUse, Request
from scheduler.model import GpuSnapshot, Mode, NodeSharing, Snapshot, Workload
from scheduler.plugins.filters import NODE_SHARING

BUCKET = 10  # milli per free-compute bucket
N_BUCKETS = 1000 // BUCKET + 1
SCAN = 16  # GPUs examined per bucket for an exact fit
FreeKey = tuple[str, str, float, NodeSharing | None]


@dataclass
class Member:
    """One replica placed on a GPU."""

    w: Workload
    replica: int
    req: Request


@dataclass
class GpuState:
    """What one GPU holds during packing."""

    snap: GpuSnapshot
    pos: int
    mem_capacity: float
    current_models: frozenset[str]
    mode: Mode | None = None
    compute_used: int = 0
    mem_used: float = 0.0
    members: list[Member] = field(default_factory=list)


class PackState:
    """GPUs, node sharing and the candidate indexes."""

    def __init__(self, snapshot: Snapshot, max_open: int = 3, per_bucket: int = 2) -> None:
        """Every GPU starts empty; ``snapshot.current`` only feeds the stability score.

        ``max_open``: open GPUs offered per (mode, type), from the tightest buckets of free
        SM share, at most ``per_bucket`` from one bucket.
        """
        self.max_open, self.per_bucket = max_open, per_bucket
        current: dict[str, set[str]] = defaultdict(set)
        for s in snapshot.current:
            current[s.gpu_uuid].add(s.model)
        self.gpus = [
            GpuState(g, i, float(gpu_type(g.gpu_type).memory_mib), frozenset(current[g.uuid]))
            for i, g in enumerate(snapshot.gpus)
        ]
        self.node_sharing: dict[str, NodeSharing | None] = {g.node: None for g in snapshot.gpus}
        self.node_open: dict[str, int] = defaultdict(int)
        self.node_free: dict[str, list[int]] = defaultdict(list)
        self.free: dict[FreeKey, list[int]] = {}
        self.free_keys: dict[str, list[FreeKey]] = defaultdict(list)
        self.open_shared: dict[tuple[Mode, str], list[dict[int, None]]] = {}
        self.open_mig: dict[str, dict[int, None]] = defaultdict(dict)
        for g in self.gpus:
            self.node_free[g.snap.node].append(g.pos)
            self._push_free(g.pos)
        self.types = sorted({g.snap.gpu_type for g in self.gpus})
        self._views: dict[int, GpuUse] = {}

    def _push_free(self, pos: int) -> None:
        key = self._free_key(self.gpus[pos])
        heap = self.free.get(key)
        if heap is None:
            heap = self.free[key] = []
            self.free_keys[key[0]].append(key)
        heapq.heappush(heap, pos)

    def _free_key(self, g: GpuState) -> FreeKey:
        s = g.snap
        return (s.gpu_type, s.pricing_class, s.usd_per_hour, self.node_sharing[s.node])

    def view(self, pos: int) -> GpuUse:
        """A frozen view of one GPU for the plugins (cached until the GPU or node changes)."""
        cached = self._views.get(pos)
        if cached is not None and cached.node_sharing == self.node_sharing[cached.node]:
            return cached
        g = self.gpus[pos]
        view = GpuUse(
            pos=pos,
            uuid=g.snap.uuid,
            node=g.snap.node,
            gpu_type=g.snap.gpu_type,
            usd_per_hour=g.snap.usd_per_hour,
            mem_capacity_mib=g.mem_capacity,
            mode=g.mode,
            node_sharing=self.node_sharing[g.snap.node],
            compute_used=g.compute_used,
            mem_used_mib=g.mem_used,
            clients=len(g.members),
            profiles=tuple(m.req.profile for m in g.members if m.req.profile),
            models=frozenset(m.w.model for m in g.members),
            current_models=g.current_models,
        )
        self._views[pos] = view
        return view

    # -- candidates -------------------------------------------------------------------------

    def free_representatives(self, type_name: str, need: NodeSharing) -> list[int]:
        """One free GPU of ``type_name`` per equivalence group whose node admits ``need``."""
        out = []
        for key in self.free_keys[type_name]:
            if key[3] not in (None, need):
                continue
            heap = self.free[key]
            while heap and not self._valid_free(heap[0], key):
                heapq.heappop(heap)
            if heap:
                out.append(heap[0])
        # Configured nodes first: on equal scores the planner keeps the earlier candidate.
        out.sort(key=lambda p: (self.node_sharing[self.gpus[p].snap.node] is None, p))
        return out

    def _valid_free(self, pos: int, key: FreeKey) -> bool:
        g = self.gpus[pos]
        return g.mode is None and self._free_key(g) == key

    def open_candidates(self, req: Request, type_name: str) -> list[int]:
        """Open GPUs of this type and mode that may take ``req`` (tightest buckets first)."""
        if req.mode is Mode.mig:
            return list(self.open_mig[type_name])
        buckets = self.open_shared.get((req.mode, type_name))
        if buckets is None:
            return []
        out: list[int] = []
        need_mem = req.mem_mib
        first = min(req.compute_milli, self._mem_milli(need_mem, type_name)) // BUCKET
        for b in range(first, N_BUCKETS):
            bucket = buckets[b]
            taken = 0
            for pos in itertools.islice(bucket, SCAN):
                g = self.gpus[pos]
                if (
                    g.compute_used + req.compute_milli <= 1000
                    and g.mem_used + need_mem <= g.mem_capacity
                ):
                    out.append(pos)
                    taken += 1
                    if taken >= self.per_bucket:
                        break
            if len(out) >= self.max_open:
                break
        return out

    def _mem_milli(self, mem_mib: float, type_name: str) -> int:
        return int(mem_mib * 1000 // gpu_type(type_name).memory_mib)

    def _bucket(self, g: GpuState) -> int:
        free_mem = int((g.mem_capacity - g.mem_used) * 1000 // g.mem_capacity)
        return max(0, min(1000 - g.compute_used, free_mem)) // BUCKET

    def gang_nodes(self, k: int) -> list[str]:
        """Nodes with at least ``k`` free GPUs whose sharing admits whole GPUs."""
        return [
            n
            for n, free in self.node_free.items()
            if len(free) >= k and self.node_sharing[n] in (None, NodeSharing.none)
        ]

    # -- mutations --------------------------------------------------------------------------

    def _unindex(self, g: GpuState) -> None:
        self._views.pop(g.pos, None)
        if g.mode in (Mode.mps, Mode.timeslice):
            self.open_shared[(g.mode, g.snap.gpu_type)][self._bucket(g)].pop(g.pos, None)
        elif g.mode is Mode.mig:
            self.open_mig[g.snap.gpu_type].pop(g.pos, None)

    def _index(self, g: GpuState) -> None:
        if g.mode in (Mode.mps, Mode.timeslice):
            key = (g.mode, g.snap.gpu_type)
            buckets = self.open_shared.setdefault(key, [{} for _ in range(N_BUCKETS)])
            buckets[self._bucket(g)][g.pos] = None
        elif g.mode is Mode.mig:
            self.open_mig[g.snap.gpu_type][g.pos] = None

    def add(self, pos: int, w: Workload, replica: int, req: Request) -> None:
        """Place a replica (the caller has run the filters)."""
        g = self.gpus[pos]
        node = g.snap.node
        if g.mode is None:
            self.node_free[node].remove(pos)
            self.node_open[node] += 1
            if self.node_sharing[node] is None:
                self.node_sharing[node] = NODE_SHARING[req.mode]
                for p in self.node_free[node]:
                    self._push_free(p)
        self._unindex(g)
        g.mode = req.mode
        g.compute_used += req.compute_milli
        g.mem_used += req.mem_mib
        g.members.append(Member(w, replica, req))
        self._index(g)

    def remove(self, pos: int, member: Member) -> None:
        """Take a replica off a GPU; an emptied GPU (and node) becomes free again."""
        g = self.gpus[pos]
        self._unindex(g)
        g.members.remove(member)
        g.compute_used -= member.req.compute_milli
        g.mem_used -= member.req.mem_mib
        if g.members:
            self._index(g)
            return
        g.mode, g.compute_used, g.mem_used = None, 0, 0.0
        node = g.snap.node
        self.node_free[node].append(pos)
        self.node_free[node].sort()
        self.node_open[node] -= 1
        if self.node_open[node] == 0:
            self.node_sharing[node] = None
            for p in self.node_free[node]:
                self._push_free(p)
        else:
            self._push_free(pos)

    def open_gpus(self) -> list[GpuState]:
        """GPUs holding at least one replica, in fleet order."""
        return [g for g in self.gpus if g.members]
