"""The kustomizations under deploy/: every entry exists, nothing is orphaned, the overlay
builds (namespace, image, replicas, patches) and still validates; the resolver of
tests/deploy/kustomize.py refuses what kustomize refuses and agrees with `kubectl kustomize`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy.kustomize import (
    KustomizeError,
    build,
    containers,
    file_resources,
    kustomization_dirs,
    object_id,
)
from tests.deploy.manifests import (
    BASE,
    DEPLOY,
    EXAMPLE,
    K8S_VERSIONS,
    built,
    is_crd_kind,
    named,
    referenced_files,
    resource_files,
)
from tests.deploy.test_manifests import check_service_monitor

DIRS = kustomization_dirs(DEPLOY)


def test_the_kustomizations() -> None:
    rel = [str(d.relative_to(DEPLOY)) for d in DIRS]
    assert rel == [
        "base",
        "components/monitoring",
        "overlays/example",
        "overlays/example/app",
    ]


@pytest.mark.parametrize("directory", DIRS, ids=lambda d: str(d.relative_to(DEPLOY)))
def test_every_entry_exists(directory: Path) -> None:
    for path in file_resources(directory):  # raises KustomizeError naming a missing entry
        assert path.is_file()


def test_no_manifest_is_left_out() -> None:
    assert set(resource_files()) - referenced_files() == set()


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("directory", [BASE, EXAMPLE], ids=["base", "example"])
def test_builds_validate(directory: Path, version: str) -> None:
    docs = built(directory)
    assert len(docs) >= 20
    for d in docs:
        if is_crd_kind(d):
            check_service_monitor(d)
        else:
            kubernetes_validate.validate(d, version, strict=True)


def test_the_overlay_sets_namespace_image_replicas_and_patches() -> None:
    docs = built()
    where = {object_id(d)[1:] for d in docs if d["metadata"].get("namespace") != "costctl"}
    assert where == {
        ("Namespace", "", "costctl"),
        ("ClusterRole", "", "costctl-worker"),
        ("ClusterRoleBinding", "", "costctl-worker"),
        ("ClusterRole", "", "costctl-agent"),
        ("ClusterRoleBinding", "", "costctl-agent"),
        ("Role", "default", "costctl-worker"),
        ("RoleBinding", "default", "costctl-worker"),
        ("Role", "default", "costctl-api"),
        ("RoleBinding", "default", "costctl-api"),
        ("Role", "gpu-operator", "costctl-worker"),
        ("RoleBinding", "gpu-operator", "costctl-worker"),
    }
    for d in docs:
        for s in d.get("subjects") or []:
            assert s["namespace"] == "costctl", d["metadata"]
    images = {c["image"] for d in docs for c in containers(d)}
    assert images == {"registry.example.com/costctl:0.1.0"}
    api = named(docs, "Deployment", "costctl-api")
    assert api["spec"]["replicas"] == 3
    res = api["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    hpa = named(docs, "HorizontalPodAutoscaler", "costctl-api")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 8)
    assert hpa["metrics"]  # the patch merged, did not replace the spec
    assert "ServiceMonitor" in {d["kind"] for d in docs}
    assert "ServiceMonitor" not in {d["kind"] for d in built(BASE)}


def test_the_base_is_unchanged_by_the_overlay() -> None:
    base = named(built(BASE), "Deployment", "costctl-api")
    assert base["spec"]["replicas"] == 2 and "namespace" not in base["metadata"]
    assert base["spec"]["template"]["spec"]["containers"][0]["image"] == "costctl"


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"kustomization.yaml": "resources: [missing.yaml]\n"}, "'missing.yaml' does not exist"),
        ({"a/kustomization.yaml": "resources: [../cm.yaml]\n", "cm.yaml": CM}, "outside"),
        ({"kustomization.yaml": "commonLabels: {a: b}\n"}, "unsupported fields"),
        (
            {
                "kustomization.yaml": "resources: [cm.yaml, cm2.yaml]\n",
                "cm.yaml": CM,
                "cm2.yaml": CM,
            },
            "two objects",
        ),
        (
            {
                "kustomization.yaml": "resources: [cm.yaml]\npatches: [{path: p.yaml}]\n",
                "cm.yaml": CM,
                "p.yaml": CM.replace("name: x", "name: y"),
            },
            "matches nothing",
        ),
        (
            {"kustomization.yaml": "resources: [cm.yaml]\nimages: [{name: nope}]\n", "cm.yaml": CM},
            "matches no container",
        ),
    ],
    ids=["missing", "outside-root", "unsupported", "duplicate", "patch-target", "image"],
)
def test_the_resolver_refuses(tmp_path: Path, files: dict[str, str], message: str) -> None:
    _write(tmp_path, files)
    root = tmp_path / "a" if (tmp_path / "a").exists() else tmp_path
    with pytest.raises(KustomizeError, match=message):
        build(root)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("directory", [BASE, EXAMPLE], ids=["base", "example"])
def test_the_resolver_agrees_with_kubectl_kustomize(directory: Path) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], check=True, capture_output=True, text=True
    ).stdout
    theirs = {object_id(d): d for d in yaml.safe_load_all(out) if d}
    mine = {object_id(d): d for d in built(directory)}
    assert sorted(mine) == sorted(theirs)
    assert [i for i in mine if mine[i] != theirs[i]] == []
