"""Complete Deployments: the plan's apply configuration merged onto the Deployments it changes.

``plan -o k8s`` prints apply configurations (only the fields costctl owns); ``--manifests``
prints what the cluster would hold after apply: each planned Deployment merged onto its base
(the Deployment of that name, or for a new variant the model's own Deployment, cloned) read
from the cluster or from a directory of YAML files. The merge is server-side apply's for the
fields involved (maps merge, ``containers``/``env`` merge by name, other lists are replaced)
after the stale GPU fields are dropped (``takeover``). Also the Deployment apply configurations
planapply sends: ``patch_config`` (a Deployment someone else created), ``clone`` (a variant
costctl creates from the model's Deployment). Pure functions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from scheduler.kube.render import MODEL_LABEL, Rendered, to_dicts

ASSOCIATIVE = {"containers", "env"}
CLONED_FROM = "costctl.io/cloned-from"


def patch_config(want: dict[str, Any], container: str) -> dict[str, Any]:
    """The fields costctl owns in a Deployment someone else created (not its selector)."""
    spec = copy.deepcopy(want["spec"])
    spec.pop("selector", None)
    spec["template"]["spec"]["containers"][0]["name"] = container
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": want["metadata"]["name"],
            "namespace": want["metadata"]["namespace"],
            "labels": want["metadata"]["labels"],
        },
        "spec": spec,
    }


def takeover(have: dict[str, Any], want: dict[str, Any]) -> dict[str, Any] | None:
    """A strategic merge patch deleting GPU fields the plan does not want but others set.

    Server-side apply removes only what costctl itself applied before; a ``nvidia.com/*``
    limit or request, or a ``CUDA_MPS_*`` variable, that the Deployment's own manifest set
    stays with its manager. costctl owns those keys: this patch removes the stale ones (it
    shows in the diff as ``take over``). Remove them from the manifests to keep it that way.
    """
    c = have["spec"]["template"]["spec"]["containers"][0]
    w = want["spec"]["template"]["spec"]["containers"][0]
    res = c.get("resources") or {}
    wanted = set((w.get("resources") or {}).get("limits") or {})
    drop = {
        part: {
            k: None for k in res.get(part) or {} if k.startswith("nvidia.com/") and k not in wanted
        }
        for part in ("limits", "requests")
    }
    drop = {k: v for k, v in drop.items() if v}
    keep_env = {e["name"] for e in w.get("env") or []}
    env = [
        {"name": e["name"], "$patch": "delete"}
        for e in c.get("env") or []
        if e["name"].startswith("CUDA_MPS_") and e["name"] not in keep_env
    ]
    if not drop and not env:
        return None
    patch_c: dict[str, Any] = {"name": c["name"]}
    if drop:
        patch_c["resources"] = drop
    if env:
        patch_c["env"] = env
    return {"spec": {"template": {"spec": {"containers": [patch_c]}}}}


def clone(want: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """A complete variant Deployment: the base's pod template with the plan's fields."""
    body = copy.deepcopy(base)
    meta = body["metadata"]
    body["metadata"] = {
        "name": want["metadata"]["name"],
        "namespace": meta.get("namespace"),
        "labels": {**(meta.get("labels") or {}), **want["metadata"]["labels"]},
        "annotations": {CLONED_FROM: meta["name"]},
    }
    body.pop("status", None)
    body["apiVersion"], body["kind"] = "apps/v1", "Deployment"
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
    limits = {
        k: v
        for k, v in ((c0.get("resources") or {}).get("limits") or {}).items()
        if not k.startswith("nvidia.com/")
    }
    c0["resources"] = {
        **(c0.get("resources") or {}),
        "limits": {**limits, **w0["resources"]["limits"]},
    }
    env = [e for e in c0.get("env") or [] if not e["name"].startswith("CUDA_MPS_")]
    env += w0.get("env") or []
    if env:
        c0["env"] = env
    else:
        c0.pop("env", None)
    tpl["spec"]["affinity"] = want["spec"]["template"]["spec"]["affinity"]
    return body


def _merge(base: Any, applied: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(applied, dict):
        out = dict(base)
        for k, v in applied.items():
            out[k] = _merge(base.get(k), v, k)
        return out
    if key in ASSOCIATIVE and isinstance(applied, list):
        by = {x["name"]: x for x in base or []}
        order = [x["name"] for x in base or []]
        for x in applied:
            if x["name"] not in by:
                order.append(x["name"])
            by[x["name"]] = _merge(by.get(x["name"]), x)
        return [by[n] for n in order]
    return copy.deepcopy(applied)


def _strip(base: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    """``base`` without the stale GPU fields the take-over patch deletes."""
    out = copy.deepcopy(base)
    if patch is None:
        return out
    (pc,) = patch["spec"]["template"]["spec"]["containers"]
    c = out["spec"]["template"]["spec"]["containers"][0]
    for part, keys in (pc.get("resources") or {}).items():
        for k in keys:
            (c.get("resources") or {}).get(part, {}).pop(k, None)
    gone = {e["name"] for e in pc.get("env") or []}
    if c.get("env"):
        c["env"] = [e for e in c["env"] if e["name"] not in gone] or None
        if c["env"] is None:
            c.pop("env")
    return out


def complete(r: Rendered, bases: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Complete Deployments of the plan. Raises: LookupError when a model has no base."""
    by_name = {b["metadata"]["name"]: b for b in bases if b.get("kind") == "Deployment"}
    by_model: dict[str, dict[str, Any]] = {}
    for b in by_name.values():
        if (b["metadata"].get("annotations") or {}).get(CLONED_FROM) is None:
            by_model.setdefault(str((b["metadata"].get("labels") or {}).get(MODEL_LABEL)), b)
    out = []
    for want in to_dicts(r.deployments):
        name, model = want["metadata"]["name"], want["metadata"]["labels"][MODEL_LABEL]
        base = by_name.get(name)
        if (
            base is not None
            and (base["metadata"].get("annotations") or {}).get(CLONED_FROM) is None
        ):
            container = base["spec"]["template"]["spec"]["containers"][0]["name"]
            cfg = patch_config(want, container)
            merged = _merge(_strip(base, takeover(base, want)), cfg)
            merged.pop("status", None)
            (merged["metadata"] or {}).pop("managedFields", None)
            out.append(merged)
        elif model in by_model:
            out.append(clone(want, by_model[model]))
        else:
            raise LookupError(f"no Deployment labelled {MODEL_LABEL}={model} (or named {name})")
    return out


def read_dir(path: Path) -> list[dict[str, Any]]:
    """Every YAML document of ``*.yaml`` / ``*.yml`` under ``path``. Raises: OSError, YAMLError."""
    if not path.is_dir():
        raise NotADirectoryError(f"not a directory: {path}")
    docs: list[dict[str, Any]] = []
    for f in sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")]):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if isinstance(d, dict)]
    return docs
