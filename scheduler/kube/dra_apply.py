"""Apply a DRA-rendered plan (``scheduler.kube.dra``) through the real kubernetes client.

Order: the mig-parted ConfigMap, then node by node the ``nvidia.com/mig.config`` label with
the same reserve / wait / roll-back step as the device-plugin target; only when every node
succeeded: create the missing ResourceClaimTemplates and shared ResourceClaims
(``ResourceV1Api``), write the Deployments, scale planned models' stale variants to 0, and
delete the costctl-labelled claim objects no Deployment of the plan names.

Deployments are read, changed in the fields the plan owns and written back whole (PUT, with
the read resourceVersion; a 409 re-reads): replicas, costctl labels, node affinity, the pod
claim ``costctl-gpu`` and the first container's claim, its ``CUDA_MPS_*`` env; every
``nvidia.com/*`` limit and request is removed (the device plugin's resources), everything
else (image, ports, other claims, other env) is kept. A second apply with the same plan
changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kubernetes import client

from scheduler.kube.dra import (
    MANAGED_BY,
    MANAGER,
    MPS_ENV,
    POD_CLAIM,
    DraRendered,
    render_dra,
)
from scheduler.kube.planapply import _apply_node, _get_configmap, wire_mig_manager
from scheduler.kube.render import MIG_CONFIG_LABEL, MODEL_LABEL, VARIANT_LABEL
from scheduler.model import GpuSnapshot, Plan

if TYPE_CHECKING:
    from scheduler.kube.apply import ApplyResult, Change, KubeApplier

CLAIM_KINDS = ("ResourceClaimTemplate", "ResourceClaim")


def _plain(obj: Any) -> Any:
    return client.ApiClient().sanitize_for_serialization(obj)


PLURALS = {"ResourceClaimTemplate": "resourceclaimtemplates", "ResourceClaim": "resourceclaims"}


def _claim_calls(a: KubeApplier, kind: str) -> tuple[Any, Any, Any]:
    """(list, create, delete) of the namespaced ``kind``; list answers plain dicts.

    Details: ``ResourceV1Api`` where the installed client has it (kubernetes >= 34), else the
    generic ``CustomObjectsApi`` calls on ``resource.k8s.io/v1`` (same paths and bodies).
    """
    if hasattr(client, "ResourceV1Api"):
        api = client.ResourceV1Api(a.api_client)
        snake = "resource_claim_template" if kind == "ResourceClaimTemplate" else "resource_claim"
        list_fn = getattr(api, f"list_namespaced_{snake}")

        def list_typed(ns: str, **kw: Any) -> list[dict[str, Any]]:
            return list(_plain(list_fn(ns, **kw).items))

        return (
            list_typed,
            getattr(api, f"create_namespaced_{snake}"),
            getattr(api, f"delete_namespaced_{snake}"),
        )
    custom = client.CustomObjectsApi(a.api_client)
    group, version, plural = "resource.k8s.io", "v1", PLURALS[kind]

    def list_custom(ns: str, **kw: Any) -> list[dict[str, Any]]:
        found = custom.list_namespaced_custom_object(group, version, ns, plural, **kw)
        return list(found["items"])

    def create_custom(ns: str, body: Any) -> Any:
        return custom.create_namespaced_custom_object(group, version, ns, plural, body)

    def delete_custom(name: str, ns: str) -> Any:
        return custom.delete_namespaced_custom_object(group, version, ns, plural, name)

    return list_custom, create_custom, delete_custom


def _wanted_claims(r: DraRendered) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        "ResourceClaimTemplate": {o["metadata"]["name"]: o for o in r.claim_templates},
        "ResourceClaim": {o["metadata"]["name"]: o for o in r.claims},
    }


def _existing_claims(a: KubeApplier, kind: str) -> dict[str, dict[str, Any]]:
    list_fn = _claim_calls(a, kind)[0]
    found = a._retry(list_fn, a.namespace, label_selector=f"{MANAGED_BY}={MANAGER}")
    return {o["metadata"]["name"]: o for o in found}


def _deployments(a: KubeApplier) -> dict[str, dict[str, Any]]:
    found = a._retry(a.apps.list_namespaced_deployment, a.namespace, label_selector=MODEL_LABEL)
    return {d["metadata"]["name"]: d for d in _plain(found.items)}


def _without_nvidia(resources: dict[str, Any]) -> dict[str, Any]:
    out = dict(resources)
    for key in ("limits", "requests"):
        kept = {k: v for k, v in (out.get(key) or {}).items() if not k.startswith("nvidia.com/")}
        if kept:
            out[key] = kept
        else:
            out.pop(key, None)
    return out


def desired_deployment(
    have: dict[str, Any] | None, base: dict[str, Any] | None, want: dict[str, Any]
) -> dict[str, Any]:
    """``have`` (or a clone of the model's ``base``) with the plan's fields of ``want``.

    Raises: LookupError when there is neither (nothing to take the image and pod spec from).
    """
    if have is not None:
        d = copy.deepcopy(have)
    elif base is not None:
        d = copy.deepcopy(base)
        meta = d["metadata"]
        d["metadata"] = {
            "name": want["metadata"]["name"],
            "namespace": want["metadata"]["namespace"],
            "labels": dict(meta.get("labels") or {}),
        }
        d.pop("status", None)
        d["spec"]["selector"] = copy.deepcopy(want["spec"]["selector"])
    else:
        model = want["metadata"]["labels"][MODEL_LABEL]
        raise LookupError(f"no Deployment labelled {MODEL_LABEL}={model} to change or clone")
    d["metadata"]["labels"] = {**(d["metadata"].get("labels") or {}), **want["metadata"]["labels"]}
    spec, wspec = d["spec"], want["spec"]
    spec["replicas"] = wspec["replicas"]
    tpl, wtpl = spec["template"], wspec["template"]
    tpl.setdefault("metadata", {})
    tpl["metadata"]["labels"] = {
        **(tpl["metadata"].get("labels") or {}),
        **wtpl["metadata"]["labels"],
    }
    pod, wpod = tpl["spec"], wtpl["spec"]
    pod["affinity"] = copy.deepcopy(wpod["affinity"])
    others = [c for c in pod.get("resourceClaims") or [] if c["name"] != POD_CLAIM]
    pod["resourceClaims"] = others + copy.deepcopy(wpod["resourceClaims"])
    c0, w0 = pod["containers"][0], wpod["containers"][0]
    res = _without_nvidia(c0.get("resources") or {})
    claims = [c for c in res.get("claims") or [] if c["name"] != POD_CLAIM]
    res["claims"] = claims + copy.deepcopy(w0["resources"]["claims"])
    c0["resources"] = res
    env = [e for e in c0.get("env") or [] if e["name"] not in MPS_ENV]
    env += copy.deepcopy(w0.get("env") or [])
    if env:
        c0["env"] = env
    else:
        c0.pop("env", None)
    return d


def _owned(d: dict[str, Any]) -> dict[str, Any]:
    """The fields a Change names (what the plan owns of a Deployment)."""
    pod = d["spec"]["template"]["spec"]
    c0 = pod["containers"][0]
    return {
        "replicas": d["spec"].get("replicas"),
        "resourceClaims": pod.get("resourceClaims"),
        "resources": c0.get("resources"),
        "env": c0.get("env"),
        "affinity": pod.get("affinity"),
        "labels": d["metadata"].get("labels"),
    }


def _model(d: dict[str, Any]) -> str:
    return str(d["metadata"]["labels"][MODEL_LABEL])


def _base_of(existing: dict[str, dict[str, Any]], model: str) -> dict[str, Any] | None:
    for _, d in sorted(existing.items()):
        if (d["metadata"].get("labels") or {}).get(MODEL_LABEL) == model:
            return d
    return None


def _stale_variants(r: DraRendered, existing: dict[str, dict[str, Any]]) -> list[str]:
    wanted = {d["metadata"]["name"] for d in r.deployments}
    planned = {v.model for v in r.variants}
    return [
        name
        for name, d in sorted(existing.items())
        if name not in wanted
        and (d["metadata"].get("labels") or {}).get(MODEL_LABEL) in planned
        and VARIANT_LABEL in (d["metadata"].get("labels") or {})
        and (d["spec"].get("replicas") or 0) > 0
    ]


def _diff_cluster(a: KubeApplier, r: DraRendered) -> list[Change]:
    """mig-parted keys and MIG labels that differ."""
    from scheduler.kube.apply import Change

    out: list[Change] = []
    cm = r.mig_parted
    data = _get_configmap(a, cm["metadata"]["name"]) or {}
    for key, value in sorted(cm["data"].items()):
        if data.get(key) != value:
            out.append(Change("ConfigMap", cm["metadata"]["name"], key, data.get(key), value))
    for node, labels in sorted(r.node_labels.items()):
        now = (a._retry(a.core.read_node, node).metadata.labels or {}).get(MIG_CONFIG_LABEL)
        if now != labels[MIG_CONFIG_LABEL]:
            field = f"labels.{MIG_CONFIG_LABEL}"
            out.append(Change("Node", node, field, now, labels[MIG_CONFIG_LABEL]))
    return out


def _diff_claims(a: KubeApplier, r: DraRendered) -> list[Change]:
    """Claim objects to create, replace (changed spec) or delete (no longer named)."""
    from scheduler.kube.apply import Change

    out: list[Change] = []
    for kind, wanted in _wanted_claims(r).items():
        have = _existing_claims(a, kind)
        for name, obj in sorted(wanted.items()):
            if name not in have:
                out.append(Change(kind, name, "create", None, obj["spec"]))
            elif have[name].get("spec") != obj["spec"]:
                out.append(Change(kind, name, "spec", have[name].get("spec"), obj["spec"]))
        out += [Change(kind, n, "delete", n, None) for n in sorted(set(have) - set(wanted))]
    return out


def _diff_deployments(a: KubeApplier, r: DraRendered) -> list[Change]:
    """Deployments to create, the plan's fields that differ, stale variants to scale to 0."""
    from scheduler.kube.apply import Change

    out: list[Change] = []
    existing = _deployments(a)
    for want in r.deployments:
        name = want["metadata"]["name"]
        have = existing.get(name)
        d = desired_deployment(have, _base_of(existing, _model(want)), want)
        if have is None:
            out.append(Change("Deployment", name, "create", None, want["spec"]["replicas"]))
            continue
        before, after = _owned(have), _owned(d)
        out += [
            Change("Deployment", name, k, before[k], v) for k, v in after.items() if before[k] != v
        ]
    for name in _stale_variants(r, existing):
        out.append(Change("Deployment", name, "replicas", existing[name]["spec"]["replicas"], 0))
    return out


def diff_dra(a: KubeApplier, r: DraRendered) -> list[Change]:
    """What would change: mig-parted keys, MIG labels, claim objects, Deployment fields."""
    return _diff_cluster(a, r) + _diff_claims(a, r) + _diff_deployments(a, r)


def _write_claims(a: KubeApplier, r: DraRendered) -> list[tuple[str, str]]:
    """Create the missing claim objects (a changed spec: delete, create); returns the stale."""
    stale = []
    for kind, wanted in _wanted_claims(r).items():
        _, create, delete = _claim_calls(a, kind)
        have = _existing_claims(a, kind)
        for name, obj in sorted(wanted.items()):
            if name in have and have[name].get("spec") != obj["spec"]:
                a._retry(delete, name, a.namespace)
                have.pop(name)
            if name not in have:
                a._retry(create, a.namespace, obj)
        stale += [(kind, n) for n in sorted(set(have) - set(wanted))]
    return stale


def _write_deployment(a: KubeApplier, want: dict[str, Any]) -> None:
    """Read, change and write one Deployment (retried whole, so a 409 re-reads)."""
    name = want["metadata"]["name"]

    def write_deployment() -> None:
        existing = _deployments(a)
        have = existing.get(name)
        d = desired_deployment(have, _base_of(existing, _model(want)), want)
        if have is None:
            a.apps.create_namespaced_deployment(a.namespace, d)
        elif d != have:
            a.apps.replace_namespaced_deployment(name, a.namespace, d)

    a._retry(write_deployment)


def apply_dra(a: KubeApplier, r: DraRendered, changes: Sequence[Change]) -> ApplyResult:
    """ConfigMap, nodes (all-or-rolled-back), then claims and Deployments if all nodes did."""
    from scheduler.kube.apply import ApplyResult

    cm = r.mig_parted
    if _get_configmap(a, cm["metadata"]["name"]) is None:
        a._retry(a.core.create_namespaced_config_map, a.operator_namespace, cm)
    else:
        body = {"data": cm["data"]}
        a._retry(
            a.core.patch_namespaced_config_map, cm["metadata"]["name"], a.operator_namespace, body
        )
    wire_mig_manager(a, cm["metadata"]["name"])
    errors, failed = [], []
    for node, labels in sorted(r.node_labels.items()):
        err, _notes = _apply_node(a, node, labels)
        if err:
            errors.append(err)
            failed.append(node)
    if not failed:
        stale = _write_claims(a, r)
        for want in r.deployments:
            _write_deployment(a, want)
        for name in _stale_variants(r, _deployments(a)):
            a._set_replicas(name, 0)
        for kind, name in stale:
            a._retry(_claim_calls(a, kind)[2], name, a.namespace)
    return ApplyResult(
        tuple(changes), applied=not failed, failed_nodes=tuple(failed), errors=tuple(errors)
    )


def apply_dra_plan(
    a: KubeApplier, plan: Plan, gpus: Sequence[GpuSnapshot], *, dry_run: bool
) -> ApplyResult:
    """Render for DRA with ``a``'s names, diff, and unless ``dry_run`` apply."""
    from scheduler.kube.apply import ApplyResult

    r = render_dra(
        plan,
        gpus,
        namespace=a.namespace,
        mig_configmap=a.config.mig_parted_configmap,
        operator_namespace=a.operator_namespace,
    )
    changes = diff_dra(a, r)
    if dry_run:
        return ApplyResult(tuple(changes), applied=False)
    return apply_dra(a, r, changes)
