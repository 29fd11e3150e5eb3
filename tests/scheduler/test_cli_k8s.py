"""`costctl plan -o k8s` (patches vs --manifests) and `apply` without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from costctl.cli import app
from scheduler.kube.render import mps_env
from tests.scheduler.test_cli_views import SPEC

runner = CliRunner()
BASE = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: llama-3-8b, namespace: default, labels: {app: llama, costctl.io/model: llama-3-8b}}
spec:
  replicas: 1
  selector: {matchLabels: {app: llama}}
  template:
    metadata: {labels: {app: llama}}
    spec:
      containers:
        - name: server
          image: vllm/vllm-openai:v0.6
          ports: [{containerPort: 8000}]
          env: [{name: CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, value: "50"}, {name: HF_HOME, value: /c}]
          resources: {limits: {nvidia.com/gpu: "1", memory: 32Gi}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  {name: mistral-7b, namespace: default, labels: {app: mistral, costctl.io/model: mistral-7b}}
spec:
  replicas: 1
  selector: {matchLabels: {app: mistral}}
  template:
    metadata: {labels: {app: mistral}}
    spec:
      containers: [{name: server, image: vllm/vllm-openai:v0.6}]
"""


@pytest.fixture
def args(tmp_path: Path) -> list[str]:
    spec = tmp_path / "fleet.yaml"
    spec.write_text(SPEC)
    return ["--database-url", f"sqlite:///{tmp_path}/cli.db", "plan", "--spec", str(spec)]


def test_plan_k8s_says_it_prints_patches(args: list[str]) -> None:
    r = runner.invoke(app, [*args, "-o", "k8s"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("# costctl plan (target device-plugin): server-side apply")
    assert "PATCHES" in r.output and "None" not in r.output
    deps = [d for d in yaml.safe_load_all(r.output) if d and d["kind"] == "Deployment"]
    assert deps and all("image" not in d["spec"]["template"]["spec"]["containers"][0] for d in deps)


def test_manifests_from_a_directory_are_complete_and_clean(args: list[str], tmp_path: Path) -> None:
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "models.yaml").write_text(BASE)
    r = runner.invoke(app, [*args, "-o", "k8s", "--manifests", "--from-dir", str(d)])
    assert r.exit_code == 0, r.output
    assert "PATCHES" not in r.output
    deps = {
        o["metadata"]["name"]: o
        for o in yaml.safe_load_all(r.output)
        if o and o["kind"] == "Deployment"
    }
    llama = deps["llama-3-8b"]
    c = llama["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "vllm/vllm-openai:v0.6" and c["ports"] == [{"containerPort": 8000}]
    limits = c["resources"]["limits"]
    gpu = {k for k in limits if k.startswith("nvidia.com/")}
    assert len(gpu) == 1 and limits["memory"] == "32Gi"
    names = [e["name"] for e in c.get("env") or []]
    assert "HF_HOME" in names
    if gpu == {"nvidia.com/gpu"} and any(n.startswith("CUDA_MPS_") for n in names):
        assert (
            dict((e["name"], e["value"]) for e in c["env"])["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"]
            != "50"
        )
    else:
        assert not any(n.startswith("CUDA_MPS_") for n in names)
    assert llama["spec"]["selector"] == {"matchLabels": {"app": "llama"}}  # selector kept
    assert all(o["spec"]["template"]["spec"]["containers"][0].get("image") for o in deps.values())


def test_manifests_flags_need_k8s_output(args: list[str], tmp_path: Path) -> None:
    r = runner.invoke(app, [*args, "--manifests"])
    assert r.exit_code == 2 and "-o k8s" in r.output
    r = runner.invoke(app, [*args, "-o", "k8s", "--target", "nope"])
    assert r.exit_code == 2 and "--target" in r.output
    r = runner.invoke(app, [*args, "-o", "k8s", "--manifests", "--from-dir", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--from-dir" in r.output and "not a directory" in r.output


def test_apply_dry_run_without_a_cluster_is_one_line(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the real loaders (conftest stubs them), with nothing to load: no cluster is reachable
    from kubernetes import config as kube_config
    from kubernetes.config import incluster_config
    from kubernetes.config import kube_config as kube_config_file

    monkeypatch.setattr(kube_config, "load_kube_config", kube_config_file.load_kube_config)
    monkeypatch.setattr(
        kube_config, "load_incluster_config", incluster_config.load_incluster_config
    )
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    apply_args = [*args[:2], "apply", *args[3:], "--dry-run"]
    r = runner.invoke(app, apply_args)
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "no Kubernetes cluster" in lines[0], r.output
    assert "Traceback" not in r.output


def test_mps_env_leaves_out_what_a_slot_does_not_carry() -> None:
    assert mps_env(None, None) == ()
    assert mps_env(30, None) == (("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "30"),)
    assert mps_env(30, 18000)[1] == ("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "0=18000M")


def test_manifests_from_the_cluster(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from costctl.commands import scheduling
    from scheduler.kube import KubeApplier
    from tests.utils.kube_server import KubeServer

    with KubeServer() as k:
        for m in ("llama-3-8b", "mistral-7b"):
            k.state.add_deployment("default", m, model=m, image="registry/x:1")

        def factory(settings: object) -> KubeApplier:
            return KubeApplier(k.api_client(), "default", sleep=lambda s: None)

        monkeypatch.setattr(scheduling, "APPLIER_FACTORY", factory)
        r = runner.invoke(app, [*args, "-o", "k8s", "--manifests"])
        assert r.exit_code == 0, r.output
        deps = [o for o in yaml.safe_load_all(r.output) if o and o["kind"] == "Deployment"]
        assert deps
        for d in deps:
            c = d["spec"]["template"]["spec"]["containers"][0]
            assert c["image"] == "registry/x:1" and "managedFields" not in d["metadata"]
        assert all(m == "GET" for m, _ in k.state.requests)  # read only
