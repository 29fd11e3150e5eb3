"""A PodResources v1 server over a callable: the simulated kubelet of the demo and tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc

from scheduler.podresources.devices import PodDevices
from scheduler.podresources.v1 import api_pb2, api_pb2_grpc

MAX_UNIX_PATH = 107  # sun_path holds 108 bytes including the terminating NUL


def to_response(pods: Sequence[PodDevices]) -> api_pb2.ListPodResourcesResponse:
    """PodDevices as the kubelet's List response (containers grouped per pod, in order)."""
    by_pod: dict[tuple[str, str], api_pb2.PodResources] = {}
    for p in pods:
        msg = by_pod.get((p.namespace, p.pod))
        if msg is None:
            msg = by_pod[(p.namespace, p.pod)] = api_pb2.PodResources(
                name=p.pod, namespace=p.namespace
            )
        resources: dict[str, list[str]] = {}
        for d in p.devices:
            resources.setdefault(d.resource_name, []).append(d.raw)
        msg.containers.append(
            api_pb2.ContainerResources(
                name=p.container,
                devices=[
                    api_pb2.ContainerDevices(resource_name=r, device_ids=ids)
                    for r, ids in resources.items()
                ],
            )
        )
    return api_pb2.ListPodResourcesResponse(pod_resources=list(by_pod.values()))


class _Lister(api_pb2_grpc.PodResourcesListerServicer):  # type: ignore[misc]
    def __init__(self, source: Callable[[], Sequence[PodDevices]]) -> None:
        self.source = source

    def List(self, request: Any, context: Any) -> api_pb2.ListPodResourcesResponse:
        return to_response(self.source())


def serve_pod_resources(
    socket_path: str, source: Callable[[], Sequence[PodDevices]], workers: int = 2
) -> grpc.Server:
    """Start a gRPC server answering ``v1.PodResourcesLister/List`` from ``source()``.

    Returns the started server (``server.stop(None)`` to stop). Raises: ValueError for a
    socket path longer than a unix socket allows; RuntimeError when it cannot bind.
    """
    if len(socket_path.encode()) > MAX_UNIX_PATH:
        raise ValueError(f"unix socket path too long ({len(socket_path)} > {MAX_UNIX_PATH})")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(_Lister(source), server)  # type: ignore[no-untyped-call]
    if server.add_insecure_port(f"unix://{socket_path}") == 0:
        raise RuntimeError(f"cannot bind unix socket {socket_path}")
    server.start()
    return server
