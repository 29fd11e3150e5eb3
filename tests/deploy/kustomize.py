"""A small kustomize for tests: the features deploy/ uses, and a KustomizeError for any other.

Supported: ``resources`` (files and directories), ``components``, ``namespace``, ``images``,
``replicas`` and ``patches`` (strategic-merge, by ``target`` kind/name or by the patch's own
kind and name). Like kustomize, files must lie at or below their kustomization's directory
(directories may lie anywhere), ids (group, kind, namespace, name) must be unique, and the
namespace transformer sets ``metadata.namespace`` on namespaced objects and on binding
subjects named ``default`` only.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "namespace",
    "images",
    "replicas",
    "patches",
}
CLUSTER_SCOPED = {
    "Namespace",
    "Node",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "RuntimeClass",
    "CustomResourceDefinition",
    "ClusterPolicy",
}
WITH_REPLICAS = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}


class KustomizeError(Exception):
    """A kustomization this resolver (or kustomize) refuses."""


def load_docs(path: Path) -> list[Doc]:
    """The YAML documents of a file (empty documents dropped)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in docs:
        if not isinstance(d, dict):
            raise KustomizeError(f"{path}: a document is not a mapping")
    return docs


def kustomization_file(directory: Path) -> Path:
    """The kustomization file of a directory."""
    for name in KUSTOMIZATION_NAMES:
        if (directory / name).is_file():
            return directory / name
    raise KustomizeError(f"{directory}: no kustomization file")


def pod_spec(doc: Doc) -> Doc | None:
    """The pod spec of a workload object, or None."""
    spec = doc.get("spec") or {}
    kind = doc.get("kind")
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    if kind in WITH_REPLICAS | {"DaemonSet", "Job"}:
        return spec.get("template", {}).get("spec")
    return None


def containers(doc: Doc) -> Iterator[Doc]:
    """Containers and init containers of a workload object."""
    spec = pod_spec(doc) or {}
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def object_id(doc: Doc) -> tuple[str, str, str, str]:
    """(API group, kind, namespace, name)."""
    group = doc["apiVersion"].rpartition("/")[0]
    meta = doc.get("metadata") or {}
    return (group, doc["kind"], meta.get("namespace") or "", meta["name"])


def build(directory: Path) -> list[Doc]:
    """The objects ``kustomize build <directory>`` would print (order aside)."""
    docs = _build(directory, "Kustomization")
    seen: set[tuple[str, str, str, str]] = set()
    for d in docs:
        if (i := object_id(d)) in seen:
            raise KustomizeError(f"{directory}: two objects with the id {i}")
        seen.add(i)
    return docs


def _inside(root: Path, entry: str) -> Path:
    if "://" in entry or entry.startswith(("github.com/", "git@")):
        raise KustomizeError(f"{root}: remote resource {entry!r} is not supported")
    path = (root / entry).resolve()
    if not path.exists():
        raise KustomizeError(f"{kustomization_file(root)}: {entry!r} does not exist")
    if path.is_file() and not path.is_relative_to(root.resolve()):
        raise KustomizeError(f"{root}: file {entry!r} is outside the kustomization root")
    return path


def _build(directory: Path, kind: str, parent: list[Doc] | None = None) -> list[Doc]:
    """A Kustomization's objects; a Component's transformers also act on ``parent``'s."""
    k = load_docs(kustomization_file(directory))[0]
    if unknown := set(k) - SUPPORTED:
        raise KustomizeError(f"{directory}: unsupported fields {sorted(unknown)}")
    if k.get("kind", "Kustomization") != kind:
        raise KustomizeError(f"{directory}: kind {k.get('kind')}, expected {kind}")
    docs: list[Doc] = list(parent or [])
    for entry in k.get("resources") or []:
        path = _inside(directory, entry)
        docs += _build(path, "Kustomization") if path.is_dir() else load_docs(path)
    for entry in k.get("components") or []:
        docs = _build(_inside(directory, entry), "Component", docs)
    return _transform(directory, k, docs)


def _transform(directory: Path, k: Doc, docs: list[Doc]) -> list[Doc]:
    docs = copy.deepcopy(docs)
    for p in k.get("patches") or []:
        _patch(directory, p, docs)
    if ns := k.get("namespace"):
        for d in docs:
            _set_namespace(d, ns)
    for r in k.get("replicas") or []:
        hits = [
            d for d in docs if d["kind"] in WITH_REPLICAS and d["metadata"]["name"] == r["name"]
        ]
        if not hits:
            raise KustomizeError(f"{directory}: replicas for {r['name']!r} match nothing")
        for d in hits:
            d["spec"]["replicas"] = int(r["count"])
    for image in k.get("images") or []:
        if not sum(_retag(c, image) for d in docs for c in containers(d)):
            raise KustomizeError(f"{directory}: image {image['name']!r} matches no container")
    return docs


def _set_namespace(doc: Doc, ns: str) -> None:
    if doc["kind"] not in CLUSTER_SCOPED:
        doc["metadata"]["namespace"] = ns
    if doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
        for s in doc.get("subjects") or []:
            if s.get("name") == "default":
                s["namespace"] = ns


def _retag(container: Doc, image: Doc) -> bool:
    ref: str = container["image"]
    name, sep, suffix = ref.partition("@")
    if not sep:
        head, colon, tag = ref.rpartition(":")
        if colon and "/" not in tag:
            name, sep, suffix = head, ":", tag
    if name != image["name"]:
        return False
    if unknown := set(image) - {"name", "newName", "newTag", "digest"}:
        raise KustomizeError(f"images: unsupported fields {sorted(unknown)}")
    if image.get("digest"):
        sep, suffix = "@", image["digest"]
    elif image.get("newTag"):
        sep, suffix = ":", str(image["newTag"])
    container["image"] = f"{image.get('newName', name)}{sep}{suffix}"
    return True


def _patch(directory: Path, entry: Doc, docs: list[Doc]) -> None:
    if unknown := set(entry) - {"path", "patch", "target"}:
        raise KustomizeError(f"{directory}: patch fields {sorted(unknown)} are not supported")
    if "path" in entry:
        (body,) = load_docs(_inside(directory, entry["path"]))
    else:
        body = yaml.safe_load(entry["patch"])
    if not isinstance(body, dict) or "op" in body:
        raise KustomizeError(f"{directory}: only strategic-merge patches are supported")
    target = entry.get("target") or {"kind": body["kind"], "name": body["metadata"]["name"]}
    if unknown := set(target) - {"kind", "name", "namespace"}:
        raise KustomizeError(f"{directory}: patch target fields {sorted(unknown)} unsupported")
    hits = [
        i
        for i, d in enumerate(docs)
        if all((d["metadata"].get(k) if k != "kind" else d["kind"]) == v for k, v in target.items())
    ]
    if not hits:
        raise KustomizeError(f"{directory}: patch target {target} matches nothing")
    for i in hits:
        patch = copy.deepcopy(body)
        patch.pop("apiVersion", None)
        patch.pop("kind", None)
        patch["metadata"] = {
            k: v for k, v in patch.get("metadata", {}).items() if k not in ("name", "namespace")
        }
        docs[i] = strategic_merge(docs[i], patch)


def strategic_merge(base: Any, patch: Any, key: str | None = None) -> Any:
    """Strategic merge: maps merge (null deletes), lists with a merge key (MERGE_KEYS) merge
    by it, other lists are replaced; ``$patch`` directives raise."""
    if isinstance(patch, dict):
        out = dict(base) if isinstance(base, dict) else {}
        for k, v in patch.items():
            if k.startswith("$"):
                raise KustomizeError(f"patch directive {k} is not supported")
            if v is None:
                out.pop(k, None)
            else:
                out[k] = strategic_merge(out.get(k), v, k)
        return out
    merge_key = MERGE_KEYS.get(key or "")
    if isinstance(patch, list) and isinstance(base, list) and merge_key:
        out_list = [copy.deepcopy(x) for x in base]
        for item in patch:
            match = [j for j, x in enumerate(out_list) if x.get(merge_key) == item[merge_key]]
            if match:
                out_list[match[0]] = strategic_merge(out_list[match[0]], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def kustomization_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` with a kustomization file."""
    return sorted({p.parent for n in KUSTOMIZATION_NAMES for p in root.rglob(n)})


def file_resources(directory: Path) -> set[Path]:
    """The files a kustomization names directly (resources and patch paths)."""
    k = load_docs(kustomization_file(directory))[0]
    out = set()
    for entry in k.get("resources") or []:
        path = _inside(directory, entry)
        if path.is_file():
            out.add(path)
    for p in k.get("patches") or []:
        if "path" in p:
            out.add(_inside(directory, p["path"]))
    return out
