"""The join (pure): one tick's devices, pods and labels -> the observed holdings.

Inputs: the kubelet's PodResources (which container holds which device id), NVML's MIG
instances (parent GPU, profile), the pods of the node (labels, owner) and the node's labels.
One Holding per (device, namespace, pod, container); ``fraction`` is its share of the
PHYSICAL GPU's price:

- whole GPU (``GPU-<uuid>``): mode gpu, fraction 1;
- MIG device (``MIG-<uuid>``): mode mig, fraction SM slices / 7 (A30: / 4) of its profile;
- shared replica (``<id>::<n>``, time-slicing or MPS): mode from the node label
  ``nvidia.com/gpu.sharing-strategy`` (mps -> mps, otherwise timeslice), fraction =
  (replica ids the container holds on that device) / ``nvidia.com/gpu.replicas``; without the
  label, / the number of replica ids handed out on that device this tick (said in ``notes``).
  A shared MIG device carries its slice fraction times that share.

Model of a pod (``model_for``): the configured label (default ``costctl.io/model``), else
``app.kubernetes.io/name``, else ``<namespace>/<workload>`` where workload is the pod's
controller (a ReplicaSet's name without its pod-template-hash, i.e. the Deployment) or the
pod's own name. Names starting with ``__`` are reserved and skipped to the next rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from scheduler import mig
from scheduler.podmap import PodInfo
from scheduler.podresources.devices import DeviceRef, PodDevices

APP_NAME_LABEL = "app.kubernetes.io/name"
TEMPLATE_HASH_LABEL = "pod-template-hash"
REPLICAS_LABEL = "nvidia.com/gpu.replicas"
STRATEGY_LABEL = "nvidia.com/gpu.sharing-strategy"
Mode = Literal["gpu", "mig", "mps", "timeslice"]
HoldingKey = tuple[str, str, str, str]  # device_uuid, namespace, pod, container


@dataclass(frozen=True)
class MigInfo:
    """What NVML says about a MIG device: its physical GPU, GPU type and profile name."""

    uuid: str
    gpu_uuid: str
    gpu_type: str
    profile: str


@dataclass(frozen=True)
class Holding:
    """One container holding one device (an open allocation once it has a start)."""

    device_uuid: str
    gpu_uuid: str
    node: str
    namespace: str
    pod: str
    container: str
    pod_uid: str | None
    model: str
    mode: Mode
    profile: str | None
    fraction: float

    @property
    def key(self) -> HoldingKey:
        """(device_uuid, namespace, pod, container): what identifies a holding over time."""
        return (self.device_uuid, self.namespace, self.pod, self.container)


@dataclass
class Observed:
    """The holdings of one tick and what the join could not resolve (for the log)."""

    holdings: list[Holding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _valid(name: str | None) -> str | None:
    name = (name or "").strip()
    return name[:200] if name and not name.startswith("__") else None


def model_for(pod: PodInfo, label: str) -> str:
    """The model a pod serves: ``label``, else app.kubernetes.io/name, else ns/workload."""
    for candidate in (pod.labels.get(label), pod.labels.get(APP_NAME_LABEL)):
        if (name := _valid(candidate)) is not None:
            return name
    workload = pod.owner_name or pod.name
    h = pod.labels.get(TEMPLATE_HASH_LABEL)
    if pod.owner_kind == "ReplicaSet" and h and workload.endswith(f"-{h}"):
        workload = workload[: -len(h) - 1]
    return _valid(f"{pod.namespace}/{workload}") or f"ns-{pod.namespace}/{workload}"[:200]


def mig_fraction(gpu_type: str, profile: str) -> float:
    """Share of the GPU price a MIG profile holds (``mig.profile_fraction``; 1 if unknown)."""
    return mig.profile_fraction(gpu_type, profile) or 1.0


def _label(labels: Mapping[str, str], resource: str, suffix: str) -> str | None:
    for base in (resource, resource.removesuffix(".shared"), "nvidia.com/gpu"):
        if (v := labels.get(f"{base}.{suffix}")) is not None:
            return v
    return None


def _replicas(labels: Mapping[str, str], resource: str) -> int | None:
    raw = _label(labels, resource, "replicas")
    try:
        n = int(raw) if raw is not None else 0
    except ValueError:
        return None
    return n if n > 1 else None


@dataclass(frozen=True)
class _Claim:
    pod: PodDevices
    info: PodInfo
    ref: DeviceRef
    ids: int  # replica ids this container holds on the device


def _claims(
    pod_devices: Sequence[PodDevices], pods: Mapping[tuple[str, str], PodInfo], out: Observed
) -> list[_Claim]:
    claims: list[_Claim] = []
    for p in pod_devices:
        info = pods.get((p.namespace, p.pod))
        if info is None:
            out.notes.append(f"pod {p.namespace}/{p.pod}: not listed by the API yet; waiting")
            continue
        count: dict[str, int] = {}
        first: dict[str, DeviceRef] = {}
        for ref in p.devices:
            count[ref.uuid] = count.get(ref.uuid, 0) + 1
            first.setdefault(ref.uuid, ref)
        claims += [_Claim(p, info, first[u], n) for u, n in count.items()]
    return claims


def join(
    *,
    node: str,
    pod_devices: Sequence[PodDevices],
    pods: Sequence[PodInfo],
    node_labels: Mapping[str, str],
    mig_devices: Mapping[str, MigInfo],
    model_label: str,
) -> Observed:
    """The holdings of one tick (see the module docstring for mode, fraction and model)."""
    out = Observed()
    by_name = {(p.namespace, p.name): p for p in pods}
    claims = _claims(pod_devices, by_name, out)
    handed: dict[str, int] = {}
    for c in claims:
        if c.ref.shared:
            handed[c.ref.uuid] = handed.get(c.ref.uuid, 0) + c.ids
    strategy = (node_labels.get(STRATEGY_LABEL) or "").lower()
    for c in claims:
        ref = c.ref
        gpu_uuid, profile, fraction, mode = ref.uuid, None, 1.0, "gpu"
        if ref.kind == "mig":
            info = mig_devices.get(ref.uuid)
            if info is None:
                out.notes.append(f"{ref.uuid}: MIG device not seen by NVML; skipped this tick")
                continue
            gpu_uuid, profile, mode = info.gpu_uuid, info.profile, "mig"
            fraction = mig_fraction(info.gpu_type, info.profile)
        if ref.shared:
            replicas = _replicas(node_labels, ref.resource_name)
            if replicas is None:
                replicas = handed[ref.uuid]
                out.notes.append(
                    f"{ref.uuid}: no {REPLICAS_LABEL} label; share = 1/{replicas} replica ids held"
                )
            fraction *= min(1.0, c.ids / replicas)
            if mode == "gpu":
                mode = "mps" if strategy == "mps" else "timeslice"
        out.holdings.append(
            Holding(
                device_uuid=ref.uuid,
                gpu_uuid=gpu_uuid,
                node=node,
                namespace=c.pod.namespace,
                pod=c.pod.pod,
                container=c.pod.container,
                pod_uid=c.info.uid or None,
                model=model_for(c.info, model_label),
                mode=mode,  # type: ignore[arg-type]
                profile=profile,
                fraction=round(max(1e-6, min(1.0, fraction)), 9),
            )
        )
    return out
