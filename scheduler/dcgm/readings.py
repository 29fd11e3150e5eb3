"""dcgm-exporter series read into devices: readings and holders per device and step.

Pure. A device is a whole GPU (series without ``GPU_I_ID``) or a MIG GPU instance (``UUID`` of
the parent GPU + ``GPU_I_ID`` + ``GPU_I_PROFILE``, as dcgm-exporter labels them); dcgm-exporter
exports no MIG device UUID, so an instance's id is ``mig_device_id(parent, gi)``
(``MIG-<parent GPU UUID>/gi<GPU_I_ID>``), which is NOT the ``MIG-<uuid>`` the NVML agent
reports. So the DCGM pull and the node agent must not both run for one node: the same GPU
time would be sampled by both and its MIG holdings would carry two different device ids.
The pods on a device at a step are the ``namespace/pod/container`` label sets of its series
at that step.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from scheduler.dcgm.gputypes import gpu_type_of, mig_fraction

GR_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"  # ratio 0..1
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"  # percent 0..100
FB_USED = "DCGM_FI_DEV_FB_USED"  # MiB
FB_FREE = "DCGM_FI_DEV_FB_FREE"  # MiB
POWER = "DCGM_FI_DEV_POWER_USAGE"  # W
METRICS = (GR_ACTIVE, GPU_UTIL, FB_USED, FB_FREE, POWER)
OBSERVER = "dcgm"
WORKLOAD = ("namespace", "pod", "container")

Holder = tuple[str, str, str]  # namespace, pod, container
DeviceKey = tuple[str, int | None]  # parent/whole GPU UUID, GPU_I_ID


class Series(Protocol):
    """What the conversion reads of a result series (scheduler.promclient.Series is one)."""

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def points(self) -> Sequence[tuple[float, float]]: ...


def mig_device_id(parent_uuid: str, gi_id: int) -> str:
    """The stable id of a MIG instance seen through DCGM (not NVML's MIG-<uuid>)."""
    return f"MIG-{parent_uuid}/gi{gi_id}"


@dataclass(frozen=True)
class Options:
    """What the conversion needs from the settings."""

    step_s: int
    gpu_types: Mapping[str, str] = field(default_factory=dict)
    pricing_class: Mapping[str, str] = field(default_factory=dict)  # node -> class
    workload_labels: Literal["auto", "exported"] = "auto"


@dataclass
class Device:
    """One device's readings (metric -> value) and holders, per step (unix seconds)."""

    key: DeviceKey
    node: str
    index: int
    gpu_type: str
    profile: str | None
    values: dict[int, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    holders: dict[int, set[Holder]] = field(default_factory=lambda: defaultdict(set))

    @property
    def uuid(self) -> str:
        """The device id: the GPU's UUID, or ``mig_device_id`` for a MIG instance."""
        gpu, gi = self.key
        return gpu if gi is None else mig_device_id(gpu, gi)


def holder_of(labels: Mapping[str, str], mode: Literal["auto", "exported"]) -> Holder | None:
    """The pod of a series: ``exported_*`` labels (a scrape that renamed them), else plain.

    Details: with ``mode="exported"`` the plain labels are the scrape target's (the exporter
    pod) and never a workload. No pod name: None (an idle device); a missing namespace or
    container reads "-".
    """
    prefix = "exported_" if labels.get("exported_pod") or mode == "exported" else ""
    ns, pod, container = (labels.get(f"{prefix}{k}", "") for k in WORKLOAD)
    return (ns or "-", pod, container or "-") if pod else None


def _gi(labels: Mapping[str, str]) -> int | None:
    raw = labels.get("GPU_I_ID", "")
    return int(raw) if raw.isdigit() and labels.get("GPU_I_PROFILE") else None


def collect_devices(
    results: Mapping[str, Sequence[Series]], opts: Options
) -> tuple[dict[DeviceKey, Device], list[str]]:
    """Readings and holders per device and step (unix second) from every metric's series."""
    devices: dict[DeviceKey, Device] = {}
    problems: list[str] = []
    for metric, series in results.items():
        for s in series:
            uuid = s.labels.get("UUID", "")
            if not uuid:
                problems.append(f"{metric} series without UUID: {dict(s.labels)}"[:200])
                continue
            key = (uuid, _gi(s.labels))
            dev = devices.get(key)
            if dev is None:
                gpu = s.labels.get("gpu", "0")
                dev = devices[key] = Device(
                    key,
                    s.labels.get("Hostname") or s.labels.get("instance", "unknown"),
                    int(gpu) if gpu.isdigit() else 0,
                    gpu_type_of(s.labels.get("modelName", "unknown"), opts.gpu_types),
                    s.labels.get("GPU_I_PROFILE") if key[1] is not None else None,
                )
            holder = holder_of(s.labels, opts.workload_labels)
            for t, v in s.points:
                if not math.isfinite(v) or v < 0:
                    continue
                step = round(t)
                dev.values[step][metric] = v
                if holder is not None:
                    dev.holders[step].add(holder)
                else:
                    dev.holders.setdefault(step, set())
    return devices, problems


def util_of(v: Mapping[str, float]) -> float | None:
    """SM busy % of one reading: GR_ENGINE_ACTIVE x 100, else GPU_UTIL, else None."""
    if GR_ACTIVE in v:
        return min(100.0, v[GR_ACTIVE] * 100.0)
    if GPU_UTIL in v:
        return min(100.0, v[GPU_UTIL])
    return None


def at(t: int) -> datetime:
    """Unix seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(t, UTC)


def fraction_of(dev: Device) -> float | None:
    """Share of the physical GPU's price the device is: 1, or the MIG slice fraction."""
    if dev.key[1] is None:
        return 1.0
    return mig_fraction(dev.gpu_type, dev.profile or "")
