"""Filter plugins: GPU type, isolation/node sharing, and resource fit per mode."""

from __future__ import annotations

from scheduler import mig
from scheduler.catalog import gpu_type
from scheduler.framework import GpuUse, Request
from scheduler.model import Insufficient, Mode, NodeSharing, Workload

# The node sharing config each mode needs (MIG and whole GPUs live on non-shared nodes).
NODE_SHARING = {
    Mode.gpu: NodeSharing.none,
    Mode.mig: NodeSharing.none,
    Mode.mps: NodeSharing.mps,
    Mode.timeslice: NodeSharing.timeslice,
}


class GpuTypeFilter:
    """Rejects GPU types the workload does not allow."""

    name = "GpuType"

    def filter(self, w: Workload, req: Request, gpu: GpuUse) -> list[Insufficient] | None:
        """None if the type is allowed."""
        if w.allows(gpu.gpu_type):
            return None
        return [Insufficient("gpu_type", f"{gpu.gpu_type} not in {list(w.gpu_types)}")]


class NodeSharingFilter:
    """A GPU keeps one mode, and all GPUs of a node share one device-plugin sharing config."""

    name = "NodeSharing"

    def filter(self, w: Workload, req: Request, gpu: GpuUse) -> list[Insufficient] | None:
        """None if the GPU's mode and its node's sharing admit ``req.mode``."""
        if gpu.mode is not None and gpu.mode != req.mode:
            return [Insufficient("mode", f"GPU runs {gpu.mode.value}, not {req.mode.value}")]
        need = NODE_SHARING[req.mode]
        if req.replicas and gpu.node_mps_replicas and gpu.node_mps_replicas != req.replicas:
            return [
                Insufficient(
                    "mps_replicas",
                    f"node {gpu.node} splits GPUs into {gpu.node_mps_replicas} MPS shares, "
                    f"not {req.replicas}",
                )
            ]
        if gpu.node_sharing is not None and gpu.node_sharing != need:
            return [
                Insufficient(
                    "node_sharing",
                    f"node {gpu.node} shares by {gpu.node_sharing.value}, "
                    f"{req.mode.value} needs {need.value}",
                )
            ]
        return None


def host_fit(w: Workload, gpu: GpuUse, gpus: int = 1) -> list[Insufficient]:
    """The node's allocatable CPU and memory left for one replica's pod (on ``gpus`` GPUs of
    that node, the pod's requests are counted once)."""
    out = []
    cpu = w.cpu_milli / max(1, w.gpus) * gpus
    mem = w.host_mem_mib / max(1, w.gpus) * gpus
    if cpu > gpu.node_cpu_free + 1e-9:
        out.append(Insufficient("cpu", f"node {gpu.node} CPU (milli)", cpu, 0, gpu.node_cpu_free))
    if mem > gpu.node_mem_free_mib + 1e-9:
        out.append(
            Insufficient(
                "host_memory", f"node {gpu.node} memory (MiB)", mem, 0, gpu.node_mem_free_mib
            )
        )
    return out


class FitFilter:
    """Node CPU and memory, GPU memory, compute, MIG geometry and client limits (like k8s
    NodeResourcesFit)."""

    name = "Fit"

    def __init__(self, max_mps_clients: int = 48, max_timeslice_replicas: int = 16) -> None:
        """Limits from MIG.md: MPS serves at most 48 clients per GPU."""
        self.max_clients = {Mode.mps: max_mps_clients, Mode.timeslice: max_timeslice_replicas}

    def filter(self, w: Workload, req: Request, gpu: GpuUse) -> list[Insufficient] | None:
        """None if the replica fits on what the GPU and its node already hold."""
        host = host_fit(w, gpu)
        if host:
            return host
        if req.mode is Mode.gpu:
            if gpu.mode is not None:
                return [Insufficient("gpu", "GPU already holds replicas", 1, 1, 1)]
            if req.mem_mib > gpu.mem_capacity_mib:
                return [
                    Insufficient(
                        "memory", "device memory (MiB)", req.mem_mib, 0, gpu.mem_capacity_mib
                    )
                ]
            return None
        if req.mode is Mode.mig:
            return _mig_fit(req, gpu)
        out = []
        if gpu.compute_used + req.compute_milli > 1000:
            out.append(
                Insufficient("compute", "SM share", req.compute_milli, gpu.compute_used, 1000)
            )
        if gpu.mem_used_mib + req.mem_mib > gpu.mem_capacity_mib:
            out.append(
                Insufficient(
                    "memory",
                    "device memory (MiB)",
                    req.mem_mib,
                    gpu.mem_used_mib,
                    gpu.mem_capacity_mib,
                )
            )
        limit = req.replicas or self.max_clients[req.mode]
        if gpu.clients + 1 > limit:
            out.append(Insufficient("clients", f"{req.mode.value} clients", 1, gpu.clients, limit))
        return out or None


def _mig_fit(req: Request, gpu: GpuUse) -> list[Insufficient] | None:
    family = gpu_type(gpu.gpu_type).mig_family
    if family is None or req.profile is None:
        return [Insufficient("mig", f"{gpu.gpu_type} has no MIG")]
    if not mig.fits(family, (*gpu.profiles, req.profile)):
        fam = mig.FAMILIES[family]
        used = sum(fam.profile(p).sm_slices for p in gpu.profiles)
        return [
            Insufficient(
                "mig_slices",
                f"no valid placement for {req.profile} next to {sorted(gpu.profiles)}",
                fam.profile(req.profile).sm_slices,
                used,
                fam.sm_slices,
            )
        ]
    return None
