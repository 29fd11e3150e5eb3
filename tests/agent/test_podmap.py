"""pid -> pod: /proc/<pid>/cgroup for cgroup v1/v2, cgroupfs/systemd, containerd/CRI-O."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.podmap import (
    CgroupRef,
    PodRef,
    PodResolver,
    parse_cgroup,
    pod_uid_from_cgroup,
    proc_cgroup_reader,
)

UID = "3f1c9a52-6b7d-4e8f-9a0b-1c2d3e4f5a6b"
U_ = UID.replace("-", "_")
CID = "a" * 64

CASES = [
    # (id, /proc/<pid>/cgroup text, expected)
    ("v2-systemd-containerd",
     f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice/"
     f"cri-containerd-{CID}.scope\n",
     CgroupRef(UID, CID, "containerd")),
    ("v2-systemd-crio",
     f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}.slice/"
     f"crio-{CID}.scope\n",
     CgroupRef(UID, CID, "cri-o")),
    ("v2-systemd-crio-conmon",
     f"0::/kubepods.slice/kubepods-pod{U_}.slice/crio-conmon-{CID}.scope\n",
     CgroupRef(UID, CID, "cri-o-conmon")),
    ("v2-systemd-guaranteed",  # Guaranteed QoS: no qos slice
     f"0::/kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{CID}.scope\n",
     CgroupRef(UID, CID, "containerd")),
    ("v2-cgroupfs",
     f"0::/kubepods/besteffort/pod{UID}/{CID}\n",
     CgroupRef(UID, CID, None)),
    ("v1-cgroupfs-containerd",
     f"12:pids:/kubepods/burstable/pod{UID}/{CID}\n11:memory:/kubepods/burstable/pod{UID}/"
     f"{CID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n",
     CgroupRef(UID, CID, None)),
    ("v1-cgroupfs-guaranteed",
     f"4:devices:/kubepods/pod{UID}/{CID}\n",
     CgroupRef(UID, CID, None)),
    ("v1-systemd-containerd",
     "12:devices:/system.slice/containerd.service\n"  # a controller outside the pod first
     f"11:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice/"
     f"cri-containerd-{CID}.scope\n",
     CgroupRef(UID, CID, "containerd")),
    ("v1-systemd-crio",
     f"9:cpu,cpuacct:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}"
     f".slice/crio-{CID}.scope\n",
     CgroupRef(UID, CID, "cri-o")),
    ("v2-cgroupns-relative",  # read from inside a container's cgroup namespace
     f"0::/../../kubepods-besteffort-pod{U_}.slice/cri-containerd-{CID}.scope\n",
     CgroupRef(UID, CID, "containerd")),
    ("kind-nested-kubelet-slice",
     f"0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
     f"kubelet-kubepods-besteffort-pod{U_}.slice/cri-containerd-{CID}.scope\n",
     CgroupRef(UID, CID, "containerd")),
    ("pod-level-only",  # the pause process or the pod cgroup itself
     f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice\n",
     CgroupRef(UID)),
    ("host-service", "0::/system.slice/nvidia-mps-server.service\n", None),
    ("v1-host", "12:memory:/user.slice\n1:name=systemd:/user.slice/session-1.scope\n", None),
    ("empty", "", None),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cgroup_text_names_the_pod(text: str, expected: CgroupRef | None) -> None:
    assert parse_cgroup(text) == expected
    assert pod_uid_from_cgroup(text) == (expected.pod_uid if expected else None)


def _proc(root: Path, pid: int, text: str) -> None:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "cgroup").write_text(text)


def test_resolver_reads_a_fixture_proc_tree(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid, (_, text, _) in enumerate(CASES, start=100):
        _proc(proc, pid, text)
    pods = {UID: PodRef(UID, "serving", "llama-0", "llama")}
    resolver = PodResolver(proc_cgroup_reader(proc), lambda: pods)
    got = {pid: resolver.resolve(pid) for pid in range(100, 100 + len(CASES))}
    in_pod = [c[2] is not None for c in CASES]
    assert [r is not None for r in got.values()] == in_pod
    assert {r for r in got.values() if r} == {pods[UID]}
    assert resolver.resolve(99999) is None  # a process that ended: no /proc entry


def test_agent_resolver_never_lists_on_a_miss(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    _proc(proc, 7, CASES[0][1])
    calls: list[int] = []

    def list_pods() -> dict[str, PodRef]:
        calls.append(1)
        return {}

    r = PodResolver(proc_cgroup_reader(proc), list_pods, refresh_on_miss=False)
    assert r.resolve(7) == PodRef(UID, "", "", None)  # a pod the API has not listed yet
    assert calls == []
    r.set_pods({UID: PodRef(UID, "ns", "p", "m")})
    assert r.resolve(7) == PodRef(UID, "ns", "p", "m")
