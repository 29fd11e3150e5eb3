"""Complete Deployments: the plan's apply configuration merged onto the Deployments it changes.

``plan -o k8s`` prints apply configurations (only the fields costctl owns); ``--manifests``
prints what the cluster would hold after apply: each planned Deployment merged onto its base
(the Deployment of that name, or for a new variant the model's own Deployment, cloned) read
from the cluster or from a directory of YAML files. The merge is server-side apply's for the
fields involved (maps merge, ``containers``/``env`` merge by name, other lists are replaced)
after the stale GPU fields are dropped (planapply's take-over). Pure functions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from scheduler.kube.planapply import CLONED_FROM, clone, patch_config, takeover
from scheduler.kube.render import MODEL_LABEL, Rendered, to_dicts

ASSOCIATIVE = {"containers", "env"}


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
