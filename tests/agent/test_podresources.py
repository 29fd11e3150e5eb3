"""The kubelet PodResources v1 client against real gRPC servers on unix sockets."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from scheduler.podresources import (
    DeviceRef,
    PodDevices,
    PodResourcesError,
    list_pod_devices,
    parse_device_id,
    serve_pod_resources,
)

G1 = "GPU-5c2b1a3e-0d1f-4f6a-9b7e-1a2b3c4d5e6f"
G2 = "GPU-8f2c1d90-3e5a-4b17-9c2e-5da9abb51763"
M1 = "MIG-0b7e3f9a-4c2d-5e8f-a1b2-c3d4e5f60718"


@pytest.mark.parametrize(
    ("raw", "kind", "uuid", "replica"),
    [
        (G1, "gpu", G1, None),  # whole GPU
        (M1, "mig", M1, None),  # MIG device (R470+ UUID)
        (f"{G2}::3", "gpu", G2, 3),  # time-slicing / MPS replica 3
        (f"{M1}::0", "mig", M1, 0),  # a shared MIG device
        ("MIG-GPU-5c2b1a3e-0d1f-4f6a-9b7e-1a2b3c4d5e6f/1/0", "mig",
         "MIG-GPU-5c2b1a3e-0d1f-4f6a-9b7e-1a2b3c4d5e6f/1/0", None),  # pre-R470 MIG id
    ],
    ids=["gpu", "mig", "replica", "mig-replica", "old-mig"],
)  # fmt: skip
def test_device_ids_parse(raw: str, kind: str, uuid: str, replica: int | None) -> None:
    ref = parse_device_id(raw)
    assert ref is not None and (ref.kind, ref.uuid, ref.replica) == (kind, uuid, replica)
    assert ref.shared is (replica is not None)


@pytest.mark.parametrize("raw", ["0", "nvidia0", "GPU", "GPU-", "GPU-abc::x", ""])
def test_other_device_ids_are_not_gpus(raw: str) -> None:
    assert parse_device_id(raw) is None


FIXTURE = [
    PodDevices("serving", "llama-0", "server", (DeviceRef(G1, "nvidia.com/gpu", "gpu", G1),)),
    PodDevices(
        "serving",
        "mistral-0",
        "server",
        (DeviceRef(M1, "nvidia.com/mig-3g.40gb", "mig", M1),),
    ),
    PodDevices(
        "batch",
        "mixtral-0",
        "worker",
        (
            DeviceRef(f"{G2}::0", "nvidia.com/gpu", "gpu", G2, 0),
            DeviceRef(f"{G2}::5", "nvidia.com/gpu", "gpu", G2, 5),
        ),
    ),
]


@pytest.fixture
def kubelet(short_dir: Path) -> Iterator[str]:
    sock = str(short_dir / "kubelet.sock")
    server = serve_pod_resources(sock, lambda: FIXTURE)
    yield sock
    server.stop(None)


def test_list_returns_every_container_with_its_devices(kubelet: str) -> None:
    assert list_pod_devices(kubelet, timeout=5) == FIXTURE


def test_unix_scheme_is_accepted(kubelet: str) -> None:
    assert len(list_pod_devices(f"unix://{kubelet}")) == 3


# -- wire compatibility: bytes written from the documented v1 field numbers ---------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _s(num: int, text: str) -> bytes:
    return _ld(num, text.encode())


def _kubelet_bytes() -> bytes:
    """ListPodResourcesResponse as a newer kubelet sends it, fields we do not read included."""
    devices = _s(1, "nvidia.com/gpu") + _s(2, f"{G2}::1") + _s(2, G1)
    devices += _ld(3, _ld(1, _varint(1 << 3 | 0) + _varint(1)))  # topology {nodes {ID: 1}}
    other = _s(1, "example.com/nic") + _s(2, "nic-7")
    memory = _s(1, "memory") + _varint(2 << 3 | 0) + _varint(1 << 30)
    container = _s(1, "server") + _ld(2, devices) + _ld(2, other)
    container += _ld(3, _varint(2) + _varint(3))  # cpu_ids (packed int64)
    container += _ld(4, memory)
    container += _ld(5, _s(1, "gpu.example.com") + _s(2, "claim-a"))  # dynamic_resources
    pod = _s(1, "llama-0") + _s(2, "serving") + _ld(3, container)
    pod += _ld(4, _varint(7))  # PodResources.cpu_ids of newer kubelets: unknown to us
    no_gpu = _s(1, "web-0") + _s(2, "default") + _ld(3, _s(1, "nginx"))
    return _ld(1, pod) + _ld(1, no_gpu)


@pytest.fixture
def raw_kubelet(short_dir: Path) -> Iterator[str]:
    sock = str(short_dir / "raw.sock")
    seen: list[bytes] = []

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.append(request)
        return _kubelet_bytes()

    handler = grpc.method_handlers_generic_handler(
        "v1.PodResourcesLister",
        {
            "List": grpc.unary_unary_rpc_method_handler(
                handle, request_deserializer=None, response_serializer=None
            )
        },
    )
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    yield sock
    server.stop(None)
    assert seen == [b""]  # ListPodResourcesRequest{} is empty on the wire


def test_documented_wire_format_decodes(raw_kubelet: str) -> None:
    (pd,) = list_pod_devices(raw_kubelet)
    assert (pd.namespace, pd.pod, pd.container) == ("serving", "llama-0", "server")
    assert [(d.uuid, d.replica) for d in pd.devices] == [(G2, 1), (G1, None)]


# -- errors are ours ---------------------------------------------------------------------------


def test_missing_socket_is_a_pod_resources_error(short_dir: Path) -> None:
    with pytest.raises(PodResourcesError, match="UNAVAILABLE"):
        list_pod_devices(str(short_dir / "nope.sock"), timeout=2)


def test_an_error_status_is_a_pod_resources_error(short_dir: Path) -> None:
    sock = str(short_dir / "deny.sock")

    def deny() -> list[PodDevices]:
        raise PermissionError("kubelet says no")

    server = serve_pod_resources(sock, deny)
    try:
        with pytest.raises(PodResourcesError, match="UNKNOWN"):
            list_pod_devices(sock, timeout=5)
    finally:
        server.stop(None)


def test_a_hung_kubelet_times_out(short_dir: Path) -> None:
    sock = str(short_dir / "hung.sock")
    release = threading.Event()

    def hang() -> list[PodDevices]:
        release.wait(30)
        return []

    server = serve_pod_resources(sock, hang)
    try:
        with pytest.raises(PodResourcesError, match="DEADLINE_EXCEEDED"):
            list_pod_devices(sock, timeout=0.3)
    finally:
        release.set()
        server.stop(None)


def test_a_socket_path_too_long_is_refused(short_dir: Path) -> None:
    with pytest.raises(ValueError, match="too long"):
        serve_pod_resources(str(short_dir / ("x" * 120)), lambda: [])
