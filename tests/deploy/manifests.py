"""Where deploy/ lies, what it builds to, and the checks shared by the deploy tests."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from kubernetes_validate.utils import latest_version

from tests.deploy.kustomize import (
    Doc,
    build,
    containers,
    file_resources,
    kustomization_dirs,
    load_docs,
    pod_spec,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
EXAMPLE = DEPLOY / "overlays" / "example"
# Kubernetes 1.34 (the oldest supported here) and the newest schema kubernetes-validate ships.
K8S_VERSIONS = sorted({"1.34.0", latest_version()}, key=lambda v: tuple(map(int, v.split("."))))
# Kinds whose schemas come from CRDs (kubernetes-validate has none): checked by hand.
CRD_GROUPS = {"monitoring.coreos.com"}
LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/part-of")
COMPONENT = "app.kubernetes.io/component"
WORKLOADS = {"Deployment", "DaemonSet", "Job", "StatefulSet", "CronJob"}


def yaml_files() -> list[Path]:
    """Every YAML file under deploy/."""
    return sorted(p for ext in ("*.yaml", "*.yml") for p in DEPLOY.rglob(ext))


def patch_files() -> set[Path]:
    """The files kustomizations use as patches (partial objects, not resources)."""
    out: set[Path] = set()
    for d in kustomization_dirs(DEPLOY):
        k = load_docs(d / "kustomization.yaml")[0]
        out |= {(d / p["path"]).resolve() for p in k.get("patches") or [] if "path" in p}
    return out


def resource_files() -> list[Path]:
    """The YAML files that hold whole objects (no kustomizations, no patches)."""
    skip = patch_files()
    return [p for p in yaml_files() if p.name != "kustomization.yaml" and p.resolve() not in skip]


@cache
def _built(directory: Path) -> tuple[Doc, ...]:
    return tuple(build(directory))


def built(directory: Path = EXAMPLE) -> list[Doc]:
    """``kustomize build directory`` (a fresh copy each call: tests may change it)."""
    return copy.deepcopy(list(_built(directory)))


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    """The one object of ``kind`` called ``name``."""
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def is_crd_kind(doc: Doc) -> bool:
    """True for kinds defined by a CustomResourceDefinition."""
    return doc["apiVersion"].split("/")[0] in CRD_GROUPS


def env_of(container: Doc) -> dict[str, Any]:
    """name -> value (str) or valueFrom (dict) of a container's env."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def pods(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(workload, pod spec) for every workload object."""
    for d in docs:
        if (spec := pod_spec(d)) is not None:
            yield d, spec


def all_containers(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(workload, container) for every container."""
    for d in docs:
        for c in containers(d):
            yield d, c


def secret_keys_in_readme() -> set[str]:
    """The keys of the `kubectl create secret generic costctl` command in deploy/README.md."""
    text = (DEPLOY / "README.md").read_text()
    (cmd,) = re.findall(r"kubectl[^\n]*create secret generic costctl(?:[^\n]*\\\n)*[^\n]*", text)
    return set(re.findall(r"--from-literal=([a-z0-9-]+)=", cmd))


def referenced_files() -> set[Path]:
    """Every file some kustomization under deploy/ names."""
    return {p for d in kustomization_dirs(DEPLOY) for p in file_resources(d)}
