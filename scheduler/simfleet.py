"""A simulated GPU fleet: nodes, GPUs, MIG instances and model processes, driven by load.

No GPU exists on our machines; tests and the demo run the real collector on this through
``scheduler.nvml_fake.FakeNvml`` (the pynvml functions the collector calls).

Drive it with ``fleet.set_load(model, busy_fraction)``: a process of that model keeps its
compute capacity (whole GPU 1.0, MIG slices/7 (A30 /4), MPS thread %/100, time-slice 1/n)
busy for that fraction of the time, plus a little seeded noise. Place models with
``fleet.place(...)`` or ``fleet.place_slot(plan_slot, mem_mib)``.
"""

from __future__ import annotations

import uuid as _uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from scheduler import mig
from scheduler.catalog import GpuType, gpu_type
from scheduler.model import Mode, Slot

IDLE_POWER_FRACTION = 0.2
# /proc/<pid>/cgroup of a pod's process, per container runtime and cgroup driver/version
CGROUP_STYLES = {
    "containerd-systemd-v2": "0::/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod{uid_}.slice/cri-containerd-{cid}.scope\n",
    "crio-systemd-v2": "0::/kubepods.slice/kubepods-besteffort.slice/"
    "kubepods-besteffort-pod{uid_}.slice/crio-{cid}.scope\n",
    "containerd-cgroupfs-v1": "12:memory:/kubepods/burstable/pod{uid}/{cid}\n"
    "11:devices:/kubepods/burstable/pod{uid}/{cid}\n1:name=systemd:/kubepods/burstable/"
    "pod{uid}/{cid}\n",
}
MPS_SERVER_CGROUP = "0::/system.slice/nvidia-mps-server.service\n"
TDP_W = {"A100-40GB": 400, "A100-80GB": 400, "H100-80GB": 700, "H200-141GB": 700, "A30": 165}


def _uuid_for(*parts: object) -> str:
    return str(_uuid.uuid5(_uuid.NAMESPACE_URL, "/".join(map(str, parts))))


@dataclass
class SimProcess:
    """A model's process: its pod, memory and the compute capacity it may keep busy."""

    pid: int
    model: str
    pod_uid: str
    namespace: str
    pod: str
    mem_mib: float
    capacity: float  # fraction of the whole physical GPU
    gi_id: int | None = None
    mode: Mode = Mode.gpu
    container: str = "server"


@dataclass
class SimInstance:
    """A MIG GPU instance (one compute instance spanning it)."""

    gi_id: int
    key: str
    start: int
    uuid: str


@dataclass
class SimGpu:
    """A physical GPU of the simulation."""

    node: str
    index: int
    uuid: str
    type: GpuType
    pricing_class: str
    mig_enabled: bool = False
    instances: list[SimInstance] = field(default_factory=list)
    processes: list[SimProcess] = field(default_factory=list)
    fault: int | None = None  # an NVML_ERROR_* every call on this GPU raises
    mps_server_pid: int | None = None  # the nvidia-cuda-mps-server once an MPS client runs
    energy_mj: float = 0.0
    busy_s: dict[int, float] = field(default_factory=dict)  # per GI: SM-busy seconds (GPM)
    last: float | None = None


@dataclass(frozen=True)
class NodeSpec:
    """A node of the fleet spec: ``gpus`` GPUs of one type, MIG layouts per GPU (None: off)."""

    name: str
    gpu_type: str
    gpus: int = 1
    pricing_class: str = "on-demand"
    mig: tuple[tuple[str, ...] | None, ...] = ()


class SimFleet:
    """The simulated GPUs, their processes and per-model load."""

    def __init__(self, gpus: list[SimGpu], clock: Callable[[], datetime], seed: int = 0) -> None:
        """Use ``build_fleet``."""
        self.gpus = gpus
        self.clock = clock
        self.load: dict[str, float] = {}
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.cgroups: dict[int, str] = {}
        self._next_pid = 4000

    # -- configuration ----------------------------------------------------------------------

    def set_load(self, model: str, busy_fraction: float) -> None:
        """Make every process of ``model`` busy for this fraction of its capacity (0..1)."""
        self.load[model] = min(1.0, max(0.0, float(busy_fraction)))

    def gpu(self, node: str, index: int) -> SimGpu:
        """The GPU ``index`` of ``node``. Raises: KeyError."""
        for g in self.gpus:
            if g.node == node and g.index == index:
                return g
        raise KeyError(f"no GPU {index} on node {node}")

    def set_mig(self, g: SimGpu, profiles: Sequence[str] | None, layout: mig.Layout = ()) -> None:
        """Enable MIG with these profiles (positions from ``layout`` or computed) or disable it.

        Raises: ValueError when processes still run on the GPU (reconfiguration needs it idle)
        or the GPU type has no MIG.
        """
        if g.processes:
            raise ValueError(f"GPU {g.uuid} is busy: MIG reconfiguration needs an idle GPU")
        family = g.type.mig_family
        if profiles is None:
            g.mig_enabled, g.instances = False, []
            return
        if family is None:
            raise ValueError(f"{g.type.name} has no MIG")
        placed = layout or mig.place(family, profiles)
        g.mig_enabled = True
        g.instances = [
            SimInstance(i + 1, key, start, "MIG-" + _uuid_for(g.uuid, key, start))
            for i, (key, start) in enumerate(placed)
        ]

    def fail(self, node: str, index: int, error: int | None) -> None:
        """Make every NVML call on this GPU raise ``error`` (e.g. NVML_ERROR_GPU_IS_LOST)."""
        self.gpu(node, index).fault = error

    def place(
        self,
        model: str,
        node: str,
        index: int,
        *,
        mem_mib: float,
        mode: Mode = Mode.gpu,
        profile: str | None = None,
        share: float = 1.0,
        namespace: str = "default",
        cgroup_style: str = "containerd-systemd-v2",
    ) -> SimProcess:
        """Start a process of ``model`` on a GPU, a free MIG instance of ``profile`` (family
        key or name), an MPS share or a time-slice replica; its /proc cgroup text has the
        ``cgroup_style`` of CGROUP_STYLES. Raises: ValueError if it cannot."""
        g = self.gpu(node, index)
        gi_id = None
        capacity = share
        if mode is Mode.mig:
            if not g.mig_enabled or profile is None:
                raise ValueError(f"GPU {g.uuid} is not in MIG mode")
            key = profile if "." not in profile else mig.key_of(g.type.name, profile)
            taken = {p.gi_id for p in g.processes}
            free = [i for i in g.instances if i.key == key and i.gi_id not in taken]
            if not free:
                raise ValueError(f"no free {profile} instance on {g.uuid}")
            gi_id = free[0].gi_id
            capacity = mig.price_fraction(g.type.mig_family or "a100", key)
        elif g.mig_enabled:
            raise ValueError(f"GPU {g.uuid} is in MIG mode: place on an instance")
        template = CGROUP_STYLES[cgroup_style]
        if mode is Mode.mps and g.mps_server_pid is None:
            g.mps_server_pid = self._pid()
            self.cgroups[g.mps_server_pid] = MPS_SERVER_CGROUP
        pid = self._pid()
        pod = f"{model}-{pid}"
        pod_uid = _uuid_for("pod", pod)
        self.cgroups[pid] = template.format(
            uid=pod_uid, uid_=pod_uid.replace("-", "_"), cid=f"{pid:064x}"
        )
        proc = SimProcess(pid, model, pod_uid, namespace, pod, mem_mib, capacity, gi_id, mode)
        g.processes.append(proc)
        return proc

    def _pid(self) -> int:
        self._next_pid += 1
        return self._next_pid

    def stop(self, pid: int) -> SimProcess:
        """End the process ``pid`` (its pod goes away). Raises: KeyError if none runs."""
        for g in self.gpus:
            for p in g.processes:
                if p.pid == pid:
                    g.processes.remove(p)
                    self.cgroups.pop(pid, None)
                    return p
        raise KeyError(f"no process {pid}")

    def place_slot(self, slot: Slot, mem_mib: float) -> SimProcess:
        """Start the process a plan slot describes (MIG instances must exist already)."""
        g = next(x for x in self.gpus if x.uuid == slot.gpu_uuid)
        return self.place(
            slot.model,
            g.node,
            g.index,
            mem_mib=mem_mib,
            mode=slot.mode,
            profile=slot.profile,
            share=slot.share,
        )

    def pods(self) -> dict[str, tuple[str, str, str]]:
        """pod UID -> (namespace, pod, model) of every process (what the kubelet would know)."""
        return {p.pod_uid: (p.namespace, p.pod, p.model) for g in self.gpus for p in g.processes}

    # -- what NVML reports ------------------------------------------------------------------

    def now_s(self) -> float:
        """The fleet clock in seconds since the epoch."""
        return self.clock().timestamp()

    def process_util(self, g: SimGpu, p: SimProcess) -> float:
        """% of the whole GPU the process keeps busy now (load x capacity, time-slices share)."""
        busy = self.load.get(p.model, 0.0) * p.capacity
        if p.mode is Mode.timeslice:
            slicing = [q for q in g.processes if q.mode is Mode.timeslice]
            busy = self.load.get(p.model, 0.0) / len(slicing)
        noise = float(self.rng.normal(0.0, 0.02)) * p.capacity if busy > 0 else 0.0
        return max(0.0, min(100.0, 100.0 * (busy + noise)))

    def gpu_util(self, g: SimGpu) -> float:
        """% of the GPU's SMs busy (sum over its processes)."""
        return min(100.0, sum(self.process_util(g, p) for p in g.processes))

    def power_w(self, g: SimGpu, util: float) -> float:
        """Board power: idle + (TDP - idle) x utilisation."""
        tdp = TDP_W.get(g.type.name, 300)
        return tdp * (IDLE_POWER_FRACTION + (1 - IDLE_POWER_FRACTION) * util / 100.0)

    def advance(self, g: SimGpu) -> None:
        """Accumulate energy and GPM busy time up to the fleet clock."""
        now = self.now_s()
        if g.last is not None and now > g.last:
            dt = now - g.last
            util = self.gpu_util(g)
            g.energy_mj += self.power_w(g, util) * dt * 1000.0
            for p in g.processes:
                if p.gi_id is not None:
                    frac = self.load.get(p.model, 0.0)
                    g.busy_s[p.gi_id] = g.busy_s.get(p.gi_id, 0.0) + frac * dt
        g.last = now if g.last is None or now > g.last else g.last


def build_fleet(
    spec: Sequence[NodeSpec],
    *,
    clock: Callable[[], datetime] | None = None,
    seed: int = 0,
) -> SimFleet:
    """A fleet from a small spec (nodes with GPU type, count, pricing class, MIG layouts).

    Raises: UnknownGpuTypeError, ValueError for a MIG layout that does not fit.
    """
    gpus: list[SimGpu] = []
    for node in spec:
        t = gpu_type(node.gpu_type)
        for i in range(node.gpus):
            gpus.append(
                SimGpu(node.name, i, "GPU-" + _uuid_for(node.name, i), t, node.pricing_class)
            )
    fleet = SimFleet(gpus, clock or (lambda: datetime.now(UTC)), seed)
    for node in spec:
        for i, layout in enumerate(node.mig):
            if layout is not None:
                fleet.set_mig(fleet.gpu(node.name, i), layout)
    return fleet
