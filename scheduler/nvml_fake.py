"""A fake pynvml over a SimFleet: the same function names, return shapes and errors.

The collector (``scheduler.nvml``) calls these exactly as it calls ``pynvml``. Realistic
limits that the collector must survive: under MPS the compute-process list shows the MPS
server and the clients come from ``nvmlDeviceGetMPSComputeRunningProcesses``;
``nvmlDeviceGetUtilizationRates``, power and
``nvmlDeviceGetProcessUtilization`` raise NOT_SUPPORTED on MIG devices and MIG-enabled
parents; GPM (per-GPU-instance SM utilisation) exists on Hopper (H100/H200) only; a GPU with a
fault raises that error (e.g. GPU_IS_LOST) on every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from scheduler import mig
from scheduler.model import Mode
from scheduler.simfleet import SimFleet, SimGpu, SimInstance

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1
NVML_GPM_METRIC_SM_UTIL = 2
NVML_GPM_METRICS_GET_VERSION = 1
NVML_GPM_SUPPORT_VERSION = 1
NVML_VALUE_NOT_AVAILABLE_uint = 0xFFFFFFFF
GPM_FAMILIES = {"H100-80GB", "H200-141GB"}
MPS_SERVER_MIB = 32
_NAMES = {
    1: "Uninitialized",
    2: "Invalid Argument",
    3: "Not Supported",
    6: "Not Found",
    7: "Insufficient Size",
    13: "Function Not Found",
    15: "GPU is lost",
    999: "Unknown Error",
}


class NVMLError(Exception):
    """Like pynvml.NVMLError: ``value`` is the NVML_ERROR_* code."""

    def __init__(self, value: int) -> None:
        """An error with an NVML return code."""
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _NAMES.get(self.value, f"NVML error {self.value}")


@dataclass(frozen=True)
class _Handle:
    gpu: SimGpu
    instance: SimInstance | None = None


@dataclass
class _GpmSample:
    t: float = 0.0
    busy: float = 0.0


@dataclass
class _GpmMetric:
    """Like pynvml's c_nvmlGpmMetric_t."""

    metricId: int = 0
    nvmlReturn: int = 0
    value: float = 0.0


@dataclass
class _GpmMetricsGet:
    """Like pynvml's c_nvmlGpmMetricsGet_t."""

    version: int = 0
    numMetrics: int = 0
    sample1: Any = None
    sample2: Any = None
    metrics: list[_GpmMetric] = field(default_factory=lambda: [_GpmMetric() for _ in range(8)])


class FakeNvml:
    """The pynvml functions the collector uses, answered from a SimFleet."""

    NVMLError = NVMLError
    c_nvmlGpmMetricsGet_t = _GpmMetricsGet

    def __init__(self, fleet: SimFleet, node: str | None = None) -> None:
        """GPUs of ``node`` (all of the fleet's first node when None) as NVML devices."""
        self.fleet = fleet
        self.node = node or (fleet.gpus[0].node if fleet.gpus else "")
        self.initialised = False
        for k, v in globals().items():
            if k.startswith("NVML_"):
                setattr(self, k, v)

    def _devices(self) -> list[SimGpu]:
        return [g for g in self.fleet.gpus if g.node == self.node]

    def _check(self, h: _Handle) -> SimGpu:
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if h.gpu.fault is not None:
            raise NVMLError(h.gpu.fault)
        self.fleet.advance(h.gpu)
        return h.gpu

    # -- init and enumeration ---------------------------------------------------------------
    def nvmlInit(self) -> None:
        """Initialise the (fake) library."""
        self.initialised = True

    def nvmlShutdown(self) -> None:
        """Shut the (fake) library down."""
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        """Number of physical GPUs on this node."""
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        return len(self._devices())

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        """Handle of GPU ``index``."""
        devices = self._devices()
        if not 0 <= index < len(devices):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(devices[index])

    def nvmlDeviceGetUUID(self, h: _Handle) -> str:
        """GPU or MIG device UUID."""
        g = self._check(h)
        return h.instance.uuid if h.instance else g.uuid

    def nvmlDeviceGetName(self, h: _Handle) -> str:
        """Product name."""
        g = self._check(h)
        if h.instance:
            name = mig.profile_name(g.type.name, h.instance.key)
            return f"{g.type.nvml_name} MIG {name}"
        return g.type.nvml_name

    def nvmlDeviceGetIndex(self, h: _Handle) -> int:
        """Index on the node."""
        return self._check(h).index

    # -- MIG --------------------------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, h: _Handle) -> list[int]:
        """[current, pending]; NOT_SUPPORTED on GPUs without MIG."""
        g = self._check(h)
        if g.type.mig_family is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return [int(g.mig_enabled)] * 2

    def nvmlDeviceGetMaxMigDeviceCount(self, h: _Handle) -> int:
        """7 on A100/H100/H200, 4 on A30, 0 without MIG."""
        g = self._check(h)
        family = g.type.mig_family
        return 0 if family is None else mig.FAMILIES[family].sm_slices

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: _Handle, index: int) -> _Handle:
        """The ``index``-th MIG device; NOT_FOUND past the last one."""
        g = self._check(h)
        if not g.mig_enabled or index >= len(g.instances):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return _Handle(g, g.instances[index])

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, h: _Handle) -> _Handle:
        """The parent GPU of a MIG device."""
        return _Handle(self._check(h))

    def nvmlDeviceGetGpuInstanceId(self, h: _Handle) -> int:
        """GI id of a MIG device."""
        self._check(h)
        if h.instance is None:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return h.instance.gi_id

    def nvmlDeviceGetGpuInstanceById(self, h: _Handle, gi_id: int) -> _Handle:
        """A GPU instance handle."""
        g = self._check(h)
        for inst in g.instances:
            if inst.gi_id == gi_id:
                return _Handle(g, inst)
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def nvmlGpuInstanceGetInfo(self, gi: _Handle) -> SimpleNamespace:
        """id, profileId (nvidia-smi ID) and placement (start, size)."""
        g = self._check(gi)
        assert gi.instance is not None
        p = mig.FAMILIES[g.type.mig_family or "a100"].profile(gi.instance.key)
        placement = SimpleNamespace(start=gi.instance.start, size=p.mem_slots)
        return SimpleNamespace(
            device=_Handle(g), id=gi.instance.gi_id, profileId=p.smi_id, placement=placement
        )

    def nvmlDeviceGetGpuInstanceProfileInfo(self, h: _Handle, profile: int) -> SimpleNamespace:
        """Profile info by NVML_GPU_INSTANCE_PROFILE_* enum; NOT_SUPPORTED if absent."""
        g = self._check(h)
        family = g.type.mig_family
        for p in mig.FAMILIES[family].profiles if family else ():
            if p.nvml_enum == profile:
                sms = g.type.sms * p.sm_slices // mig.FAMILIES[family or "a100"].sm_slices
                return SimpleNamespace(
                    id=p.smi_id,
                    sliceCount=p.sm_slices,
                    instanceCount=p.max_instances,
                    multiprocessorCount=sms,
                    copyEngineCount=p.sm_slices,
                    memorySizeMB=mig.profile_memory_mib(g.type.name, p.key),
                )
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetGpuInstancePossiblePlacements(
        self, h: _Handle, profile_id: int, placements: Any, count: Any
    ) -> int:
        """Fills ``placements`` (objects with start/size) and ``count.value`` from lgipp."""
        g = self._check(h)
        family = mig.FAMILIES[g.type.mig_family or "a100"]
        p = next((q for q in family.profiles if q.smi_id == profile_id), None)
        if p is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        count = getattr(count, "_obj", count)
        if placements is None:
            count.value = len(p.starts)
            return NVML_SUCCESS
        for i, s in enumerate(p.starts):
            placements[i].start, placements[i].size = s, p.mem_slots
        count.value = len(p.starts)
        return NVML_SUCCESS

    # -- measurements -----------------------------------------------------------------------
    def _no_mig(self, h: _Handle, g: SimGpu) -> None:
        if h.instance is not None or g.mig_enabled:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetUtilizationRates(self, h: _Handle) -> SimpleNamespace:
        """gpu / memory %; NOT_SUPPORTED under MIG."""
        g = self._check(h)
        self._no_mig(h, g)
        util = self.fleet.gpu_util(g)
        return SimpleNamespace(gpu=round(util), memory=round(util * 0.6))

    def nvmlDeviceGetMemoryInfo(self, h: _Handle) -> SimpleNamespace:
        """total / used / free bytes of the GPU or MIG device."""
        g = self._check(h)
        mib = 1024 * 1024
        if h.instance is not None:
            total = mig.profile_memory_mib(g.type.name, h.instance.key)
            used = sum(p.mem_mib for p in g.processes if p.gi_id == h.instance.gi_id)
        else:
            total, used = g.type.memory_mib, sum(p.mem_mib for p in g.processes)
        return SimpleNamespace(
            total=int(total * mib), used=int(used * mib), free=int((total - used) * mib)
        )

    def nvmlDeviceGetPowerUsage(self, h: _Handle) -> int:
        """Board power in mW (physical GPUs only)."""
        g = self._check(h)
        if h.instance is not None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return int(self.fleet.power_w(g, self.fleet.gpu_util(g)) * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, h: _Handle) -> int:
        """mJ since the (simulated) driver loaded."""
        g = self._check(h)
        if h.instance is not None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return int(g.energy_mj)

    def _device_processes(self, h: _Handle, mps: bool) -> list[SimpleNamespace]:
        g = self._check(h)
        procs = [p for p in g.processes if (p.mode is Mode.mps) == mps]
        if h.instance is not None:
            procs = [p for p in procs if p.gi_id == h.instance.gi_id]
        na = NVML_VALUE_NOT_AVAILABLE_uint
        return [
            SimpleNamespace(
                pid=p.pid,
                usedGpuMemory=int(p.mem_mib * 1024 * 1024),
                gpuInstanceId=na if p.gi_id is None else p.gi_id,
                computeInstanceId=na if p.gi_id is None else 0,
            )
            for p in procs
        ]

    def nvmlDeviceGetComputeRunningProcesses(self, h: _Handle) -> list[SimpleNamespace]:
        """pid, usedGpuMemory (bytes), gpuInstanceId, computeInstanceId per process (v3).

        Under MPS the clients are not listed here but the MPS server is (as NVML does).
        """
        out = self._device_processes(h, mps=False)
        g = h.gpu
        if h.instance is None and g.mps_server_pid is not None:
            na = NVML_VALUE_NOT_AVAILABLE_uint
            if any(p.mode is Mode.mps for p in g.processes):
                out.append(
                    SimpleNamespace(
                        pid=g.mps_server_pid,
                        usedGpuMemory=MPS_SERVER_MIB * 1024 * 1024,
                        gpuInstanceId=na,
                        computeInstanceId=na,
                    )
                )
        return out

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        """The executable path of ``pid``; NOT_FOUND for a pid no GPU runs."""
        for g in self._devices():
            if pid == g.mps_server_pid:
                return "/usr/bin/nvidia-cuda-mps-server"
            for p in g.processes:
                if p.pid == pid:
                    return "/usr/bin/python3"
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetMPSComputeRunningProcesses(self, h: _Handle) -> list[SimpleNamespace]:
        """The MPS client processes of a GPU or MIG device (v3 fields, as above)."""
        return self._device_processes(h, mps=True)

    def nvmlDeviceGetProcessUtilization(self, h: _Handle, ts: int) -> list[SimpleNamespace]:
        """Per-process samples newer than ``ts`` (µs); NOT_SUPPORTED under MIG, NOT_FOUND
        when there is no newer sample."""
        g = self._check(h)
        self._no_mig(h, g)
        now_us = int(self.fleet.now_s() * 1e6)
        if now_us <= ts or not g.processes:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return [
            SimpleNamespace(
                pid=p.pid,
                timeStamp=now_us,
                smUtil=round(u),
                memUtil=round(u * 0.6),
                encUtil=0,
                decUtil=0,
            )
            for p in g.processes
            if (u := self.fleet.process_util(g, p)) >= 0
        ]

    # -- GPM (Hopper): per-GPU-instance SM utilisation under MIG -------------------------------
    def nvmlGpmQueryDeviceSupport(self, h: _Handle) -> SimpleNamespace:
        """isSupportedDevice = 1 on H100/H200."""
        g = self._check(h)
        return SimpleNamespace(
            version=NVML_GPM_SUPPORT_VERSION, isSupportedDevice=int(g.type.name in GPM_FAMILIES)
        )

    def nvmlGpmSampleAlloc(self) -> _GpmSample:
        """A sample buffer."""
        return _GpmSample()

    def nvmlGpmSampleFree(self, sample: _GpmSample) -> None:
        """Free a sample buffer (nothing to do)."""

    def nvmlGpmMigSampleGet(self, h: _Handle, gi_id: int, sample: _GpmSample) -> _GpmSample:
        """Snapshot the counters of GPU instance ``gi_id``."""
        g = self._check(h)
        if g.type.name not in GPM_FAMILIES:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if not any(i.gi_id == gi_id for i in g.instances):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        sample.t, sample.busy = self.fleet.now_s(), g.busy_s.get(gi_id, 0.0)
        return sample

    def nvmlGpmMetricsGet(self, mg: _GpmMetricsGet) -> _GpmMetricsGet:
        """SM_UTIL between sample1 and sample2, % of the GPU instance."""
        s1, s2 = mg.sample1, mg.sample2
        for m in mg.metrics[: mg.numMetrics]:
            if m.metricId != NVML_GPM_METRIC_SM_UTIL or s2.t <= s1.t:
                m.nvmlReturn, m.value = NVML_ERROR_NOT_SUPPORTED, 0.0
                continue
            m.nvmlReturn = NVML_SUCCESS
            m.value = max(0.0, min(100.0, 100.0 * (s2.busy - s1.busy) / (s2.t - s1.t)))
        return mg
