"""MPS clients through nvmlDeviceGetMPSComputeRunningProcesses (collector + fake pynvml)."""

from __future__ import annotations

from typing import Any

from scheduler.jobs import fleet_resolver
from scheduler.model import Mode
from scheduler.nvml import Collector
from scheduler.nvml_fake import NVML_ERROR_FUNCTION_NOT_FOUND, FakeNvml, NVMLError
from scheduler.simfleet import NodeSpec, SimFleet, build_fleet
from tests.scheduler.conftest import Clock


def _fleet(clock: Clock) -> SimFleet:
    f = build_fleet([NodeSpec("n", "A100-80GB", 2)], clock=clock, seed=3)
    f.place("llama", "n", 0, mem_mib=20000, mode=Mode.mps, share=0.5)
    f.place("qwen", "n", 0, mem_mib=10000, mode=Mode.mps, share=0.5)
    f.place("mistral", "n", 1, mem_mib=10000)
    return f


def test_fake_nvml_lists_the_mps_server_and_its_clients_apart(clock: Clock) -> None:
    f = _fleet(clock)
    nv = FakeNvml(f, "n")
    nv.nvmlInit()
    h0, h1 = nv.nvmlDeviceGetHandleByIndex(0), nv.nvmlDeviceGetHandleByIndex(1)
    g0 = f.gpu("n", 0)
    assert [p.pid for p in nv.nvmlDeviceGetComputeRunningProcesses(h0)] == [g0.mps_server_pid]
    clients = nv.nvmlDeviceGetMPSComputeRunningProcesses(h0)
    assert sorted(p.pid for p in clients) == sorted(p.pid for p in g0.processes)
    assert nv.nvmlDeviceGetMPSComputeRunningProcesses(h1) == []
    assert nv.nvmlSystemGetProcessName(g0.mps_server_pid).endswith("nvidia-cuda-mps-server")


def test_collector_reports_mps_clients_mapped_to_pods_not_the_server(clock: Clock) -> None:
    f = _fleet(clock)
    f.set_load("llama", 0.8)
    nv = FakeNvml(f, "n")
    nv.nvmlInit()
    c = Collector(nv, "n", 5.0, "on-demand", fleet_resolver(f))
    c.collect(clock())
    clock.tick(5)
    r = c.collect(clock())
    got = sorted((p.model, p.gpu_uuid == f.gpu("n", 0).uuid) for p in r.processes)
    assert got == [("llama", True), ("mistral", False), ("qwen", True)]
    assert all(p.pod and p.pod_uid for p in r.processes)
    assert r.faults == []


class _OldDriver(FakeNvml):
    """A driver without the MPS call: pynvml raises FUNCTION_NOT_FOUND."""

    calls = 0

    def nvmlDeviceGetMPSComputeRunningProcesses(self, h: Any) -> list[Any]:
        type(self).calls += 1
        raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)


def test_a_driver_without_the_mps_call_is_not_a_fault(clock: Clock) -> None:
    f = _fleet(clock)
    nv = _OldDriver(f, "n")
    nv.nvmlInit()
    c = Collector(nv, "n", 5.0)
    r1 = c.collect(clock())
    r2 = c.collect(clock())
    assert r1.faults == r2.faults == [] and _OldDriver.calls == 1  # asked once, then not
    # the MPS server is all NVML shows without the call; it is not in a pod
    assert [p.pod for p in r2.processes if p.gpu_uuid == f.gpu("n", 0).uuid] == [None]
