"""Typed client of the kubelet PodResources v1 API (gRPC on a unix socket).

Device ids as the NVIDIA device plugin reports them: a whole GPU ``GPU-<uuid>``, a MIG
device ``MIG-<uuid>`` (or the pre-R470 ``MIG-GPU-<uuid>/<gi>/<ci>``), and a shared replica of
either (time-slicing or MPS) ``<id>::<n>``. Only resources named ``nvidia.com/...`` are read;
DRA claims (``dynamic_resources``) are not mapped to devices today.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

import grpc

from scheduler.podresources.v1 import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)
RESOURCE_PREFIX = "nvidia.com/"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # the kubelet's own limit for List responses
_ID = re.compile(r"^(?P<uuid>(?P<kind>GPU|MIG)-[0-9A-Za-z/_.-]+?)(?:::(?P<replica>\d+))?$")


class PodResourcesError(RuntimeError):
    """The kubelet's pod-resources endpoint could not be read (socket, timeout, protocol)."""


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
    return DeviceRef(raw, resource_name, kind, m.group("uuid"), None if replica is None else int(replica))


def _from_response(resp: api_pb2.ListPodResourcesResponse) -> list[PodDevices]:
    out: list[PodDevices] = []
    for pod in resp.pod_resources:
        for c in pod.containers:
            refs: list[DeviceRef] = []
            for d in c.devices:
                if not d.resource_name.startswith(RESOURCE_PREFIX):
                    continue
                for raw in d.device_ids:
                    ref = parse_device_id(raw, d.resource_name)
                    if ref is None:
                        log.warning("pod %s/%s: unknown device id %r", pod.namespace, pod.name, raw)
                    else:
                        refs.append(ref)
            if refs:
                out.append(PodDevices(pod.namespace, pod.name, c.name, tuple(refs)))
    return out


def list_pod_devices(socket_path: str, timeout: float = 5.0) -> list[PodDevices]:
    """Every container of this node that holds NVIDIA devices, from the kubelet.

    Raises: PodResourcesError when the socket is missing or refuses, the call times out or
    the kubelet answers with an error status.
    """
    target = socket_path if socket_path.startswith("unix:") else f"unix://{socket_path}"
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    try:
        with grpc.insecure_channel(target, options=options) as channel:
            stub = api_pb2_grpc.PodResourcesListerStub(channel)
            resp = stub.List(api_pb2.ListPodResourcesRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        name = code.name if code is not None else "UNKNOWN"
        raise PodResourcesError(f"kubelet pod-resources {socket_path}: {name}: {details}") from exc
    return _from_response(resp)
