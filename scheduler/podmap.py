"""Map a GPU process to its pod and model: /proc/<pid>/cgroup -> pod UID -> workload."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

# cgroup v1: /kubepods/burstable/pod<uid>/<container>;
# cgroup v2 + systemd: kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope
_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
)

MODEL_LABEL = "costctl.io/model"


@dataclass(frozen=True)
class PodRef:
    """A pod running a model (``model`` from its ``costctl.io/model`` label)."""

    uid: str
    namespace: str
    pod: str
    model: str | None


def pod_uid_from_cgroup(text: str) -> str | None:
    """The pod UID in a /proc/<pid>/cgroup text (v1 or v2, systemd or cgroupfs), or None."""
    m = _POD_UID.search(text)
    return m.group(1).replace("_", "-") if m else None


def proc_cgroup_reader(proc_root: Path = Path("/proc")) -> Callable[[int], str | None]:
    """Reads /proc/<pid>/cgroup (None when the process is gone or not visible)."""

    def read(pid: int) -> str | None:
        try:
            return (proc_root / str(pid) / "cgroup").read_text()
        except OSError:
            return None

    return read


class PodResolver:
    """pid -> PodRef through the cgroup and a pod-UID index (refreshed on a miss)."""

    def __init__(
        self,
        read_cgroup: Callable[[int], str | None],
        list_pods: Callable[[], Mapping[str, PodRef]],
    ) -> None:
        """``list_pods``: the pods of this node by UID (kubelet or API server)."""
        self.read_cgroup = read_cgroup
        self.list_pods = list_pods
        self.pods: Mapping[str, PodRef] = {}

    def resolve(self, pid: int) -> PodRef | None:
        """The pod of ``pid``; a bare PodRef(uid) if the pod is unknown; None outside a pod."""
        text = self.read_cgroup(pid)
        uid = pod_uid_from_cgroup(text) if text else None
        if uid is None:
            return None
        if uid not in self.pods:
            self.pods = self.list_pods()
        return self.pods.get(uid) or PodRef(uid, "", "", None)
