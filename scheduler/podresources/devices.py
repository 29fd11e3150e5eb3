"""Device ids of the kubelet's PodResources as the NVIDIA device plugin writes them (pure).

A whole GPU ``GPU-<uuid>``, a MIG device ``MIG-<uuid>`` (or the pre-R470
``MIG-GPU-<uuid>/<gi>/<ci>``), and a shared replica of either (time-slicing or MPS)
``<id>::<n>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_ID = re.compile(r"^(?P<uuid>(?P<kind>GPU|MIG)-[0-9A-Za-z/_.-]+?)(?:::(?P<replica>\d+))?$")


@dataclass(frozen=True)
class DeviceRef:
    """One device id of a container: the NVML UUID it names and its shared-replica index."""

    raw: str
    resource_name: str
    kind: Literal["gpu", "mig"]
    uuid: str
    replica: int | None = None

    @property
    def shared(self) -> bool:
        """True for a time-slicing / MPS replica id (``::<n>``)."""
        return self.replica is not None


@dataclass(frozen=True)
class PodDevices:
    """The NVIDIA devices assigned to one container of one pod."""

    namespace: str
    pod: str
    container: str
    devices: tuple[DeviceRef, ...]


def parse_device_id(raw: str, resource_name: str = "nvidia.com/gpu") -> DeviceRef | None:
    """A device plugin id as a DeviceRef; None when it is not a GPU or MIG id.

    Details: ``GPU-<uuid>`` -> gpu, ``MIG-<uuid>`` -> mig, a trailing ``::<n>`` -> replica n.
    """
    m = _ID.match(raw.strip())
    if m is None:
        return None
    kind: Literal["gpu", "mig"] = "mig" if m.group("kind") == "MIG" else "gpu"
    replica = m.group("replica")
    return DeviceRef(
        raw, resource_name, kind, m.group("uuid"), None if replica is None else int(replica)
    )
