"""The planner's working state: which replica sits on which GPU, with indexes for candidates.

Mutable and private to ``scheduler.planner``; plugins only ever see frozen ``GpuUse`` views.
Details: free GPUs are grouped by (type, pricing class, price, node sharing, eighth of the node's
CPU/memory left, the node's free host per free GPU in quarters of the demand's host per GPU) and
one representative per group is offered (equivalent GPUs score alike;
the first few of a group are checked for the replica's CPU and memory), open MPS/time-slice GPUs are
bucketed by the smaller of their free SM share and free memory (in 1/1000 of the GPU), so
that a replica is offered the tightest few that can hold both, not all of them (a GPU whose
memory is full sits in bucket 0 whatever its free SM share).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from scheduler.catalog import gpu_type
from scheduler.framework import GpuUse, Request
from scheduler.model import GpuSnapshot, Mode, NodeSharing, Snapshot, Workload
from scheduler.plugins.filters import NODE_SHARING
from scheduler.plugins.host_balance import HostPerGpu

BUCKET = 10  # milli per free-compute bucket
N_BUCKETS = 1000 // BUCKET + 1
SCAN = 16  # GPUs examined per bucket for an exact fit
HOST_LEVELS = 8  # free GPUs are grouped by how much of their node's CPU/memory is left
BALANCE_LEVELS = 8  # ... and by the host they have per free GPU (in quarters of the demand's)
FreeKey = tuple[str, str, float, NodeSharing | None, int, int, int]


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
        self.node_mps_replicas: dict[str, int] = defaultdict(int)
        self.node_open: dict[str, int] = defaultdict(int)
        self.node_free: dict[str, list[int]] = defaultdict(list)
        self.node_gpu_free: dict[str, int] = defaultdict(int)  # GPU milli not yet held
        self.free: dict[FreeKey, list[int]] = {}
        self.free_keys: dict[str, list[FreeKey]] = defaultdict(list)
        self.open_shared: dict[tuple[Mode, str, int], list[dict[int, None]]] = {}
        self.open_mig: dict[str, dict[int, None]] = defaultdict(dict)
        inf = float("inf")
        self.host_cap: dict[str, tuple[float, float]] = {
            n.name: (
                inf if n.cpu_milli is None else float(n.cpu_milli),
                inf if n.mem_mib is None else float(n.mem_mib),
            )
            for n in snapshot.nodes
        }
        self.host_used: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.per_gpu = HostPerGpu.of(snapshot)
        self.types = sorted({g.snap.gpu_type for g in self.gpus})
        self.node_gpus = Counter(g.snap.node for g in self.gpus)
        for g in self.gpus:
            self.node_free[g.snap.node].append(g.pos)
            self.node_gpu_free[g.snap.node] += 1000
        for g in self.gpus:
            self._push_free(g.pos)
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
        return (
            s.gpu_type,
            s.pricing_class,
            s.usd_per_hour,
            self.node_sharing[s.node],
            self._host_level(s.node),
            self.node_mps_replicas[s.node],
            self._balance_level(s.node),
        )

    def host_free(self, node: str) -> tuple[float, float]:
        """(CPU milli, memory MiB) of the node's allocatable not yet requested (inf: unknown)."""
        cap = self.host_cap.get(node)
        if cap is None:
            return (float("inf"), float("inf"))
        used = self.host_used[node]
        return (cap[0] - used[0], cap[1] - used[1])

    def _host_level(self, node: str) -> int:
        cap = self.host_cap.get(node)
        if cap is None:
            return HOST_LEVELS - 1
        cpu, mem = self.host_free(node)
        frac = min(
            cpu / cap[0] if 0 < cap[0] < math.inf else 1.0,
            mem / cap[1] if 0 < cap[1] < math.inf else 1.0,
        )
        return max(0, min(HOST_LEVELS - 1, int(frac * HOST_LEVELS)))

    def _node_levels(self, node: str) -> tuple[int, int]:
        return (self._host_level(node), self._balance_level(node))

    def _balance_level(self, node: str) -> int:
        free = self.node_gpu_free[node] / 1000
        if free <= 0:
            return 0
        cpu, mem = self.host_free(node)
        ratio = self.per_gpu.servable(cpu, mem) / free
        return BALANCE_LEVELS if ratio == math.inf else max(0, min(BALANCE_LEVELS, int(ratio * 4)))

    def host_fits(self, node: str, w: Workload) -> bool:
        """Whether the node's CPU and memory left take one replica of ``w`` (one GPU's part)."""
        cpu, mem = self.host_free(node)
        k = max(1, w.gpus)
        return w.cpu_milli / k <= cpu + 1e-9 and w.host_mem_mib / k <= mem + 1e-9

    def view(self, pos: int) -> GpuUse:
        """A frozen view of one GPU for the plugins (cached until the GPU or node changes)."""
        cached = self._views.get(pos)
        g = self.gpus[pos]
        cpu, mem = self.host_free(g.snap.node)
        if (
            cached is not None
            and cached.node_sharing == self.node_sharing[cached.node]
            and cached.node_mps_replicas == self.node_mps_replicas[cached.node]
            and cached.node_cpu_free == cpu
            and cached.node_mem_free_mib == mem
            and cached.node_gpu_free_milli == self.node_gpu_free[cached.node]
        ):
            return cached
        view = GpuUse(
            pos=pos,
            uuid=g.snap.uuid,
            node=g.snap.node,
            gpu_type=g.snap.gpu_type,
            usd_per_hour=g.snap.usd_per_hour,
            mem_capacity_mib=g.mem_capacity,
            mode=g.mode,
            node_sharing=self.node_sharing[g.snap.node],
            node_mps_replicas=self.node_mps_replicas[g.snap.node],
            compute_used=g.compute_used,
            mem_used_mib=g.mem_used,
            clients=len(g.members),
            profiles=tuple(m.req.profile for m in g.members if m.req.profile),
            models=frozenset(m.w.model for m in g.members),
            current_models=g.current_models,
            node_cpu_free=cpu,
            node_mem_free_mib=mem,
            node_gpu_free_milli=self.node_gpu_free[g.snap.node],
            node_gpu_milli=1000 * self.node_gpus[g.snap.node],
        )
        self._views[pos] = view
        return view

    # -- candidates -------------------------------------------------------------------------

    def free_representatives(
        self, type_name: str, need: NodeSharing, w: Workload | None = None
    ) -> list[int]:
        """One free GPU of ``type_name`` per equivalence group whose node admits ``need``
        (and, given ``w``, the lowest of the group's first few whose node has its CPU/memory)."""
        out = []
        for key in self.free_keys[type_name]:
            if key[3] not in (None, need):
                continue
            heap = self.free[key]
            while heap and not self._valid_free(heap[0], key):
                heapq.heappop(heap)
            if not heap:
                continue
            if w is None or self.host_fits(self.gpus[heap[0]].snap.node, w):
                out.append(heap[0])
                continue
            fits = [
                p
                for p in heap[:SCAN]
                if self._valid_free(p, key) and self.host_fits(self.gpus[p].snap.node, w)
            ]
            if fits:
                out.append(min(fits))
        # Configured nodes first: on equal scores the planner keeps the earlier candidate.
        out.sort(key=lambda p: (self.node_sharing[self.gpus[p].snap.node] is None, p))
        return out

    def _valid_free(self, pos: int, key: FreeKey) -> bool:
        g = self.gpus[pos]
        return g.mode is None and self._free_key(g) == key

    def open_candidates(self, req: Request, type_name: str, w: Workload | None = None) -> list[int]:
        """Open GPUs of this type and mode that may take ``req`` (tightest buckets first;
        given ``w``, only on nodes with its CPU and memory left)."""
        if req.mode is Mode.mig:
            return list(self.open_mig[type_name])
        buckets = self.open_shared.get((req.mode, type_name, req.replicas))
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
                    and (w is None or self.host_fits(g.snap.node, w))
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
            key = (g.mode, g.snap.gpu_type, self._replicas(g))
            self.open_shared[key][self._bucket(g)].pop(g.pos, None)
        elif g.mode is Mode.mig:
            self.open_mig[g.snap.gpu_type].pop(g.pos, None)

    def _index(self, g: GpuState) -> None:
        if g.mode in (Mode.mps, Mode.timeslice):
            key = (g.mode, g.snap.gpu_type, self._replicas(g))
            buckets = self.open_shared.setdefault(key, [{} for _ in range(N_BUCKETS)])
            buckets[self._bucket(g)][g.pos] = None
        elif g.mode is Mode.mig:
            self.open_mig[g.snap.gpu_type][g.pos] = None

    def _replicas(self, g: GpuState) -> int:
        return g.members[0].req.replicas if g.members else 0

    def add(self, pos: int, w: Workload, replica: int, req: Request) -> None:
        """Place a replica (the caller has run the filters)."""
        g = self.gpus[pos]
        node = g.snap.node
        levels = self._node_levels(node)
        self._charge_host(node, w, 1.0)
        self.node_gpu_free[node] -= req.compute_milli
        if g.mode is None:
            self.node_free[node].remove(pos)
            self.node_open[node] += 1
            if self.node_sharing[node] is None:
                self.node_sharing[node] = NODE_SHARING[req.mode]
                self.node_mps_replicas[node] = req.replicas
                for p in self.node_free[node]:
                    self._push_free(p)
        self._unindex(g)
        g.mode = req.mode
        g.compute_used += req.compute_milli
        g.mem_used += req.mem_mib
        g.members.append(Member(w, replica, req))
        self._index(g)
        if self._node_levels(node) != levels:
            for p in self.node_free[node]:
                self._push_free(p)

    def remove(self, pos: int, member: Member) -> None:
        """Take a replica off a GPU; an emptied GPU (and node) becomes free again."""
        g = self.gpus[pos]
        levels = self._node_levels(g.snap.node)
        self._charge_host(g.snap.node, member.w, -1.0)
        self.node_gpu_free[g.snap.node] += member.req.compute_milli
        self._unindex(g)
        g.members.remove(member)
        g.compute_used -= member.req.compute_milli
        g.mem_used -= member.req.mem_mib
        if self._node_levels(g.snap.node) != levels:
            for p in self.node_free[g.snap.node]:
                self._push_free(p)
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
            self.node_mps_replicas[node] = 0
            for p in self.node_free[node]:
                self._push_free(p)
        else:
            self._push_free(pos)

    def _charge_host(self, node: str, w: Workload, sign: float) -> None:
        """Book (sign 1) or release (-1) one GPU's part of a replica's CPU and memory."""
        if node not in self.host_cap or (w.cpu_milli == 0 and w.host_mem_mib == 0):
            return
        k = max(1, w.gpus)
        used = self.host_used[node]
        used[0] += sign * w.cpu_milli / k
        used[1] += sign * w.host_mem_mib / k

    def open_gpus(self) -> list[GpuState]:
        """GPUs holding at least one replica, in fleet order."""
        return [g for g in self.gpus if g.members]
