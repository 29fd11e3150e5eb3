"""The kubelet PodResources edge: which pod and container hold which GPU or MIG device.

``list_pod_devices`` speaks the kubelet's gRPC ``v1.PodResourcesLister/List`` on its unix
socket (modules generated from ``v1/api.proto`` by ``make proto``); ``serve_pod_resources``
serves the same protocol from a callable (the demo's simulated nodes and the tests).
"""

from scheduler.podresources.client import PodResourcesError, list_pod_devices
from scheduler.podresources.devices import DeviceRef, PodDevices, parse_device_id
from scheduler.podresources.server import serve_pod_resources

__all__ = [
    "DeviceRef",
    "PodDevices",
    "PodResourcesError",
    "list_pod_devices",
    "parse_device_id",
    "serve_pod_resources",
]
