"""Map a GPU process to its pod and model: /proc/<pid>/cgroup -> pod UID -> workload.

cgroup path forms read (one line of /proc/<pid>/cgroup each):

- cgroup v1, cgroupfs driver: ``4:devices:/kubepods/burstable/pod<uid>/<container id>``
  (Guaranteed pods: ``/kubepods/pod<uid>/<id>``);
- cgroup v1 or v2, systemd driver: ``0::/kubepods.slice/kubepods-burstable.slice/
  kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`` (CRI-O:
  ``crio-<id>.scope``; its monitor ``crio-conmon-<id>.scope``; docker ``docker-<id>.scope``);
- cgroup v2, cgroupfs driver: ``0::/kubepods/besteffort/pod<uid>/<id>``;
- a path seen through a cgroup namespace (``0::/../../kubepods-...``) reads the same.

The pod UID is what identifies the pod; the container id is kept for diagnostics.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_POD_UID = re.compile(rf"pod({_UID})")
_CONTAINER = re.compile(
    rf"pod{_UID}(?:\.slice)?/(?:(?P<rt>cri-containerd|crio-conmon|crio|docker|cri-o)-)?"
    r"(?P<id>[0-9a-f]{12,64})(?:\.scope)?(?:/|$)"
)
_RUNTIMES = {
    "cri-containerd": "containerd",
    "crio": "cri-o",
    "cri-o": "cri-o",
    "crio-conmon": "cri-o-conmon",
    "docker": "docker",
}

MODEL_LABEL = "costctl.io/model"


@dataclass(frozen=True)
class PodRef:
    """A pod running a model (``model`` from its model label, see scheduler.agent.join)."""

    uid: str
    namespace: str
    pod: str
    model: str | None


@dataclass(frozen=True)
class CgroupRef:
    """What a /proc/<pid>/cgroup text says: the pod UID, container id and runtime if known."""

    pod_uid: str
    container_id: str | None = None
    runtime: str | None = None


@dataclass(frozen=True)
class PodInfo:
    """A pod of this node as the Kubernetes API reports it (the fields the agent reads)."""

    uid: str
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    owner_kind: str | None = None
    owner_name: str | None = None


class PodLister(Protocol):
    """The pods of one node and that node's labels (scheduler.kube.pods or a simulation)."""

    def pods(self) -> list[PodInfo]:
        """Every pod scheduled on this node."""
        ...

    def node_labels(self) -> dict[str, str]:
        """This node's labels (GPU feature discovery's nvidia.com/gpu.* among them)."""
        ...


def parse_cgroup(text: str) -> CgroupRef | None:
    """The pod of a /proc/<pid>/cgroup text (v1 or v2, systemd or cgroupfs), or None."""
    for line in text.splitlines():
        m = _POD_UID.search(line)
        if m is None:
            continue
        uid = m.group(1).replace("_", "-")
        c = _CONTAINER.search(line)
        if c is None:
            return CgroupRef(uid)
        rt = c.group("rt")
        return CgroupRef(uid, c.group("id"), _RUNTIMES.get(rt, "containerd") if rt else None)
    return None


def pod_uid_from_cgroup(text: str) -> str | None:
    """The pod UID in a /proc/<pid>/cgroup text, or None outside a pod."""
    ref = parse_cgroup(text)
    return ref.pod_uid if ref else None


def proc_cgroup_reader(proc_root: Path = Path("/proc")) -> Callable[[int], str | None]:
    """Reads <proc_root>/<pid>/cgroup (None when the process is gone or not visible)."""

    def read(pid: int) -> str | None:
        try:
            return (proc_root / str(pid) / "cgroup").read_text()
        except OSError:
            return None

    return read


class PodResolver:
    """pid -> PodRef through the cgroup and a pod-UID index.

    ``refresh_on_miss``: re-list the pods when a UID is unknown (the collector alone); the
    agent lists once per tick and calls ``set_pods`` instead.
    """

    def __init__(
        self,
        read_cgroup: Callable[[int], str | None],
        list_pods: Callable[[], Mapping[str, PodRef]],
        *,
        refresh_on_miss: bool = True,
    ) -> None:
        """``list_pods``: the pods of this node by UID (kubelet or API server)."""
        self.read_cgroup = read_cgroup
        self.list_pods = list_pods
        self.refresh_on_miss = refresh_on_miss
        self.pods: Mapping[str, PodRef] = {}

    def set_pods(self, pods: Mapping[str, PodRef]) -> None:
        """Replace the pod index (one listing per agent tick)."""
        self.pods = pods

    def uid_of(self, pid: int) -> str | None:
        """The pod UID of ``pid`` (None outside a pod or when the process is gone)."""
        text = self.read_cgroup(pid)
        return pod_uid_from_cgroup(text) if text else None

    def resolve(self, pid: int) -> PodRef | None:
        """The pod of ``pid``; a bare PodRef(uid) if the pod is unknown; None outside a pod."""
        uid = self.uid_of(pid)
        if uid is None:
            return None
        if uid not in self.pods and self.refresh_on_miss:
            self.pods = self.list_pods()
        return self.pods.get(uid) or PodRef(uid, "", "", None)
