"""Rendering (kubernetes-validate) and applying against the fake API server."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import kubernetes_validate
import pytest
import yaml

from scheduler.config import SchedulerConfig
from scheduler.kube import ApplyError, KubeApplier, render, to_dicts
from scheduler.model import Plan, Snapshot
from scheduler.planner import plan
from tests.scheduler.builders import fleet, workload
from tests.utils.kube_server import KubeServer

K8S_VERSION = "1.30.0"


def _snapshot() -> Snapshot:
    gpus = fleet(("a100", "a", 2), ("h100", "b", 2))
    ws = (
        workload("llama-3-70b", 70000, 0.9, 1, iso="strict"),
        workload("llama-3-8b", 18000, 0.3, 2),
        workload("mistral-7b", 16000, 0.25, 2, iso="strict"),
        workload("mixtral-8x7b", 30000, 0.4, 1, iso="best-effort", latency="batch"),
    )
    return Snapshot(gpus, ws)


@pytest.fixture
def planned() -> tuple[Snapshot, Plan]:
    snap = _snapshot()
    return snap, plan(snap)


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as k:
        for n in ("a", "b"):
            k.state.add_node(n)
        for m in ("llama-3-70b", "llama-3-8b", "mistral-7b", "mixtral-8x7b"):
            k.state.add_deployment("default", m, model=m, replicas=1)
        yield k


def _applier(kube: KubeServer, **kw: object) -> KubeApplier:
    return KubeApplier(kube.api_client(), "default", sleep=lambda s: None, **kw)  # type: ignore[arg-type]


def test_every_rendered_object_passes_kubernetes_validate(planned: tuple[Snapshot, Plan]) -> None:
    snap, p = planned
    objs = to_dicts(render(p, snap.gpus).objects())
    assert {o["kind"] for o in objs} == {"ConfigMap", "Node", "Deployment"}
    for o in objs:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)


def test_render_contents(planned: tuple[Snapshot, Plan]) -> None:
    snap, p = planned
    r = render(p, snap.gpus)
    mig = yaml.safe_load(r.mig_parted.data["config.yaml"])
    (name,) = [k for k in mig["mig-configs"] if k != "all-disabled"]
    devices = mig["mig-configs"][name]
    assert {
        "devices": [1],
        "mig-enabled": True,
        "mig-devices": {"2g.20gb": 2, "3g.40gb": 1},
    } in devices
    assert {"devices": [0], "mig-enabled": False} in devices
    assert r.node_labels["a"]["nvidia.com/mig.config"] == name
    dp = {k: yaml.safe_load(v) for k, v in r.device_plugin.data.items()}
    assert dp["costctl-mps-2"]["sharing"]["mps"]["resources"] == [
        {"name": "nvidia.com/gpu", "replicas": 2}
    ]
    deps = {d.metadata.name: d for d in r.deployments}
    c = deps["mistral-7b"].spec.template.spec.containers[0]
    assert c.resources.limits == {"nvidia.com/mig-2g.20gb": "1"}
    # equal MPS shares: node b is split in 2 (mixtral needs more than a third of an H100's
    # memory), so each client gets, and its env states, half of the GPU
    mps = deps["llama-3-8b-mps-50"].spec.template.spec.containers[0]
    assert {e.name: e.value for e in mps.env} == {
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=40960M",
    }


def test_dry_run_diffs_and_writes_nothing(kube: KubeServer, planned: tuple[Snapshot, Plan]) -> None:
    snap, p = planned
    before = copy.deepcopy((kube.state.nodes, kube.state.deployments, kube.state.configmaps))
    policies = copy.deepcopy(kube.state.clusterpolicies)
    result = _applier(kube).apply(p, snap.gpus, dry_run=True)
    assert not result.applied
    kinds = {(c.kind, c.field) for c in result.changes}
    assert ("Node", "labels.nvidia.com/mig.config") in kinds
    assert ("Deployment", "create") in kinds
    assert ("ClusterPolicy", "spec.migManager.config.name") in kinds
    # only reads and dryRun=All applies: nothing stored
    assert {m for m, _ in kube.state.requests} == {"GET", "PATCH"}
    assert (kube.state.nodes, kube.state.deployments, kube.state.configmaps) == before
    assert kube.state.clusterpolicies == policies


def test_apply_then_dry_run_is_empty(kube: KubeServer, planned: tuple[Snapshot, Plan]) -> None:
    snap, p = planned
    a = _applier(kube)
    result = a.apply(p, snap.gpus)
    assert result.applied and not result.errors
    labels = kube.state.nodes["a"]["metadata"]["labels"]
    assert labels["nvidia.com/mig.config.state"] == "success"
    assert labels["nvidia.com/device-plugin.config"] == "costctl-none"
    assert ("default", "llama-3-8b-mps-50") in kube.state.deployments  # cloned variant
    clone = kube.state.deployments[("default", "llama-3-8b-mps-50")]
    assert clone["spec"]["template"]["spec"]["containers"][0]["image"].startswith("vllm/")
    assert kube.state.deployments[("default", "mistral-7b")]["spec"]["replicas"] == 2
    assert a.apply(p, snap.gpus, dry_run=True).changes == ()


def test_failed_mig_reconfiguration_rolls_the_node_back(
    kube: KubeServer, planned: tuple[Snapshot, Plan]
) -> None:
    snap, p = planned
    kube.state.nodes["a"]["metadata"]["labels"] = {"nvidia.com/mig.config": "all-disabled"}
    kube.state.mig_outcome["a"] = "failed"
    result = _applier(kube).apply(p, snap.gpus)
    assert not result.applied and result.failed_nodes == ("a",)
    assert "rolled back" in result.errors[0]
    labels = kube.state.nodes["a"]["metadata"]["labels"]
    assert labels["nvidia.com/mig.config"] == "all-disabled"
    assert "nvidia.com/device-plugin.config" not in labels  # restored to absent
    assert ("default", "llama-3-8b-mps-15") not in kube.state.deployments  # untouched
    assert kube.state.deployments[("default", "mistral-7b")]["spec"]["replicas"] == 1


def test_stuck_mig_reconfiguration_times_out_and_rolls_back(
    kube: KubeServer, planned: tuple[Snapshot, Plan]
) -> None:
    snap, p = planned
    kube.state.mig_outcome["a"] = "stuck"
    t = iter(range(0, 10_000, 100))
    a = _applier(
        kube, monotonic=lambda: float(next(t)), config=SchedulerConfig(apply_timeout_s=300)
    )
    result = a.apply(p, snap.gpus)
    assert "timeout" in result.errors[0]
    assert "nvidia.com/mig.config" not in kube.state.nodes["a"]["metadata"]["labels"]


def test_node_in_reconfiguration_is_left_alone(
    kube: KubeServer, planned: tuple[Snapshot, Plan]
) -> None:
    snap, p = planned
    kube.state.nodes["a"]["metadata"]["labels"] = {"nvidia.com/mig.config.state": "rebooting"}
    result = _applier(kube).apply(p, snap.gpus)
    assert result.failed_nodes == ("a",) and "in progress" in result.errors[0]
    assert kube.state.nodes["a"]["metadata"]["labels"] == {
        "nvidia.com/mig.config.state": "rebooting"
    }


def test_api_errors_are_retried_then_reported(kube: KubeServer) -> None:
    a = _applier(kube)
    kube.state.fail_next = [503, 429, 500]
    assert a.scale_model("llama-3-8b", 0) == 1
    kube.state.fail_next = [500] * 10
    with pytest.raises(ApplyError, match="HTTP 500"):
        a.scale_model("llama-3-8b", 1)
    kube.state.fail_next = [403]
    with pytest.raises(ApplyError, match="HTTP 403"):  # not retried
        a.scale_model("llama-3-8b", 1)


def test_scale_to_zero_and_back_restores_every_variant(kube: KubeServer) -> None:
    kube.state.add_deployment("default", "llama-3-8b-mps-15", model="llama-3-8b", replicas=2)
    kube.state.deployments[("default", "llama-3-8b")]["spec"]["replicas"] = 3
    a = _applier(kube)
    assert a.scale_model("llama-3-8b", 0) == 5
    reps = {n: d["spec"]["replicas"] for (_, n), d in kube.state.deployments.items()}
    assert reps["llama-3-8b"] == reps["llama-3-8b-mps-15"] == 0
    assert a.scale_model("llama-3-8b", 5) == 0
    reps = {n: d["spec"]["replicas"] for (_, n), d in kube.state.deployments.items()}
    assert (reps["llama-3-8b"], reps["llama-3-8b-mps-15"]) == (3, 2)
    assert a.restore("llama-3-8b") == 5
    with pytest.raises(LookupError, match=r"costctl\.io/model=nope"):
        a.scale_model("nope", 0)


def test_unreserve_is_idempotent_and_safe_without_reserve(kube: KubeServer) -> None:
    a = _applier(kube)
    assert a.unreserve("a") is False
    kube.state.nodes["a"]["metadata"]["labels"] = {"x": "1"}
    a.reserve("a", {"x": "1"})
    a.reserve("a", {"x": "changed"})  # the first memory wins
    kube.state.nodes["a"]["metadata"]["labels"] = {"x": "2"}
    assert a.unreserve("a") is True
    assert kube.state.nodes["a"]["metadata"]["labels"] == {"x": "1"}
    n = len(kube.state.requests)
    assert a.unreserve("a") is False and len(kube.state.requests) == n
