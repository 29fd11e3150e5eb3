"""The join: PodResources devices + MIG readings + pods + node labels -> holdings."""

from __future__ import annotations

import pytest

from scheduler.agent.join import Holding, MigInfo, join, mig_fraction
from scheduler.podmap import PodInfo
from scheduler.podresources.devices import PodDevices, parse_device_id

G1, G2, G3 = (f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd" for i in (1, 2, 3))
M3G, M2G, A30_2G = (f"MIG-1000000{i}-aaaa-bbbb-cccc-dddddddddddd" for i in (1, 2, 3))
MIG = {
    M3G: MigInfo(M3G, G1, "H100-80GB", "3g.40gb"),
    M2G: MigInfo(M2G, G1, "H100-80GB", "2g.20gb"),
    A30_2G: MigInfo(A30_2G, G3, "A30", "2g.12gb"),
}


def pod(ns: str, name: str, model: str | None = None) -> PodInfo:
    labels = {"costctl.io/model": model} if model else {}
    return PodInfo(f"uid-{name}", ns, name, labels, "ReplicaSet", f"{name}-rs")


def holds(ns: str, name: str, *ids: str, resource: str = "nvidia.com/gpu") -> PodDevices:
    refs = tuple(r for i in ids if (r := parse_device_id(i, resource)) is not None)
    return PodDevices(ns, name, "server", refs)


def run(devices: list[PodDevices], pods: list[PodInfo], labels: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return join(
        node="n1",
        pod_devices=devices,
        pods=pods,
        node_labels=labels or {},
        mig_devices=MIG,
        model_label="costctl.io/model",
    )


def by_pod(holdings: list[Holding]) -> dict[str, tuple[str, str, str | None, float]]:
    return {h.pod: (h.device_uuid, h.mode, h.profile, h.fraction) for h in holdings}


def test_whole_gpu_and_mig_devices() -> None:
    o = run(
        [holds("s", "a", G2), holds("s", "b", M3G), holds("s", "c", M2G), holds("s", "d", A30_2G)],
        [pod("s", "a", "llama"), pod("s", "b", "llama"), pod("s", "c", "mistral"), pod("s", "d")],
    )
    assert by_pod(o.holdings) == {
        "a": (G2, "gpu", None, 1.0),
        "b": (M3G, "mig", "3g.40gb", pytest.approx(3 / 7)),  # 3 SM slices of 7
        "c": (M2G, "mig", "2g.20gb", pytest.approx(2 / 7)),
        "d": (A30_2G, "mig", "2g.12gb", pytest.approx(2 / 4)),  # A30: of 4
    }
    mig_b = next(h for h in o.holdings if h.pod == "b")
    assert mig_b.gpu_uuid == G1 and mig_b.model == "llama" and mig_b.pod_uid == "uid-b"
    assert next(h for h in o.holdings if h.pod == "d").model == "s/d-rs"  # no label: workload


@pytest.mark.parametrize(
    ("labels", "mode", "fa", "fb"),
    [
        # replicas label 4: a holds 1 id -> 1/4, b holds 2 ids -> 2/4
        ({"nvidia.com/gpu.replicas": "4", "nvidia.com/gpu.sharing-strategy": "mps"},
         "mps", 1 / 4, 2 / 4),
        ({"nvidia.com/gpu.replicas": "4", "nvidia.com/gpu.sharing-strategy": "time-slicing"},
         "timeslice", 1 / 4, 2 / 4),
        # no strategy label: time-slicing is the device plugin's default sharing
        ({"nvidia.com/gpu.replicas": "8"}, "timeslice", 1 / 8, 2 / 8),
        # no replicas label: 1 / the 3 replica ids handed out on that GPU this tick
        ({}, "timeslice", 1 / 3, 2 / 3),
    ],
    ids=["mps", "time-slicing", "no-strategy", "no-replicas-label"],
)  # fmt: skip
def test_shared_replicas(labels: dict[str, str], mode: str, fa: float, fb: float) -> None:
    o = run(
        [holds("s", "a", f"{G2}::0"), holds("s", "b", f"{G2}::1", f"{G2}::2")],
        [pod("s", "a", "m1"), pod("s", "b", "m2")],
        labels,
    )
    assert by_pod(o.holdings) == {
        "a": (G2, mode, None, pytest.approx(fa)),
        "b": (G2, mode, None, pytest.approx(fb)),
    }
    assert any("no nvidia.com/gpu.replicas label" in n for n in o.notes) is (not labels)


def test_a_shared_mig_device_splits_its_slice() -> None:
    o = run(
        [holds("s", "a", f"{M3G}::0", resource="nvidia.com/mig-3g.40gb")],
        [pod("s", "a", "m")],
        {"nvidia.com/mig-3g.40gb.replicas": "2"},
    )
    assert by_pod(o.holdings) == {"a": (M3G, "mig", "3g.40gb", pytest.approx(3 / 7 / 2))}


def test_unknown_pods_and_mig_devices_wait() -> None:
    o = run([holds("s", "ghost", G1), holds("s", "a", "MIG-ffffffff-0000")], [pod("s", "a")])
    assert o.holdings == []
    assert any("s/ghost: not listed by the API yet" in n for n in o.notes)
    assert any("MIG device not seen by NVML" in n for n in o.notes)


def test_one_holding_per_device_and_container() -> None:
    two = PodDevices("s", "a", "server", (parse_device_id(G1), parse_device_id(G2)))  # type: ignore[arg-type]
    side = PodDevices("s", "a", "sidecar", (parse_device_id(G3),))  # type: ignore[arg-type]
    o = run([two, side], [pod("s", "a", "m")])
    assert sorted(h.key for h in o.holdings) == [
        (G1, "s", "a", "server"),
        (G2, "s", "a", "server"),
        (G3, "s", "a", "sidecar"),
    ]


@pytest.mark.parametrize(
    ("gpu_type", "profile", "fraction"),
    [
        ("A100-80GB", "1g.10gb", 1 / 7),
        ("A100-40GB", "7g.40gb", 1.0),
        ("H200-141GB", "4g.71gb", 4 / 7),
        ("A30", "1g.6gb", 1 / 4),
        ("A30", "4g.24gb", 1.0),
        ("B200", "2g.45gb", 2 / 7),  # not in the catalog: "<n>g" / 7
    ],
)
def test_mig_fraction(gpu_type: str, profile: str, fraction: float) -> None:
    assert mig_fraction(gpu_type, profile) == pytest.approx(fraction)
