"""The steps of ``KubeApplier.apply``: build the apply configurations, diff, write in order.

Every object costctl writes is a server-side apply (``PATCH application/apply-patch+yaml``,
``fieldManager=costctl``, ``force=true``): after apply an object holds exactly the fields the
plan owns, fields costctl applied before and no longer applies are removed by the API server,
and fields other managers own (image, ports, probes, the app's own labels) are kept. The diff
(``--dry-run``) is the same apply with ``dryRun=All``, compared with the live object.

Order: ConfigMaps (with the operator's own entries, operator.py), the ClusterPolicy, then node
by node (a node whose MIG layout changes is drained first: drain.py), then the Deployments if
every node succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from scheduler.kube import operator
from scheduler.kube.manifests import CLONED_FROM, clone, patch_config, takeover
from scheduler.kube.render import (
    DP_CONFIG_LABEL,
    MIG_CONFIG_LABEL,
    MIG_STATE_LABEL,
    MODEL_LABEL,
    VARIANT_LABEL,
    Rendered,
    to_dicts,
)

if TYPE_CHECKING:
    from scheduler.kube.apply import ApplyResult, Change, KubeApplier

IGNORED_META = {"managedFields", "resourceVersion", "generation", "uid", "creationTimestamp"}


@dataclass
class Desired:
    """The apply configurations of one plan, built against the live cluster."""

    configmaps: list[dict[str, Any]]  # what ends up (the plan's and the operator's configs)
    during: list[dict[str, Any]]  # while nodes change: also the configs nodes are labelled with
    policy: dict[str, Any]
    deployments: list[dict[str, Any]]
    scale_down: list[str]
    takeovers: dict[str, dict[str, Any]]
    node_labels: dict[str, dict[str, str]]
    live: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)


def _plain(obj: Any) -> dict[str, Any] | None:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj
    out: dict[str, Any] = to_dicts([obj])[0]
    return out


def _read_configmap(a: KubeApplier, name: str) -> dict[str, Any] | None:
    if not name:
        return None
    from scheduler.kube.apply import ApplyError

    try:
        return _plain(a._retry(a.core.read_namespaced_config_map, name, a.operator_namespace))
    except ApplyError as exc:
        if "HTTP 404" in str(exc):
            return None
        raise


def _get_configmap(a: KubeApplier, name: str) -> dict[str, str] | None:
    """A ConfigMap's data in the operator namespace, None when absent (used by dra_apply)."""
    cm = _read_configmap(a, name)
    return None if cm is None else dict(cm.get("data") or {})


def wire_mig_manager(a: KubeApplier, mig_configmap: str) -> None:
    """Point the ClusterPolicy's MIG manager at ``mig_configmap`` (the DRA target's apply)."""
    w = operator.wiring_of(_cluster_policy(a))
    a.server_apply(operator.policy_patch(w, mig_configmap, None))


def _cluster_policy(a: KubeApplier) -> dict[str, Any]:
    from scheduler.kube.apply import ApplyError

    try:
        found = a._retry(a.custom.list_cluster_custom_object, "nvidia.com", "v1", "clusterpolicies")
    except ApplyError as exc:
        if "HTTP 404" not in str(exc):
            raise
        found = {"items": []}
    items = sorted(found.get("items") or [], key=lambda p: p["metadata"]["name"])
    if not items:
        raise ApplyError(
            "no nvidia.com/v1 ClusterPolicy in the cluster: is the GPU Operator installed?"
        )
    return dict(items[0])


def _deployments(a: KubeApplier) -> dict[str, Any]:
    found = a._retry(a.apps.list_namespaced_deployment, a.namespace, label_selector=MODEL_LABEL)
    return {d.metadata.name: d for d in found.items}


def _annotation(obj: dict[str, Any] | None, key: str) -> str | None:
    return ((obj or {}).get("metadata", {}).get("annotations") or {}).get(key)


def _configmaps(
    a: KubeApplier, r: Rendered, live_labels: dict[str, dict[str, str]]
) -> tuple[
    list[list[dict[str, Any]]], dict[str, Any], dict[tuple[str, str], dict[str, Any] | None]
]:
    """(final, during) ConfigMaps, the ClusterPolicy apply configuration, the live objects."""
    policy = _cluster_policy(a)
    w = operator.wiring_of(policy)
    ours = (str(r.mig_parted.metadata.name), str(r.device_plugin.metadata.name))
    live_mig, live_dp = _read_configmap(a, ours[0]), _read_configmap(a, ours[1])
    src_mig, src_dp = operator.sources(
        w,
        ours,
        (_annotation(live_mig, operator.COPIED_FROM), _annotation(live_dp, operator.COPIED_FROM)),
    )
    theirs_mig = _read_configmap(a, src_mig) or {}
    theirs_dp = (_read_configmap(a, src_dp) or {}).get("data") or {}
    used = {labels.get(MIG_CONFIG_LABEL) for labels in live_labels.values()}
    old = (yaml.safe_load(((live_mig or {}).get("data") or {}).get("config.yaml") or "") or {}).get(
        "mig-configs"
    ) or {}
    used_dp = {labels.get(DP_CONFIG_LABEL) for labels in live_labels.values()}
    old_dp = dict((live_dp or {}).get("data") or {})
    versions: list[list[dict[str, Any]]] = []
    for keep in ({}, {k: v for k, v in old.items() if k in used}):
        mig_text = operator.merged_mig_config(
            (r.mig_parted.data or {})["config.yaml"],
            (theirs_mig.get("data") or {}).get("config.yaml"),
            keep,
        )
        kept_dp = {k: v for k, v in old_dp.items() if k in used_dp} if keep else {}
        dp_data = operator.merged_device_plugin(
            dict(r.device_plugin.data or {}), {**kept_dp, **theirs_dp}
        )
        cms: list[dict[str, Any]] = []
        for name, data, src in (
            (ours[0], {"config.yaml": mig_text}, src_mig),
            (ours[1], dp_data, src_dp),
        ):
            meta: dict[str, Any] = {"name": name, "namespace": a.operator_namespace}
            if src:
                meta["annotations"] = {operator.COPIED_FROM: src}
            cms.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
        versions.append(cms)
    live = {
        ("ConfigMap", ours[0]): live_mig,
        ("ConfigMap", ours[1]): live_dp,
        ("ClusterPolicy", w.policy): policy,
    }
    return versions, operator.policy_patch(w, ours[0], ours[1]), live


def _deployment_configs(
    a: KubeApplier, r: Rendered
) -> tuple[
    list[dict[str, Any]],
    list[str],
    dict[str, dict[str, Any]],
    dict[tuple[str, str], dict[str, Any] | None],
]:
    existing = {n: _plain(d) for n, d in _deployments(a).items()}
    bases: dict[str, dict[str, Any]] = {}
    for d in existing.values():
        assert d is not None
        if _annotation(d, CLONED_FROM) is None:
            bases.setdefault(str((d["metadata"].get("labels") or {}).get(MODEL_LABEL)), d)
    out = []
    takeovers: dict[str, dict[str, Any]] = {}
    live: dict[tuple[str, str], dict[str, Any] | None] = {}
    for want in to_dicts(r.deployments):
        name = want["metadata"]["name"]
        model = want["metadata"]["labels"][MODEL_LABEL]
        have = existing.get(name)
        live[("Deployment", name)] = have
        if have is not None and _annotation(have, CLONED_FROM) is None:
            container = have["spec"]["template"]["spec"]["containers"][0]["name"]
            out.append(patch_config(want, container))
            if (patch := takeover(have, want)) is not None:
                takeovers[name] = patch
        elif model in bases:
            out.append(clone(want, bases[model]))
        else:
            raise LookupError(f"no Deployment labelled {MODEL_LABEL}={model} to patch or clone")
    wanted = {d["metadata"]["name"] for d in out}
    planned = {v.model for v in r.variants}
    down = [
        name
        for name, d in sorted(existing.items())
        if d is not None
        and name not in wanted
        and (d["metadata"].get("labels") or {}).get(MODEL_LABEL) in planned
        and VARIANT_LABEL in (d["metadata"].get("labels") or {})
        and (d["spec"].get("replicas") or 0) > 0
    ]
    for name in down:
        live[("Deployment", name)] = existing[name]
    return out, down, takeovers, live


def desired(a: KubeApplier, r: Rendered) -> Desired:
    """The plan's apply configurations, built against what the cluster holds now."""
    labels = {n: dict(a._retry(a.core.read_node, n).metadata.labels or {}) for n in r.node_labels}
    (final, during), policy, live = _configmaps(a, r, labels)
    deps, down, takeovers, live_d = _deployment_configs(a, r)
    live.update(live_d)
    for n, lab in labels.items():
        live[("Node", n)] = {"metadata": {"labels": lab}}
    return Desired(final, during, policy, deps, down, takeovers, dict(r.node_labels), live)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if not prefix and k == "status":
                continue
            if prefix == "metadata" and k in IGNORED_META:
                continue
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or ({prefix: {}} if prefix else {})
    if isinstance(obj, list) and obj and all(isinstance(x, dict) and "name" in x for x in obj):
        out = {}
        for x in obj:
            out.update(_flatten(x, f"{prefix}[{x['name']}]"))
        return out
    return {prefix: obj}


def object_changes(
    kind: str, name: str, before: dict[str, Any] | None, after: dict[str, Any]
) -> list[Change]:
    """Field-level differences between a live object and what apply makes of it."""
    from scheduler.kube.apply import Change

    if before is None:
        return [Change(kind, name, "create", None, after.get("spec", {}).get("replicas", "new"))]
    b, c = _flatten(before), _flatten(after)
    return [
        Change(kind, name, k, b.get(k), c.get(k))
        for k in sorted(set(b) | set(c))
        if b.get(k) != c.get(k)
    ]


def diff_rendered(a: KubeApplier, d: Desired) -> list[Change]:
    """What apply would change: a dry-run server-side apply of each object against the live one."""
    from scheduler.kube.apply import Change

    out: list[Change] = []
    for body in (*d.configmaps, d.policy):
        name = body["metadata"]["name"]
        after = a.server_apply(body, dry_run=True)
        out += object_changes(body["kind"], name, d.live.get((body["kind"], name)), after)
    for node, labels in sorted(d.node_labels.items()):
        current = (d.live.get(("Node", node)) or {}).get("metadata", {}).get("labels", {})
        for k, v in sorted(labels.items()):
            if current.get(k) != v:
                out.append(Change("Node", node, f"labels.{k}", current.get(k), v))
    for name, patch in sorted(d.takeovers.items()):
        (c,) = patch["spec"]["template"]["spec"]["containers"]
        stale = [f"{p}.{k}" for p, ks in (c.get("resources") or {}).items() for k in ks]
        stale += [f"env.{e['name']}" for e in c.get("env") or []]
        out.append(Change("Deployment", name, "take over (set by another manager)", stale, None))
    for body in d.deployments:
        name = body["metadata"]["name"]
        have = d.live.get(("Deployment", name))
        after = a.server_apply(body, dry_run=True)
        out += object_changes("Deployment", name, have, after)
    for name in d.scale_down:
        have = d.live.get(("Deployment", name)) or {}
        out.append(
            Change("Deployment", name, "spec.replicas", have.get("spec", {}).get("replicas"), 0)
        )
    return out


def _apply_node(a: KubeApplier, node: str, labels: dict[str, str]) -> tuple[str | None, list[str]]:
    """Label one node (draining it first when its MIG layout changes); (error, notes)."""
    from scheduler.kube.drain import drain, undrain

    current = a._retry(a.core.read_node, node).metadata.labels or {}
    if current.get(MIG_STATE_LABEL) in ("pending", "rebooting"):
        return f"{node}: MIG reconfiguration already in progress ({current[MIG_STATE_LABEL]})", []
    change = {k: v for k, v in labels.items() if current.get(k) != v}
    if not change:
        return None, []
    repartition = MIG_CONFIG_LABEL in change
    notes: list[str] = []
    drained = None
    if repartition:
        drained, err = drain(a, node)
        notes += drained.notes
        if err:
            undrain(a, drained)
            return err, notes
    a.reserve(node, {k: current.get(k) for k in change})
    try:
        a._retry(a.core.patch_node, node, {"metadata": {"labels": change}})
        if repartition:
            state = a.wait_mig(node)
            if state != "success":
                a.unreserve(node)
                if drained is not None:
                    undrain(a, drained)
                return (
                    f"{node}: MIG reconfiguration {state}; labels rolled back, node uncordoned",
                    notes,
                )
    except Exception:
        a.unreserve(node)
        if drained is not None:
            undrain(a, drained)
        raise
    a.release(node)
    if drained is not None:
        a.cordon(node, False)
    return None, notes


def apply_rendered(a: KubeApplier, d: Desired, changes: list[Change]) -> ApplyResult:
    """ConfigMaps, ClusterPolicy, node by node (all-or-rolled-back), then Deployments."""
    from scheduler.kube.apply import ApplyResult

    for body in (*d.during, d.policy):
        a.server_apply(body)
    errors, failed, notes = [], [], []
    for node, labels in sorted(d.node_labels.items()):
        err, n = _apply_node(a, node, labels)
        notes += n
        if err:
            errors.append(err)
            failed.append(node)
    if not failed:
        for body in d.configmaps:  # no node is labelled with a dropped config any more
            a.server_apply(body)
        for name, patch in sorted(d.takeovers.items()):
            a._retry(a.apps.patch_namespaced_deployment, name, a.namespace, patch)
        for body in d.deployments:
            a.server_apply(body)
        for name in d.scale_down:
            a._set_replicas(name, 0)
    return ApplyResult(
        tuple(changes),
        applied=not failed,
        failed_nodes=tuple(failed),
        errors=tuple(errors),
        notes=tuple(notes),
    )
