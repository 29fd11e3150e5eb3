"""The steps of ``KubeApplier.apply``: diff against the cluster, then write node by node."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from kubernetes import client

from scheduler.kube.render import (
    MIG_CONFIG_LABEL,
    MIG_STATE_LABEL,
    MODEL_LABEL,
    VARIANT_LABEL,
    Rendered,
    to_dicts,
)

if TYPE_CHECKING:
    from scheduler.kube.apply import ApplyResult, Change, KubeApplier


def _get_configmap(a: KubeApplier, name: str) -> dict[str, str] | None:
    from scheduler.kube.apply import ApplyError

    try:
        cm = a._retry(a.core.read_namespaced_config_map, name, a.operator_namespace)
    except ApplyError as exc:
        if "HTTP 404" in str(exc):
            return None
        raise
    return dict(cm.data or {})


def _deployments(a: KubeApplier) -> dict[str, Any]:
    found = a._retry(a.apps.list_namespaced_deployment, a.namespace, label_selector=MODEL_LABEL)
    return {d.metadata.name: d for d in found.items}


def diff_rendered(a: KubeApplier, r: Rendered) -> list[Change]:
    """What would change: ConfigMap keys, node labels, Deployment replicas/resources."""
    from scheduler.kube.apply import Change

    out: list[Change] = []
    for cm in (r.mig_parted, r.device_plugin):
        data = _get_configmap(a, cm.metadata.name) or {}
        for key, value in sorted((cm.data or {}).items()):
            if data.get(key) != value:
                out.append(Change("ConfigMap", cm.metadata.name, key, data.get(key), value))
    for node, labels in sorted(r.node_labels.items()):
        current = a._retry(a.core.read_node, node).metadata.labels or {}
        for k, v in sorted(labels.items()):
            if current.get(k) != v:
                out.append(Change("Node", node, f"labels.{k}", current.get(k), v))
    existing = _deployments(a)
    api = client.ApiClient()
    for d in r.deployments:
        want = api.sanitize_for_serialization(d)
        name = d.metadata.name
        have = existing.get(name)
        if have is None:
            out.append(Change("Deployment", name, "create", None, d.spec.replicas))
            continue
        have_d = api.sanitize_for_serialization(have)
        if (have.spec.replicas or 0) != d.spec.replicas:
            out.append(Change("Deployment", name, "replicas", have.spec.replicas, d.spec.replicas))
        want_lim = want["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        have_c = (have_d["spec"]["template"]["spec"].get("containers") or [{}])[0]
        have_lim = (have_c.get("resources") or {}).get("limits", {})
        if {k: v for k, v in have_lim.items() if k.startswith("nvidia.com/")} != want_lim:
            out.append(Change("Deployment", name, "resources.limits", have_lim, want_lim))
    wanted = {d.metadata.name for d in r.deployments}
    planned_models = {v.model for v in r.variants}
    for name, d in sorted(existing.items()):
        model = (d.metadata.labels or {}).get(MODEL_LABEL)
        if name not in wanted and model in planned_models and (d.spec.replicas or 0) > 0:
            out.append(Change("Deployment", name, "replicas", d.spec.replicas, 0))
    return out


def _write_configmaps(a: KubeApplier, r: Rendered) -> None:
    """Create or extend the ConfigMaps (keys are added or replaced, never removed)."""
    for cm in (r.mig_parted, r.device_plugin):
        have = _get_configmap(a, cm.metadata.name)
        if have is None:
            a._retry(a.core.create_namespaced_config_map, a.operator_namespace, cm)
        else:
            a._retry(
                a.core.patch_namespaced_config_map,
                cm.metadata.name,
                a.operator_namespace,
                {"data": dict(cm.data or {})},
            )


def _apply_node(a: KubeApplier, node: str, labels: dict[str, str]) -> str | None:
    """Label one node and wait for its MIG reconfiguration; returns an error or None."""
    current = a._retry(a.core.read_node, node).metadata.labels or {}
    if current.get(MIG_STATE_LABEL) in ("pending", "rebooting"):
        return f"{node}: MIG reconfiguration already in progress ({current[MIG_STATE_LABEL]})"
    change = {k: v for k, v in labels.items() if current.get(k) != v}
    if not change:
        return None
    a.reserve(node, {k: current.get(k) for k in change})
    try:
        a._retry(a.core.patch_node, node, {"metadata": {"labels": change}})
        if MIG_CONFIG_LABEL in change:
            state = a.wait_mig(node)
            if state != "success":
                a.unreserve(node)
                return f"{node}: MIG reconfiguration {state}; labels rolled back"
    except Exception:
        a.unreserve(node)
        raise
    a.release(node)
    return None


def _deployment_patch(want: dict[str, Any], have: Any, container: str) -> dict[str, Any]:
    spec = copy.deepcopy(want["spec"])
    spec.pop("selector", None)
    spec["template"]["spec"]["containers"][0]["name"] = container
    labels = spec["template"]["metadata"]["labels"]
    spec["template"]["metadata"]["labels"] = {
        **(have.spec.template.metadata.labels or {}),
        **labels,
    }
    return {"metadata": {"labels": want["metadata"]["labels"]}, "spec": spec}


def _clone(want: dict[str, Any], base: Any) -> dict[str, Any]:
    api = client.ApiClient()
    body: dict[str, Any] = api.sanitize_for_serialization(base)
    meta = body["metadata"]
    body["metadata"] = {
        "name": want["metadata"]["name"],
        "namespace": meta.get("namespace"),
        "labels": {**(meta.get("labels") or {}), **want["metadata"]["labels"]},
    }
    body.pop("status", None)
    tpl = body["spec"]["template"]
    tpl.setdefault("metadata", {})
    tpl["metadata"]["labels"] = {
        **(tpl["metadata"].get("labels") or {}),
        **want["spec"]["template"]["metadata"]["labels"],
    }
    body["spec"]["selector"] = want["spec"]["selector"]
    body["spec"]["replicas"] = want["spec"]["replicas"]
    c0 = tpl["spec"]["containers"][0]
    w0 = want["spec"]["template"]["spec"]["containers"][0]
    c0["resources"] = {
        **(c0.get("resources") or {}),
        "limits": {
            **{
                k: v
                for k, v in ((c0.get("resources") or {}).get("limits") or {}).items()
                if not k.startswith("nvidia.com/")
            },
            **w0["resources"]["limits"],
        },
    }
    env = [e for e in c0.get("env") or [] if not e["name"].startswith("CUDA_MPS_")]
    c0["env"] = env + (w0.get("env") or [])
    tpl["spec"]["affinity"] = want["spec"]["template"]["spec"]["affinity"]
    return body


def _write_deployments(a: KubeApplier, r: Rendered) -> None:
    existing = _deployments(a)
    by_model: dict[str, Any] = {}
    for d in existing.values():
        by_model.setdefault(str((d.metadata.labels or {}).get(MODEL_LABEL)), d)
    for d, want in zip(r.deployments, to_dicts(r.deployments), strict=True):
        name = d.metadata.name
        model = want["metadata"]["labels"][MODEL_LABEL]
        have = existing.get(name)
        if have is not None:
            c = have.spec.template.spec.containers[0].name
            a._retry(
                a.apps.patch_namespaced_deployment,
                name,
                a.namespace,
                _deployment_patch(want, have, c),
            )
        elif model in by_model:
            a._retry(
                a.apps.create_namespaced_deployment, a.namespace, _clone(want, by_model[model])
            )
        else:
            raise LookupError(f"no Deployment labelled {MODEL_LABEL}={model} to patch or clone")
    wanted = {d.metadata.name for d in r.deployments}
    planned = {v.model for v in r.variants}
    for name, d in existing.items():
        labels = d.metadata.labels or {}
        if name not in wanted and labels.get(MODEL_LABEL) in planned and VARIANT_LABEL in labels:
            a._set_replicas(name, 0)


def apply_rendered(a: KubeApplier, r: Rendered, changes: list[Change]) -> ApplyResult:
    """ConfigMaps, then node by node (all-or-rolled-back), then Deployments if all nodes did."""
    from scheduler.kube.apply import ApplyResult

    _write_configmaps(a, r)
    errors = []
    failed = []
    for node, labels in sorted(r.node_labels.items()):
        err = _apply_node(a, node, labels)
        if err:
            errors.append(err)
            failed.append(node)
    if not failed:
        _write_deployments(a, r)
    return ApplyResult(
        tuple(changes), applied=not failed, failed_nodes=tuple(failed), errors=tuple(errors)
    )
