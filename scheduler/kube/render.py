"""Render a Plan as Kubernetes objects (kubernetes client models), nothing sent anywhere.

- mig-parted config (ConfigMap ``config.yaml``): one config per node layout, device counts
  per GPU (mig-parted takes counts; it chooses positions itself), plus ``all-disabled``;
- NVIDIA device-plugin sharing configs (ConfigMap, one key per sharing config:
  ``sharing.mps`` / ``sharing.timeSlicing`` with replicas, migStrategy mixed);
- node labels ``nvidia.com/mig.config`` and ``nvidia.com/device-plugin.config``;
- one Deployment per model variant (mode + profile/share): resource name
  (``nvidia.com/mig-3g.40gb`` or ``nvidia.com/gpu``), node affinity to the planned nodes,
  and under MPS ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` / ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT``.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from kubernetes import client

from scheduler.model import GpuSnapshot, Mode, NodeSharing, Plan, Slot

MIG_CONFIG_LABEL = "nvidia.com/mig.config"
MIG_STATE_LABEL = "nvidia.com/mig.config.state"
DP_CONFIG_LABEL = "nvidia.com/device-plugin.config"
MODEL_LABEL = "costctl.io/model"
VARIANT_LABEL = "costctl.io/variant"
HOSTNAME = "kubernetes.io/hostname"


@dataclass(frozen=True)
class Variant:
    """Replicas of a model that share one pod template (same mode, profile, share)."""

    model: str
    suffix: str
    mode: Mode
    resource: str
    count: int
    replicas: int
    nodes: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Rendered:
    """Everything a plan needs on the cluster."""

    mig_parted: client.V1ConfigMap
    device_plugin: client.V1ConfigMap
    node_labels: dict[str, dict[str, str]]
    deployments: tuple[client.V1Deployment, ...]
    variants: tuple[Variant, ...]

    def objects(self) -> list[Any]:
        """All objects as kubernetes models (nodes as label-only V1Node objects)."""
        nodes = [
            client.V1Node(
                api_version="v1", kind="Node", metadata=client.V1ObjectMeta(name=n, labels=labels)
            )
            for n, labels in sorted(self.node_labels.items())
        ]
        return [self.mig_parted, self.device_plugin, *nodes, *self.deployments]


def dns_name(text: str) -> str:
    """A DNS-1123 label from free text (lowercase, [a-z0-9-], ≤ 63)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:63].rstrip("-") or "x"


def _variant_key(s: Slot) -> tuple[Mode, str, int | None, int | None]:
    return (s.mode, s.profile or "", s.thread_pct, s.mem_limit_mib)


def mps_env(pct: int | None, mem_mib: int | None) -> tuple[tuple[str, str], ...]:
    """The MPS client limits of a slot; a limit the slot does not carry (a current placement
    read from the store has none) is left out, never rendered as ``None``."""
    out: list[tuple[str, str]] = []
    if pct is not None:
        out.append(("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", str(pct)))
    if mem_mib is not None:
        out.append(("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", f"0={mem_mib}M"))
    return tuple(out)


def variants(plan: Plan) -> list[Variant]:
    """Group a plan's slots into Deployment variants (the most replicas keep the base name)."""
    gang: dict[tuple[str, int], int] = Counter(
        (s.model, s.replica) for s in plan.slots if s.mode is Mode.gpu
    )
    groups: dict[tuple[str, tuple[Mode, str, int | None, int | None]], list[Slot]] = defaultdict(
        list
    )
    for s in plan.slots:
        groups[(s.model, _variant_key(s))].append(s)
    out: list[Variant] = []
    for (model, (mode, profile, pct, mem)), slots in sorted(
        groups.items(), key=lambda kv: kv[0][0]
    ):
        replicas = len({s.replica for s in slots})
        nodes = tuple(sorted({s.node for s in slots}))
        env: tuple[tuple[str, str], ...] = ()
        if mode is Mode.mig:
            resource, count, suffix = f"nvidia.com/mig-{profile}", 1, f"mig-{profile}"
        else:
            resource = "nvidia.com/gpu"
            count = gang.get((model, slots[0].replica), 1) if mode is Mode.gpu else 1
            suffix = {Mode.gpu: f"gpu-x{count}", Mode.timeslice: "ts"}.get(
                mode, f"mps-{pct}" if pct is not None else "mps"
            )
            if mode is Mode.mps:
                env = mps_env(pct, mem)
        out.append(Variant(model, dns_name(suffix), mode, resource, count, replicas, nodes, env))
    return out


def _deployment(v: Variant, base_name: str, namespace: str, container: str) -> client.V1Deployment:
    labels = {MODEL_LABEL: v.model, VARIANT_LABEL: v.suffix}
    term = client.V1NodeSelectorTerm(
        match_expressions=[
            client.V1NodeSelectorRequirement(key=HOSTNAME, operator="In", values=list(v.nodes))
        ]
    )
    env = [client.V1EnvVar(name=k, value=val) for k, val in v.env] or None
    spec = client.V1PodSpec(
        containers=[
            client.V1Container(
                name=container,
                env=env,
                resources=client.V1ResourceRequirements(limits={v.resource: str(v.count)}),
            )
        ],
        affinity=client.V1Affinity(
            node_affinity=client.V1NodeAffinity(
                required_during_scheduling_ignored_during_execution=client.V1NodeSelector(
                    node_selector_terms=[term]
                )
            )
        ),
    )
    return client.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=client.V1ObjectMeta(name=base_name, namespace=namespace, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=v.replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels), spec=spec
            ),
        ),
    )


def device_plugin_key(sharing: NodeSharing, replicas: int) -> str:
    """The device-plugin config key of a node ("costctl-mps-4", "costctl-none")."""
    return "costctl-none" if sharing is NodeSharing.none else f"costctl-{sharing.value}-{replicas}"


def _device_plugin_config(sharing: NodeSharing, replicas: int) -> str:
    doc: dict[str, Any] = {"version": "v1", "flags": {"migStrategy": "mixed"}}
    if sharing is NodeSharing.mps:
        doc["flags"] = {"migStrategy": "none"}  # MPS is not offered on MIG devices
        doc["sharing"] = {
            "mps": {
                "renameByDefault": False,
                "resources": [{"name": "nvidia.com/gpu", "replicas": replicas}],
            }
        }
    elif sharing is NodeSharing.timeslice:
        doc["sharing"] = {
            "timeSlicing": {
                "renameByDefault": False,
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": "nvidia.com/gpu", "replicas": replicas}],
            }
        }
    return yaml.safe_dump(doc, sort_keys=False)


def render(
    plan: Plan,
    gpus: Sequence[GpuSnapshot],
    *,
    namespace: str = "default",
    mig_configmap: str = "costctl-mig-parted",
    device_plugin_configmap: str = "costctl-device-plugin",
    container: str = "server",
    operator_namespace: str = "gpu-operator",
) -> Rendered:
    """The Kubernetes objects of ``plan`` on the fleet ``gpus`` (all GPUs, used or not)."""
    by_node: dict[str, list[GpuSnapshot]] = defaultdict(list)
    for g in gpus:
        by_node[g.node].append(g)
    planned = {p.uuid: p for p in plan.gpus}
    mig_configs: dict[str, list[dict[str, Any]]] = {
        "all-disabled": [{"devices": "all", "mig-enabled": False}]
    }
    dp_configs: dict[str, str] = {}
    labels: dict[str, dict[str, str]] = {}
    for node in plan.nodes:
        entries = []
        for g in sorted(by_node[node.name], key=lambda g: g.index):
            p = planned.get(g.uuid)
            if p is not None and p.mig_layout:
                counts = Counter(_profile_names(g.gpu_type, p.mig_layout))
                entries.append(
                    {
                        "devices": [g.index],
                        "mig-enabled": True,
                        "mig-devices": dict(sorted(counts.items())),
                    }
                )
            else:
                entries.append({"devices": [g.index], "mig-enabled": False})
        config = node.mig_config or "all-disabled"
        if config != "all-disabled":
            mig_configs[config] = entries
        replicas = node.mps_replicas or max(
            [p.mps_clients or p.timeslice_replicas for p in plan.gpus if p.node == node.name] + [1]
        )
        if node.sharing is not NodeSharing.none:
            replicas = max(2, replicas)  # the device plugin rejects sharing with replicas < 2
        key = device_plugin_key(node.sharing, replicas)
        dp_configs[key] = _device_plugin_config(node.sharing, replicas)
        labels[node.name] = {MIG_CONFIG_LABEL: config, DP_CONFIG_LABEL: key}
    mig_doc = yaml.safe_dump({"version": "v1", "mig-configs": mig_configs}, sort_keys=False)
    meta = client.V1ObjectMeta
    vs = variants(plan)
    first: dict[str, str] = {}
    deployments = []
    for v in sorted(vs, key=lambda v: (v.model, -v.replicas, v.suffix)):
        name = dns_name(v.model) if v.model not in first else dns_name(f"{v.model}-{v.suffix}")
        first.setdefault(v.model, name)
        deployments.append(_deployment(v, name, namespace, container))
    return Rendered(
        mig_parted=client.V1ConfigMap(
            api_version="v1",
            kind="ConfigMap",
            metadata=meta(name=mig_configmap, namespace=operator_namespace),
            data={"config.yaml": mig_doc},
        ),
        device_plugin=client.V1ConfigMap(
            api_version="v1",
            kind="ConfigMap",
            metadata=meta(name=device_plugin_configmap, namespace=operator_namespace),
            data=dict(sorted(dp_configs.items())),
        ),
        node_labels=labels,
        deployments=tuple(deployments),
        variants=tuple(vs),
    )


def _profile_names(type_name: str, layout: Any) -> list[str]:
    from scheduler.mig import profile_name

    return [profile_name(type_name, key) for key, _ in layout]


def to_dicts(objects: Sequence[Any]) -> list[dict[str, Any]]:
    """Kubernetes models as plain JSON-able dicts (camelCase, Nones dropped)."""
    api: Any = client.ApiClient()
    return [api.sanitize_for_serialization(o) for o in objects]
