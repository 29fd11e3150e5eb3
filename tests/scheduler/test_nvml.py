"""The real collector over the fake pynvml: readings, MIG, faults, pod mapping."""

from __future__ import annotations

import pytest

from scheduler.config import SchedulerConfig
from scheduler.jobs import fleet_resolver
from scheduler.model import Mode
from scheduler.nvml import Collector, load_nvml
from scheduler.nvml_fake import NVML_ERROR_GPU_IS_LOST, FakeNvml, NVMLError
from scheduler.podmap import PodRef, PodResolver, pod_uid_from_cgroup
from scheduler.simfleet import NodeSpec, SimFleet, build_fleet
from tests.scheduler.conftest import Clock


def _fleet(clock: Clock) -> SimFleet:
    f = build_fleet(
        [
            NodeSpec("h", "H100-80GB", 2, mig=(("3g", "2g", "2g"), None)),
            NodeSpec("a", "A100-80GB", 1, mig=(("4g", "3g"),)),
        ],
        clock=clock,
        seed=1,
    )
    f.place("llama", "h", 0, mem_mib=30000, mode=Mode.mig, profile="3g.40gb")
    f.place("mistral", "h", 0, mem_mib=15000, mode=Mode.mig, profile="2g")
    f.place("mixtral", "h", 1, mem_mib=40000, mode=Mode.mps, share=0.4)
    f.place("llama", "h", 1, mem_mib=20000, mode=Mode.mps, share=0.3)
    f.place("qwen", "a", 0, mem_mib=30000, mode=Mode.mig, profile="4g")
    return f


def _collector(f: SimFleet, node: str) -> Collector:
    nv = FakeNvml(f, node)
    nv.nvmlInit()
    return Collector(nv, node, 5.0, "spot", fleet_resolver(f))


def test_readings_follow_load_and_processes_map_to_pods(clock: Clock) -> None:
    f = _fleet(clock)
    f.set_load("llama", 0.5)
    f.set_load("mistral", 1.0)
    f.set_load("mixtral", 0.25)
    c = _collector(f, "h")
    for _ in range(3):  # GPM needs two samples; energy needs elapsed time
        r = c.collect(clock())
        clock.tick(5)
    phys = {s.gpu_index: s for s in r.samples if s.parent_uuid is None}
    mig = {s.mig_profile: s for s in r.samples if s.parent_uuid is not None}
    assert set(mig) == {"3g.40gb", "2g.20gb"} and len(r.instances) == 3
    assert {(i.profile, i.start, i.size) for i in r.instances} == {
        ("2g.20gb", 0, 2),
        ("2g.20gb", 2, 2),
        ("3g.40gb", 4, 4),
    }
    assert mig["3g.40gb"].sm_util == pytest.approx(50.0)  # GPM: % of the instance
    # MIG parent: utilisation is NOT_SUPPORTED (recorded), SM% recomputed from instances
    assert "utilization: Not Supported" in (phys[0].fault or "")
    assert phys[0].sm_util == pytest.approx(50 * 3 / 7 + 100 * 2 / 7, abs=0.5)
    assert phys[0].pricing_class == "spot" and phys[0].energy_j and phys[0].energy_j > 0
    procs = {(p.model, p.device_uuid == p.gpu_uuid): p for p in r.processes}
    mig_llama = procs[("llama", False)]
    assert mig_llama.sm_util == pytest.approx(50 * 3 / 7)  # % of the WHOLE GPU
    assert mig_llama.pod and mig_llama.pod.startswith("llama-") and mig_llama.pod_uid
    assert mig_llama.mem_used_mib == pytest.approx(30000)
    mps_mixtral = procs[("mixtral", True)]
    assert mps_mixtral.sm_util == pytest.approx(10.0, abs=3.0)  # 0.25 x 40%, noise ±2% x 40
    assert phys[1].sm_util == pytest.approx(10 + 15, abs=5)
    assert phys[1].fault is None


def test_a100_mig_has_no_per_instance_utilisation_and_says_so(clock: Clock) -> None:
    f = _fleet(clock)
    f.set_load("qwen", 0.8)
    c = _collector(f, "a")
    c.collect(clock())
    clock.tick(5)
    r = c.collect(clock())
    inst = [s for s in r.samples if s.parent_uuid is not None]
    assert {s.mig_profile for s in inst} == {"4g.40gb", "3g.40gb"}
    assert all(s.sm_util is None for s in inst)
    (phys,) = [s for s in r.samples if s.parent_uuid is None]
    assert phys.sm_util is None and phys.mem_used_mib == pytest.approx(30000)
    assert "utilization: Not Supported" in (phys.fault or "")
    (p,) = r.processes
    assert p.model == "qwen" and p.sm_util is None


def test_a_lost_gpu_is_recorded_and_the_others_are_still_sampled(clock: Clock) -> None:
    f = _fleet(clock)
    c = _collector(f, "h")
    c.collect(clock())
    f.fail("h", 0, NVML_ERROR_GPU_IS_LOST)
    clock.tick(5)
    r = c.collect(clock())
    phys = {s.gpu_index: s for s in r.samples if s.parent_uuid is None}
    assert phys[0].fault == "GPU is lost" and phys[0].sm_util is None
    assert phys[0].interval_s == 5.0  # a lost GPU is still paid for
    assert phys[1].fault is None and phys[1].sm_util is not None
    assert any("gpu 0: GPU is lost" in x for x in r.faults)
    assert not [p for p in r.processes if p.gpu_uuid == phys[0].gpu_uuid]


def test_lost_before_first_reading_is_only_logged(clock: Clock) -> None:
    f = _fleet(clock)
    f.fail("h", 1, NVML_ERROR_GPU_IS_LOST)
    r = _collector(f, "h").collect(clock())
    assert [s.gpu_index for s in r.samples if s.parent_uuid is None] == [0]
    assert r.faults[-1] == "gpu 1: GPU is lost"


def test_fake_placements_match_the_lgipp_table(clock: Clock) -> None:
    nv = FakeNvml(_fleet(clock), "h")
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(0)

    class Count:
        value = 0

    class P:
        start = size = 0

    count = Count()
    nv.nvmlDeviceGetGpuInstancePossiblePlacements(h, 9, None, count)  # 3g: {0,4}:4
    out = [P() for _ in range(count.value)]
    nv.nvmlDeviceGetGpuInstancePossiblePlacements(h, 9, out, count)
    assert [(p.start, p.size) for p in out] == [(0, 4), (4, 4)]
    info = nv.nvmlDeviceGetGpuInstanceProfileInfo(h, 0)  # NVML_GPU_INSTANCE_PROFILE_1_SLICE
    assert (info.id, info.sliceCount, info.instanceCount, info.memorySizeMB) == (19, 1, 7, 9856)
    with pytest.raises(NVMLError):
        nv.nvmlDeviceGetUtilizationRates(h)


def test_backend_selection() -> None:
    with pytest.raises(ValueError, match="needs a SimFleet"):
        load_nvml(SchedulerConfig())
    import pynvml

    assert load_nvml(SchedulerConfig(nvml_backend="pynvml")) is pynvml
    with pytest.raises(AssertionError, match="Must not be called!"):
        pynvml.nvmlInit()


@pytest.mark.parametrize(
    ("text", "uid"),
    [
        (
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            "1a2b3c4d_0000_1111_2222_333344445555.slice/cri-containerd-ab.scope",
            "1a2b3c4d-0000-1111-2222-333344445555",
        ),
        (
            "12:memory:/kubepods/besteffort/pod1a2b3c4d-0000-1111-2222-333344445555/0123abcd",
            "1a2b3c4d-0000-1111-2222-333344445555",
        ),
        ("0::/system.slice/containerd.service", None),
    ],
    ids=["cgroup-v2-systemd", "cgroup-v1", "not-a-pod"],
)
def test_pod_uid_from_cgroup(text: str, uid: str | None) -> None:
    assert pod_uid_from_cgroup(text) == uid


def test_resolver_refreshes_the_pod_index_on_a_miss() -> None:
    calls = []
    cg = "0::/kubepods/pod1a2b3c4d-0000-1111-2222-333344445555/x"

    def pods() -> dict[str, PodRef]:
        calls.append(1)
        return {"1a2b3c4d-0000-1111-2222-333344445555": PodRef("u", "ns", "p", "llama")}

    r = PodResolver(lambda pid: cg if pid == 1 else None, pods)
    assert r.resolve(1) == PodRef("u", "ns", "p", "llama")
    assert r.resolve(1) is not None and len(calls) == 1
    assert r.resolve(2) is None
