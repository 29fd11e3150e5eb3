"""The NVML collector: the only module (with nvml_fake) that talks pynvml's API.

``Collector.collect(now)`` reads every GPU of the node: MIG mode and instances (profile and
placement), utilisation, memory, power and energy, compute processes and their utilisation
(nvmlDeviceGetProcessUtilization; GPM per GPU instance under MIG), and MPS clients
(nvmlDeviceGetMPSComputeRunningProcesses: under MPS the compute list holds the MPS server,
which is left out, and the clients are listed there). Each NVML call is guarded
on its own: an error (GPU lost, not supported under MIG) is recorded in the sample's ``fault``
and the collector goes on with the next reading and the next GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from billing.schemas import GpuProcessSampleIn, GpuSampleIn
from scheduler import mig
from scheduler.catalog import gpu_type, type_from_nvml_name
from scheduler.config import SchedulerConfig
from scheduler.podmap import PodResolver
from scheduler.simfleet import SimFleet

log = logging.getLogger(__name__)
MIB = 1024 * 1024
MPS_SERVER = "nvidia-cuda-mps-server"


def load_nvml(config: SchedulerConfig, fleet: SimFleet | None = None) -> Any:
    """The NVML backend the settings name: the real ``pynvml`` or a FakeNvml over ``fleet``.

    Raises: ValueError for the simulated backend without a fleet.
    """
    if config.nvml_backend == "pynvml":
        import pynvml

        return pynvml
    if fleet is None:
        raise ValueError("the simulated NVML backend needs a SimFleet")
    from scheduler.nvml_fake import FakeNvml

    return FakeNvml(fleet, config.node_name)


@dataclass(frozen=True)
class MigReading:
    """A MIG GPU instance as NVML reports it: profile and placement on the memory-slot axis."""

    gpu_uuid: str
    uuid: str
    gi_id: int
    profile: str
    start: int
    size: int


@dataclass
class CollectResult:
    """One round of readings, ready for billing.ingest.ingest_gpu_samples."""

    samples: list[GpuSampleIn] = field(default_factory=list)
    processes: list[GpuProcessSampleIn] = field(default_factory=list)
    instances: list[MigReading] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)


@dataclass
class Collector:
    """Samples one node's GPUs through an NVML module (real or fake)."""

    nvml: Any
    node: str
    interval_s: float
    pricing_class: str | Callable[[int], str] = "on-demand"
    resolver: PodResolver | None = None
    _seen_us: dict[str, int] = field(default_factory=dict)
    _gpm: dict[tuple[str, int], Any] = field(default_factory=dict)
    _known: dict[int, tuple[str, str]] = field(default_factory=dict)
    _no_mps: bool = False

    def _call(self, faults: list[str], label: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self.nvml.NVMLError as exc:
            faults.append(f"{label}: {exc}")
            return None

    def _pricing(self, index: int) -> str:
        p = self.pricing_class
        return p(index) if callable(p) else p

    def collect(self, now: datetime) -> CollectResult:
        """Read every GPU once at ``now``; never raises for one GPU's NVML error."""
        out = CollectResult()
        count = self.nvml.nvmlDeviceGetCount()
        for index in range(count):
            try:
                self._gpu(index, now, out)
            except self.nvml.NVMLError as exc:
                self._lost(index, now, str(exc), out)
        return out

    def _lost(self, index: int, now: datetime, why: str, out: CollectResult) -> None:
        out.faults.append(f"gpu {index}: {why}")
        known = self._known.get(index)
        if known is None:
            log.warning("GPU %d unreadable before its first sample: %s", index, why)
            return
        out.samples.append(
            GpuSampleIn(
                ts=now,
                node=self.node,
                gpu_uuid=known[0],
                gpu_index=index,
                gpu_type=known[1],
                pricing_class=self._pricing(index),
                interval_s=self.interval_s,
                fault=why[:200],
            )
        )

    def _gpu(self, index: int, now: datetime, out: CollectResult) -> None:
        n = self.nvml
        h = n.nvmlDeviceGetHandleByIndex(index)
        uuid = n.nvmlDeviceGetUUID(h)
        type_name = type_from_nvml_name(n.nvmlDeviceGetName(h))
        self._known[index] = (uuid, type_name)
        faults: list[str] = []
        mig_on = False
        if type_name in mig.PROFILE_NAMES:
            mode = self._call(faults, "mig_mode", n.nvmlDeviceGetMigMode, h)
            mig_on = bool(mode and mode[0] == n.NVML_DEVICE_MIG_ENABLE)
        mem = self._call(faults, "memory", n.nvmlDeviceGetMemoryInfo, h)
        power = self._call(faults, "power", n.nvmlDeviceGetPowerUsage, h)
        energy = self._call(faults, "energy", n.nvmlDeviceGetTotalEnergyConsumption, h)
        util = self._call(faults, "utilization", n.nvmlDeviceGetUtilizationRates, h)
        sm_util: float | None = None if util is None else float(util.gpu)
        if mig_on:
            parts = self._mig_instances(h, index, uuid, type_name, now, out, faults)
            if parts is not None:
                sm_util = min(100.0, parts)
        else:
            self._processes(h, uuid, uuid, now, out, faults, None)
        out.faults += [f"gpu {index}: {f}" for f in faults]
        out.samples.append(
            GpuSampleIn(
                ts=now,
                node=self.node,
                gpu_uuid=uuid,
                gpu_index=index,
                gpu_type=type_name,
                pricing_class=self._pricing(index),
                sm_util=sm_util,
                mem_used_mib=None if mem is None else mem.used / MIB,
                mem_total_mib=None if mem is None else mem.total / MIB,
                power_w=None if power is None else power / 1000.0,
                energy_j=None if energy is None else energy / 1000.0,
                interval_s=self.interval_s,
                fault="; ".join(faults)[:200] or None,
            )
        )

    def _mig_instances(
        self,
        h: Any,
        index: int,
        uuid: str,
        type_name: str,
        now: datetime,
        out: CollectResult,
        faults: list[str],
    ) -> float | None:
        """Sample each GPU instance; returns the GPU's SM % if every instance's is known."""
        n = self.nvml
        fam = mig.FAMILIES[gpu_type(type_name).mig_family or "a100"]
        by_id = {p.smi_id: p for p in fam.profiles}
        support = self._call(faults, "gpm", n.nvmlGpmQueryDeviceSupport, h)
        gpm = bool(support and support.isSupportedDevice)
        total: float | None = 0.0
        for j in range(n.nvmlDeviceGetMaxMigDeviceCount(h)):
            try:
                mh = n.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
            except n.NVMLError as exc:
                if exc.value != n.NVML_ERROR_NOT_FOUND:
                    faults.append(f"mig device {j}: {exc}")
                continue
            try:
                muuid = n.nvmlDeviceGetUUID(mh)
                gi_id = n.nvmlDeviceGetGpuInstanceId(mh)
                info = n.nvmlGpuInstanceGetInfo(n.nvmlDeviceGetGpuInstanceById(h, gi_id))
            except n.NVMLError as exc:
                faults.append(f"mig device {j}: {exc}")
                continue
            p = by_id.get(info.profileId)
            name = mig.profile_name(type_name, p.key) if p else f"id{info.profileId}"
            frac = p.sm_slices / fam.sm_slices if p else 0.0
            out.instances.append(
                MigReading(uuid, muuid, gi_id, name, info.placement.start, info.placement.size)
            )
            inst = self._gpm_util(h, uuid, gi_id, faults) if gpm else None
            total = None if total is None or inst is None else total + inst * frac
            mem = self._call(faults, f"mig {gi_id} memory", n.nvmlDeviceGetMemoryInfo, mh)
            out.samples.append(
                GpuSampleIn(
                    ts=now,
                    node=self.node,
                    gpu_uuid=muuid,
                    parent_uuid=uuid,
                    gpu_index=index,
                    gpu_type=type_name,
                    pricing_class=self._pricing(index),
                    mig_profile=name,
                    sm_util=inst,
                    mem_used_mib=None if mem is None else mem.used / MIB,
                    mem_total_mib=None if mem is None else mem.total / MIB,
                    interval_s=self.interval_s,
                )
            )
            self._processes(mh, muuid, uuid, now, out, faults, (inst, frac))
        return total

    def _gpm_util(self, h: Any, uuid: str, gi_id: int, faults: list[str]) -> float | None:
        """SM % of one GPU instance since the previous round (None on the first round)."""
        n = self.nvml
        try:
            sample = n.nvmlGpmMigSampleGet(h, gi_id, n.nvmlGpmSampleAlloc())
        except n.NVMLError as exc:
            faults.append(f"gpm {gi_id}: {exc}")
            return None
        prev = self._gpm.get((uuid, gi_id))
        self._gpm[(uuid, gi_id)] = sample
        if prev is None:
            return None
        mg = n.c_nvmlGpmMetricsGet_t()
        mg.version, mg.numMetrics = n.NVML_GPM_METRICS_GET_VERSION, 1
        mg.sample1, mg.sample2 = prev, sample
        mg.metrics[0].metricId = n.NVML_GPM_METRIC_SM_UTIL
        try:
            n.nvmlGpmMetricsGet(mg)
        except n.NVMLError as exc:
            faults.append(f"gpm {gi_id}: {exc}")
            return None
        finally:
            n.nvmlGpmSampleFree(prev)
        metric = mg.metrics[0]
        if metric.nvmlReturn != n.NVML_SUCCESS:
            faults.append(f"gpm {gi_id}: return {metric.nvmlReturn}")
            return None
        return float(metric.value)

    def _process_utils(self, h: Any, device_uuid: str, faults: list[str]) -> dict[int, float]:
        """Mean SM % per pid since the last round (nvmlDeviceGetProcessUtilization)."""
        n = self.nvml
        try:
            samples = n.nvmlDeviceGetProcessUtilization(h, self._seen_us.get(device_uuid, 0))
        except n.NVMLError as exc:
            if exc.value != n.NVML_ERROR_NOT_FOUND:  # NOT_FOUND: no sample since last time
                faults.append(f"process utilization: {exc}")
            return {}
        acc: dict[int, list[float]] = {}
        for s in samples:
            acc.setdefault(s.pid, []).append(float(s.smUtil))
            self._seen_us[device_uuid] = max(self._seen_us.get(device_uuid, 0), s.timeStamp)
        return {pid: sum(v) / len(v) for pid, v in acc.items()}

    def _mps_clients(self, h: Any, faults: list[str]) -> list[Any]:
        """MPS client processes of a device (v3); [] where the driver lacks the call."""
        n = self.nvml
        fn = getattr(n, "nvmlDeviceGetMPSComputeRunningProcesses", None)
        if fn is None or self._no_mps:
            return []
        unsupported = {
            getattr(n, "NVML_ERROR_NOT_SUPPORTED", 3),
            getattr(n, "NVML_ERROR_FUNCTION_NOT_FOUND", 13),
        }
        try:
            return list(fn(h) or [])
        except n.NVMLError as exc:
            if exc.value in unsupported:
                self._no_mps = True
            else:
                faults.append(f"mps processes: {exc}")
            return []

    def _is_mps_server(self, pid: int) -> bool:
        """True for the nvidia-cuda-mps-server process (nvmlSystemGetProcessName)."""
        try:
            name = self.nvml.nvmlSystemGetProcessName(pid)
        except self.nvml.NVMLError:
            return False
        text = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        return text.rsplit("/", 1)[-1] == MPS_SERVER

    def _processes(
        self,
        h: Any,
        device_uuid: str,
        gpu_uuid: str,
        now: datetime,
        out: CollectResult,
        faults: list[str],
        mig_info: tuple[float | None, float] | None,
    ) -> None:
        """Process rows of one device, mapped to pods; sm_util is % of the WHOLE GPU.

        Details: under MIG the instance's GPM SM % x slice fraction, split evenly among the
        instance's processes; otherwise nvmlDeviceGetProcessUtilization's smUtil.
        """
        n = self.nvml
        procs = self._call(faults, "processes", n.nvmlDeviceGetComputeRunningProcesses, h) or []
        clients = self._mps_clients(h, faults)
        if clients:
            procs = [p for p in procs if not self._is_mps_server(p.pid)]
        pids = {p.pid for p in procs}
        procs = list(procs) + [p for p in clients if p.pid not in pids]
        if mig_info is None:
            utils: dict[int, float] = self._process_utils(h, device_uuid, faults) if procs else {}
        else:
            inst, frac = mig_info
            each = None if inst is None or not procs else inst * frac / len(procs)
            utils = {} if each is None else {p.pid: each for p in procs}
        for p in procs:
            ref = self.resolver.resolve(p.pid) if self.resolver else None
            used = p.usedGpuMemory
            util = utils.get(p.pid)
            out.processes.append(
                GpuProcessSampleIn(
                    ts=now,
                    device_uuid=device_uuid,
                    gpu_uuid=gpu_uuid,
                    pid=p.pid,
                    pod_uid=ref.uid if ref else None,
                    namespace=(ref.namespace or None) if ref else None,
                    pod=(ref.pod or None) if ref else None,
                    model=ref.model if ref else None,
                    sm_util=None if util is None else max(0.0, min(100.0, util)),
                    mem_used_mib=None if used is None else used / MIB,
                    interval_s=self.interval_s,
                )
            )
