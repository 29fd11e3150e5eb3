"""The planner's vocabulary: frozen snapshots in, a frozen Plan out (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from scheduler.catalog import gpu_type
from scheduler.mig import Layout


class Isolation(StrEnum):
    """The weakest sharing a model tolerates: strict -> MIG (or a whole GPU), shared -> MPS,
    best-effort -> time-slicing. A stronger isolation is always acceptable."""

    strict = "strict"
    shared = "shared"
    best_effort = "best-effort"


class LatencyClass(StrEnum):
    """Interactive models avoid time-slicing (no QoS); batch ones do not care."""

    interactive = "interactive"
    batch = "batch"


class Mode(StrEnum):
    """How a replica holds a GPU (same values as billing.models.AllocationMode)."""

    gpu = "gpu"
    mig = "mig"
    mps = "mps"
    timeslice = "timeslice"


class NodeSharing(StrEnum):
    """The device plugin's sharing config of a node: it applies to every GPU of the node."""

    none = "none"
    mps = "mps"
    timeslice = "timeslice"


@dataclass(frozen=True)
class Workload:
    """A model to place: ``replicas`` copies, each needing ``mem_mib`` and ``compute``.

    ``compute`` is the SM fraction of one whole GPU of ``ref_type`` (p95 with headroom);
    ``gpus`` > 1 asks for that many whole GPUs on one node per replica. ``cpu_milli`` and
    ``host_mem_mib`` are what one replica's pod requests of its node (0: nothing).
    """

    model: str
    mem_mib: float
    compute: float
    replicas: int = 1
    isolation: Isolation = Isolation.shared
    latency: LatencyClass = LatencyClass.interactive
    ref_type: str = "A100-80GB"
    gpus: int = 1
    gpu_types: tuple[str, ...] = ()
    scale_compute: bool = True  # False: ``compute`` is a share of whichever GPU it lands on
    cpu_milli: int = 0
    host_mem_mib: float = 0.0

    def compute_on(self, type_name: str) -> float:
        """SM fraction of one GPU of ``type_name`` this needs (scaled by relative speed)."""
        if not self.scale_compute:
            return self.compute
        ref, other = gpu_type(self.ref_type), gpu_type(type_name)
        return self.compute * ref.relative_speed / other.relative_speed

    def allows(self, type_name: str) -> bool:
        """Whether a GPU of this type is acceptable."""
        return not self.gpu_types or type_name in self.gpu_types


@dataclass(frozen=True)
class GpuSnapshot:
    """A physical GPU as the planner sees it (current MIG layout: None when MIG is off)."""

    uuid: str
    node: str
    index: int
    gpu_type: str
    pricing_class: str = "on-demand"
    usd_per_hour: float = 0.0
    mig_layout: Layout | None = None


@dataclass(frozen=True)
class NodeSnapshot:
    """A node: its device-plugin sharing config and allocatable CPU / memory (None: unknown,
    not enforced)."""

    name: str
    sharing: NodeSharing = NodeSharing.none
    mig_config: str | None = None
    cpu_milli: int | None = None
    mem_mib: float | None = None


@dataclass(frozen=True)
class Slot:
    """One replica of a model on a GPU: its mode, MIG profile or MPS share, and price share."""

    model: str
    replica: int
    node: str
    gpu_uuid: str
    mode: Mode
    share: float  # fraction of the GPU's price: MIG slices/7 (A30 /4), MPS share, 1/replicas
    profile: str | None = None  # MIG profile name, e.g. "3g.40gb"
    mig_start: int | None = None
    thread_pct: int | None = None  # MPS active thread percentage
    mem_limit_mib: int | None = None  # MPS pinned device memory limit


@dataclass(frozen=True)
class Snapshot:
    """Everything ``plan`` reads: the fleet, the demand and where replicas run now."""

    gpus: tuple[GpuSnapshot, ...]
    workloads: tuple[Workload, ...]
    nodes: tuple[NodeSnapshot, ...] = ()
    current: tuple[Slot, ...] = ()
    taken_at: datetime | None = None


@dataclass(frozen=True)
class Insufficient:
    """Why a placement was rejected (like the k8s noderesources InsufficientResource)."""

    resource: str
    reason: str
    requested: float = 0.0
    used: float = 0.0
    capacity: float = 0.0


@dataclass(frozen=True)
class Unplaced:
    """A replica no GPU could take, with the reasons of each rejected GPU (aggregated)."""

    model: str
    replica: int
    reasons: tuple[tuple[str, Insufficient], ...]  # (gpu uuid, reason)


@dataclass(frozen=True)
class GpuPlan:
    """The configuration a GPU gets: its mode and, under MIG, the positional layout."""

    uuid: str
    node: str
    gpu_type: str
    mode: Mode
    usd_per_hour: float
    mig_layout: Layout | None = None
    mps_clients: int = 0
    timeslice_replicas: int = 0


@dataclass(frozen=True)
class NodePlan:
    """A node's device-plugin sharing config and whether its MIG layout changes.

    ``mps_replicas``: under equal MPS shares, the replicas each GPU of the node is split into
    (every client gets 1/mps_replicas of SMs and memory); 0 when not planned that way.
    """

    name: str
    sharing: NodeSharing
    mig_config: str | None = None
    mps_replicas: int = 0


@dataclass(frozen=True)
class Bound:
    """A lower bound on GPUs and USD/hour for the same demand."""

    gpus: int
    usd_per_hour: float


@dataclass(frozen=True)
class Move:
    """One change against the current placement: add, remove or reconfigure."""

    action: str  # "add" | "remove" | "keep"
    model: str
    gpu_uuid: str
    mode: Mode
    profile: str | None = None


@dataclass(frozen=True)
class Plan:
    """The result of ``plan``: where every replica goes, what it costs, and the bounds."""

    slots: tuple[Slot, ...]
    gpus: tuple[GpuPlan, ...]
    nodes: tuple[NodePlan, ...]
    unplaced: tuple[Unplaced, ...]
    usd_per_hour: float
    lower_bound: Bound
    one_per_gpu: Bound
    current_usd_per_hour: float
    moves: tuple[Move, ...] = field(default=())

    @property
    def gpus_used(self) -> int:
        """GPUs that hold at least one replica."""
        return len(self.gpus)

    @property
    def saving_vs_current(self) -> float:
        """USD/hour saved against the current placement."""
        return self.current_usd_per_hour - self.usd_per_hour

    @property
    def saving_vs_one_per_gpu(self) -> float:
        """USD/hour saved against one replica per GPU."""
        return self.one_per_gpu.usd_per_hour - self.usd_per_hour
