"""Typed client of the kubelet PodResources v1 API (gRPC on a unix socket).

Device ids are parsed by ``scheduler.podresources.devices``. Only resources named
``nvidia.com/...`` are read; DRA claims (``dynamic_resources``) are not mapped to devices today.
"""

from __future__ import annotations

import logging

import grpc

from scheduler.podresources.devices import DeviceRef, PodDevices, parse_device_id
from scheduler.podresources.v1 import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)
RESOURCE_PREFIX = "nvidia.com/"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # the kubelet's own limit for List responses


class PodResourcesError(RuntimeError):
    """The kubelet's pod-resources endpoint could not be read (socket, timeout, protocol)."""


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
            stub = api_pb2_grpc.PodResourcesListerStub(channel)  # type: ignore[no-untyped-call]
            resp = stub.List(api_pb2.ListPodResourcesRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        name = code.name if code is not None else "UNKNOWN"
        raise PodResourcesError(f"kubelet pod-resources {socket_path}: {name}: {details}") from exc
    return _from_response(resp)
