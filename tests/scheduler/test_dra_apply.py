"""`apply --target dra` against the fake API server, and the CLI's --target option."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes import client
from typer.testing import CliRunner

from costctl.cli import app
from costctl.commands import scheduling
from scheduler.config import SchedulerConfig
from scheduler.kube import ApplyError, KubeApplier
from scheduler.kube.dra import POD_CLAIM, render_dra
from scheduler.model import Snapshot
from scheduler.planner import plan
from scheduler.policy import Policy
from tests.scheduler.builders import fleet, workload
from tests.utils.kube_server import KubeServer

MODELS = ("llama-3-70b", "llama-3-8b", "mistral-7b", "mixtral-8x7b")
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
runner = CliRunner()


def _snapshot(mixtral_compute: float = 0.4) -> Snapshot:
    gpus = fleet(("a100", "a", 2), ("h100", "b", 2))
    ws = (
        workload("llama-3-70b", 70000, 0.9, 1, iso="strict"),
        workload("llama-3-8b", 18000, 0.3, 2),
        workload("mistral-7b", 16000, 0.25, 2, iso="strict"),
        workload("mixtral-8x7b", 30000, mixtral_compute, 1, iso="best-effort", latency="batch"),
    )
    return Snapshot(gpus, ws)


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as k:
        for n in ("a", "b"):
            k.state.add_node(n)
        for m in MODELS:
            k.state.add_deployment("default", m, model=m, replicas=1)
        c0 = k.state.deployments[("default", "llama-3-8b")]["spec"]["template"]["spec"]
        c0["containers"][0]["resources"] = {"limits": {"cpu": "4", "nvidia.com/gpu": "1"}}
        c0["containers"][0]["env"] = [{"name": "HF_HOME", "value": "/models"}]
        c0["resourceClaims"] = [{"name": "scratch", "resourceClaimName": "user-scratch"}]
        yield k


def _applier(kube: KubeServer) -> KubeApplier:
    return KubeApplier(kube.api_client(), "default", sleep=lambda s: None)


def _stored(kube: KubeServer, resource: str) -> dict[str, dict[str, Any]]:
    return {name: o for (_, name), o in kube.state.resource[resource].items()}


def _pod(kube: KubeServer, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = kube.state.deployments[("default", name)]["spec"]["template"]["spec"]
    return pod


def _named_claims(kube: KubeServer) -> set[str]:
    out = set()
    for d in kube.state.deployments.values():
        if d["spec"]["replicas"]:
            for rc in d["spec"]["template"]["spec"].get("resourceClaims") or []:
                out.add(rc.get("resourceClaimTemplateName") or rc.get("resourceClaimName"))
    return out


@pytest.mark.parametrize("api", ["ResourceV1Api", "CustomObjectsApi"])
def test_apply_creates_claims_and_deployments_then_changes_nothing(
    kube: KubeServer, api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if api == "CustomObjectsApi":  # an installed client older than kubernetes 34
        monkeypatch.delattr(client, "ResourceV1Api")
    snap = _snapshot()
    p = plan(snap)
    a = _applier(kube)
    assert a.apply(p, snap.gpus, target="device-plugin").applied  # a cluster planned before
    r = render_dra(p, snap.gpus)
    dry = a.apply(p, snap.gpus, dry_run=True, target="dra")
    assert {(c.kind, c.field) for c in dry.changes} >= {
        ("ResourceClaimTemplate", "create"),
        ("ResourceClaim", "create"),
        ("Deployment", "resources"),
        ("Deployment", "resourceClaims"),
    }
    assert not kube.state.resource["resourceclaims"]  # dry run wrote nothing
    result = a.apply(p, snap.gpus, target="dra")
    assert result.applied and not result.errors
    templates = _stored(kube, "resourceclaimtemplates")
    claims = _stored(kube, "resourceclaims")
    assert {n: o["spec"] for n, o in templates.items()} == {
        o["metadata"]["name"]: o["spec"] for o in r.claim_templates
    }
    assert {n: o["spec"] for n, o in claims.items()} == {
        o["metadata"]["name"]: o["spec"] for o in r.claims
    }
    assert _named_claims(kube) == set(templates) | set(claims) | {"user-scratch"}
    for o in [*templates.values(), *claims.values(), *kube.state.deployments.values()]:
        kubernetes_validate.validate(o, "1.34.0", strict=True)  # what the cluster now holds
    for d in kube.state.deployments.values():
        if not d["spec"]["replicas"]:
            continue
        (c0,) = d["spec"]["template"]["spec"]["containers"]
        res = c0["resources"]
        assert not [
            k for k in {**res.get("limits", {}), **res.get("requests", {})} if "nvidia" in k
        ]
        assert {"name": POD_CLAIM} in res["claims"]
        assert c0["image"] == "vllm/vllm-openai:v0.6"  # fields the plan does not own are kept
        mps = any(e["name"].startswith("CUDA_MPS_") for e in c0.get("env") or [])
        variant = d["metadata"]["labels"]["costctl.io/variant"]
        assert mps == variant.startswith("mps-")
    llama = _pod(kube, "llama-3-8b")["containers"][0]
    assert llama["resources"]["limits"] == {"cpu": "4"}
    assert llama["env"] == [{"name": "HF_HOME", "value": "/models"}]
    assert _pod(kube, "llama-3-8b")["resourceClaims"][0] == {
        "name": "scratch",
        "resourceClaimName": "user-scratch",
    }  # a claim someone else added is kept
    # a second apply: no change to report and no write sent
    assert a.apply(p, snap.gpus, dry_run=True, target="dra").changes == ()
    before = copy.deepcopy((kube.state.deployments, kube.state.resource))
    n = len(kube.state.requests)
    again = a.apply(p, snap.gpus, target="dra")
    assert again.applied and again.changes == ()
    # the ConfigMap, and the ClusterPolicy's MIG manager wiring (a no-op server-side apply)
    assert [m for m, _ in kube.state.requests[n:] if m in WRITES] == ["PATCH", "PATCH"]
    assert (kube.state.deployments, kube.state.resource) == before


def test_a_changed_share_keeps_the_claim_and_a_dropped_gpu_deletes_it(kube: KubeServer) -> None:
    a = _applier(kube)
    snap1, snap2 = _snapshot(0.4), _snapshot(0.5)
    per_claim = Policy(mps_shares="per-claim")  # what `--target dra` plans
    assert a.apply(plan(snap1, per_claim), snap1.gpus, target="dra").applied
    (claim,) = _stored(kube, "resourceclaims")
    n = len(kube.state.requests)
    assert a.apply(plan(snap2, per_claim), snap2.gpus, target="dra").applied
    # the share is the client's env: same claim, no claim object written
    assert list(_stored(kube, "resourceclaims")) == [claim]
    assert not [p for m, p in kube.state.requests[n:] if m in WRITES and "resource.k8s.io" in p]
    env = {e["name"]: e["value"] for e in _pod(kube, "mixtral-8x7b")["containers"][0]["env"]}
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"  # 0.5 x A100 = 25% of an H100
    # no MPS any more: the GPU's claim is deleted once no Deployment names it
    p3 = plan(snap2, Policy(modes=("gpu", "mig", "timeslice")))
    assert a.apply(p3, snap2.gpus, target="dra").applied
    assert claim not in _stored(kube, "resourceclaims")
    stored = set(_stored(kube, "resourceclaims")) | set(_stored(kube, "resourceclaimtemplates"))
    assert stored == _named_claims(kube) - {"user-scratch"}
    assert a.apply(p3, snap2.gpus, dry_run=True, target="dra").changes == ()


def test_failed_mig_reconfiguration_writes_no_claims(kube: KubeServer) -> None:
    snap = _snapshot()
    kube.state.mig_outcome["a"] = "failed"
    result = _applier(kube).apply(plan(snap), snap.gpus, target="dra")
    assert not result.applied and result.failed_nodes == ("a",)
    assert "nvidia.com/mig.config" not in kube.state.nodes["a"]["metadata"]["labels"]
    assert not kube.state.resource["resourceclaimtemplates"]
    assert not kube.state.resource["resourceclaims"]
    assert "resourceClaims" not in _pod(kube, "llama-3-70b")


def test_claim_specs_are_immutable_on_the_fake_server(kube: KubeServer) -> None:
    snap = _snapshot()
    a = _applier(kube)
    assert a.apply(plan(snap), snap.gpus, target="dra").applied
    (name,) = _stored(kube, "resourceclaims")
    api = client.ResourceV1Api(a.api_client)
    with pytest.raises(ApplyError, match="HTTP 422"):
        a._retry(
            api.patch_namespaced_resource_claim,
            name,
            "default",
            {"spec": {"devices": {"requests": []}}},
        )
    a._retry(
        api.patch_namespaced_resource_claim, name, "default", {"metadata": {"labels": {"x": "y"}}}
    )
    assert _stored(kube, "resourceclaims")[name]["metadata"]["labels"]["x"] == "y"


def test_unknown_target_is_refused(kube: KubeServer) -> None:
    snap = _snapshot()
    with pytest.raises(ValueError, match="unknown target"):
        _applier(kube).apply(plan(snap), snap.gpus, target="cdi")


# -- CLI ----------------------------------------------------------------------------------

SPEC = """
nodes:
  - {name: gpu-node-a, gpu_type: A100-80GB, gpus: 2}
  - {name: gpu-node-b, gpu_type: A10, gpus: 1}
workloads:
  - {model: llama-3-8b, mem_mib: 19000, compute: 0.3, replicas: 2}
  - {model: phi-3, mem_mib: 6000, compute: 0.1, replicas: 2, gpu_types: [A10]}
  - {model: mistral-7b, mem_mib: 9000, compute: 0.14, replicas: 2, isolation: strict}
"""


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    return ["--database-url", f"sqlite:///{tmp_path}/cli.db"]


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    p = tmp_path / "fleet.yaml"
    p.write_text(SPEC)
    return p


@pytest.fixture
def cli_kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeServer]:
    with KubeServer() as k:
        for n in ("gpu-node-a", "gpu-node-b"):
            k.state.add_node(n)
        for m in ("llama-3-8b", "phi-3", "mistral-7b"):
            k.state.add_deployment("default", m, model=m)

        def factory(settings: Any) -> KubeApplier:
            return KubeApplier(
                k.api_client(), settings.scheduler.kube_namespace, sleep=lambda s: None
            )

        monkeypatch.setattr(scheduling, "APPLIER_FACTORY", factory)
        yield k


def test_plan_k8s_target_dra_renders_claims(db: list[str], spec: Path) -> None:
    r = runner.invoke(app, [*db, "plan", "--spec", str(spec), "-o", "k8s", "--target", "dra"])
    assert r.exit_code == 0, r.output
    docs = list(yaml.safe_load_all(r.output))
    kinds = {d["kind"] for d in docs if d}
    assert {"ResourceClaimTemplate", "ResourceClaim", "Deployment"} <= kinds
    assert "nvidia.com/gpu:" not in r.output and "nvidia.com/mig-" not in r.output


def test_bad_target_exits_2_with_one_line(db: list[str], spec: Path) -> None:
    for cmd in ("plan", "apply"):
        r = runner.invoke(app, [*db, cmd, "--spec", str(spec), "--target", "cdi"])
        assert r.exit_code == 2
        assert r.output.strip().count("\n") == 0 and "--target" in r.output, r.output


def test_target_dra_plans_per_claim_mps_shares(
    db: list[str], spec: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real = scheduling.Policy.from_config

    def spy(config: SchedulerConfig) -> Any:
        seen.append(config.mps_shares)
        return real(config)

    monkeypatch.setattr(scheduling.Policy, "from_config", spy)
    for target in ("device-plugin", "dra"):
        r = runner.invoke(app, [*db, "plan", "--spec", str(spec), "--target", target])
        assert r.exit_code == 0, r.output
    assert seen == ["equal", "per-claim"]


def test_apply_target_dra_then_again_is_zero_changes(
    db: list[str], spec: Path, cli_kube: KubeServer
) -> None:
    r = runner.invoke(app, [*db, "apply", "--spec", str(spec), "--target", "dra"])
    assert r.exit_code == 0, r.output
    assert "applied=True" in r.output
    assert cli_kube.state.resource["resourceclaimtemplates"]
    assert cli_kube.state.resource["resourceclaims"]
    r = runner.invoke(app, [*db, "apply", "--spec", str(spec), "--target", "dra", "--dry-run"])
    assert r.exit_code == 0 and "0 change(s); dry run" in r.output, r.output
