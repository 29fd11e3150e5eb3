"""Render a Plan for Dynamic Resource Allocation (``resource.k8s.io/v1``, NVIDIA's DRA driver).

What the cluster gets (all plain JSON-able dicts; nothing sent anywhere):

- whole GPUs: a ResourceClaimTemplate per Deployment variant, device class
  ``gpu.nvidia.com``, ``ExactCount`` = the gang size (1 for a single GPU), no sharing config,
  a CEL selector on ``device.attributes['gpu.nvidia.com'].uuid`` naming the planned GPUs;
- MIG: a ResourceClaimTemplate per variant, device class ``mig.nvidia.com``, CEL selectors
  on the driver's ``profile`` and ``parentUUID`` attributes (planned profile and GPUs); the
  MIG layouts themselves still come from mig-parted (same ConfigMap and
  ``nvidia.com/mig.config`` labels as the device-plugin target);
- MPS and time-slicing: one **shared ResourceClaim per planned GPU** (a DRA device is
  allocated to one claim, and the driver runs one MPS control daemon per claim, so pods of
  several models share a GPU only by naming the same claim). Its GpuConfig carries the
  daemon defaults, MPS ``defaultActiveThreadPercentage: 100`` and
  ``defaultPinnedDeviceMemoryLimit`` = the GPU's memory, and each client's Deployment sets
  its own share (``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` / ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT``,
  which can only lower the daemon's), so unequal per-client shares are what the pods get.
  The claim depends only on the GPU, so a changed share is a Deployment rollout on the same
  claim (an immutable claim holding the shares would have to be replaced, and its successor
  could not be allocated while the old one still holds the GPU);
  time-slicing: ``TimeSlicing`` with interval ``Default``;
- Deployments as apply configurations: replicas, node affinity to the planned nodes,
  ``spec.template.spec.resourceClaims`` (claim ``costctl-gpu``) and the first container's
  ``resources.claims``; no ``nvidia.com/*`` extended-resource limits.

Claim objects are named ``<what>-<hash of their spec>``: their spec is immutable on the API
server, so a changed claim is a new object and the old one is deleted once unused.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.catalog import gpu_type
from scheduler.kube.dra_params import DRIVER, GpuConfig, mps_config, time_slicing_config
from scheduler.kube.render import (
    HOSTNAME,
    MIG_CONFIG_LABEL,
    MODEL_LABEL,
    VARIANT_LABEL,
    dns_name,
    render,
    to_dicts,
)
from scheduler.model import GpuSnapshot, Mode, Plan, Slot

RESOURCE_API = "resource.k8s.io/v1"
GPU_CLASS = "gpu.nvidia.com"
MIG_CLASS = "mig.nvidia.com"
POD_CLAIM = "costctl-gpu"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "costctl"
MPS_ENV = ("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT")


@dataclass(frozen=True)
class DraVariant:
    """Replicas of a model that share one pod template and one claim (template or shared)."""

    model: str
    suffix: str
    mode: Mode
    replicas: int
    nodes: tuple[str, ...]
    claim: str
    shared: bool  # True: a ResourceClaim named by every pod; False: a ResourceClaimTemplate
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DraRendered:
    """Everything a plan needs on a DRA cluster."""

    mig_parted: dict[str, Any]
    node_labels: dict[str, dict[str, str]]
    claim_templates: tuple[dict[str, Any], ...]
    claims: tuple[dict[str, Any], ...]
    deployments: tuple[dict[str, Any], ...]
    variants: tuple[DraVariant, ...]

    def objects(self) -> list[dict[str, Any]]:
        """All objects (nodes as label-only Node objects) in apply order."""
        nodes = [
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": labels}}
            for n, labels in sorted(self.node_labels.items())
        ]
        return [self.mig_parted, *nodes, *self.claim_templates, *self.claims, *self.deployments]


def cel_in(attribute: str, values: Sequence[str]) -> str:
    """A CEL expression: the driver's ``attribute`` is one of ``values``."""
    attr = f"device.attributes['{DRIVER}'].{attribute}"
    if len(values) == 1:
        return f"{attr} == '{values[0]}'"
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{attr} in [{quoted}]"


def _hashed(prefix: str, spec: Any) -> str:
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    return f"{dns_name(prefix)[:54].rstrip('-')}-{digest}"


def _request(name: str, device_class: str, exprs: Sequence[str], count: int = 1) -> Any:
    exactly: dict[str, Any] = {"deviceClassName": device_class}
    if count != 1:
        exactly |= {"allocationMode": "ExactCount", "count": count}
    exactly["selectors"] = [{"cel": {"expression": e}} for e in exprs]
    return {"name": name, "exactly": exactly}


def _claim_spec(request: dict[str, Any], config: GpuConfig | None) -> dict[str, Any]:
    devices: dict[str, Any] = {"requests": [request]}
    if config is not None:
        devices["config"] = [
            {
                "requests": [request["name"]],
                "opaque": {"driver": DRIVER, "parameters": config.to_json()},
            }
        ]
    return {"devices": devices}


def _meta(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {MANAGED_BY: MANAGER, **labels}}


def _gang(plan: Plan) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = defaultdict(int)
    for s in plan.slots:
        if s.mode is Mode.gpu:
            out[(s.model, s.replica)] += 1
    return out


def _group_key(s: Slot, gang: dict[tuple[str, int], int]) -> tuple[str, str, str, int, int]:
    if s.mode is Mode.gpu:
        return (s.model, "gpu", "", gang[(s.model, s.replica)], 0)
    if s.mode is Mode.mig:
        return (s.model, "mig", s.profile or "", 0, 0)
    return (s.model, s.mode.value, s.gpu_uuid, s.thread_pct or 0, s.mem_limit_mib or 0)


def _shared_claims(
    plan: Plan, by_uuid: dict[str, GpuSnapshot], namespace: str
) -> dict[str, dict[str, Any]]:
    """One ResourceClaim per MPS / time-sliced GPU, keyed by GPU UUID."""
    clients: dict[str, list[Slot]] = defaultdict(list)
    for s in plan.slots:
        if s.mode in (Mode.mps, Mode.timeslice):
            clients[s.gpu_uuid].append(s)
    out = {}
    for uuid, slots in sorted(clients.items()):
        g = by_uuid[uuid]
        mode = slots[0].mode
        if mode is Mode.mps:
            config = mps_config(100, gpu_type(g.gpu_type).memory_mib)
        else:
            config = time_slicing_config()
        spec = _claim_spec(_request("gpu", GPU_CLASS, [cel_in("uuid", [uuid])]), config)
        kind = "mps" if mode is Mode.mps else "ts"
        name = _hashed(f"costctl-{kind}-{g.node}-{g.index}", spec)
        out[uuid] = {
            "apiVersion": RESOURCE_API,
            "kind": "ResourceClaim",
            "metadata": _meta(name, namespace, {}),
            "spec": spec,
        }
    return out


def _template(model: str, suffix: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    name = _hashed(f"costctl-{model}-{suffix}", spec)
    return {
        "apiVersion": RESOURCE_API,
        "kind": "ResourceClaimTemplate",
        "metadata": _meta(name, namespace, {MODEL_LABEL: model}),
        "spec": {"metadata": {"labels": {MANAGED_BY: MANAGER, MODEL_LABEL: model}}, "spec": spec},
    }


def dra_variants(
    plan: Plan, gpus: Sequence[GpuSnapshot], namespace: str = "default"
) -> tuple[list[DraVariant], list[dict[str, Any]], list[dict[str, Any]]]:
    """Variants of the plan's slots, with the claim templates and shared claims they name."""
    by_uuid = {g.uuid: g for g in gpus}
    gang = _gang(plan)
    groups: dict[tuple[str, str, str, int, int], list[Slot]] = defaultdict(list)
    for s in plan.slots:
        groups[_group_key(s, gang)].append(s)
    shared = _shared_claims(plan, by_uuid, namespace)
    templates: dict[str, dict[str, Any]] = {}
    out = []
    for (model, kind, key, a, b), slots in sorted(groups.items()):
        uuids = sorted({s.gpu_uuid for s in slots})
        env: tuple[tuple[str, str], ...] = ()
        if kind == "gpu":
            suffix = f"gpu-x{a}"
            spec = _claim_spec(_request("gpu", GPU_CLASS, [cel_in("uuid", uuids)], a), None)
        elif kind == "mig":
            suffix = f"mig-{key}"
            exprs = [cel_in("profile", [key]), cel_in("parentUUID", uuids)]
            spec = _claim_spec(_request("mig", MIG_CLASS, exprs), None)
        if kind in ("gpu", "mig"):
            t = _template(model, suffix, namespace, spec)
            templates[t["metadata"]["name"]] = t
            claim, is_shared = t["metadata"]["name"], False
        else:
            g = by_uuid[key]
            suffix = f"{'mps-' + str(a) if kind == 'mps' else 'ts'}-{g.node}-{g.index}"
            claim, is_shared = shared[key]["metadata"]["name"], True
            if kind == "mps":
                env = ((MPS_ENV[0], str(a)), (MPS_ENV[1], f"0={b}M"))
        replicas = len({s.replica for s in slots})
        nodes = tuple(sorted({s.node for s in slots}))
        mode = Mode(kind)
        out.append(
            DraVariant(model, dns_name(suffix), mode, replicas, nodes, claim, is_shared, env)
        )
    return out, list(templates.values()), list(shared.values())


def _deployment(v: DraVariant, name: str, namespace: str, container: str) -> dict[str, Any]:
    labels = {MODEL_LABEL: v.model, VARIANT_LABEL: v.suffix}
    source = "resourceClaimName" if v.shared else "resourceClaimTemplateName"
    c: dict[str, Any] = {"name": container, "resources": {"claims": [{"name": POD_CLAIM}]}}
    if v.env:
        c["env"] = [{"name": k, "value": val} for k, val in v.env]
    term = {"matchExpressions": [{"key": HOSTNAME, "operator": "In", "values": list(v.nodes)}]}
    pod = {
        "resourceClaims": [{"name": POD_CLAIM, source: v.claim}],
        "containers": [c],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
            }
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": v.replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
        },
    }


def render_dra(
    plan: Plan,
    gpus: Sequence[GpuSnapshot],
    *,
    namespace: str = "default",
    mig_configmap: str = "costctl-mig-parted",
    container: str = "server",
    operator_namespace: str = "gpu-operator",
) -> DraRendered:
    """The DRA objects of ``plan`` on the fleet ``gpus`` (see the module doc)."""
    base = render(
        plan,
        gpus,
        namespace=namespace,
        mig_configmap=mig_configmap,
        operator_namespace=operator_namespace,
    )
    (mig_parted,) = to_dicts([base.mig_parted])
    labels = {n: {MIG_CONFIG_LABEL: ls[MIG_CONFIG_LABEL]} for n, ls in base.node_labels.items()}
    vs, templates, claims = dra_variants(plan, gpus, namespace)
    first: set[str] = set()
    deployments = []
    for v in sorted(vs, key=lambda v: (v.model, -v.replicas, v.suffix)):
        name = dns_name(v.model) if v.model not in first else dns_name(f"{v.model}-{v.suffix}")
        first.add(v.model)
        deployments.append(_deployment(v, name, namespace, container))
    return DraRendered(
        mig_parted=mig_parted,
        node_labels=labels,
        claim_templates=tuple(templates),
        claims=tuple(claims),
        deployments=tuple(deployments),
        variants=tuple(vs),
    )
