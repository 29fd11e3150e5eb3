"""ClusterPolicy wiring and the fake API server's server-side apply semantics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scheduler.config import SchedulerConfig
from scheduler.kube import ApplyError, KubeApplier
from scheduler.model import Snapshot
from scheduler.planner import plan
from scheduler.policy import Policy
from tests.scheduler.builders import fleet, workload
from tests.utils.kube_server import KubeServer
from tests.utils.kube_sim import OPERATOR_MIG_CONFIGS

APPLY = "application/apply-patch+yaml"


def _applier(k: KubeServer, **kw: Any) -> KubeApplier:
    """No sleeping, and a clock that runs out after 100 polls (no test can spin)."""
    t = iter(range(0, 100_000, 10))
    return KubeApplier(
        k.api_client(), "default", sleep=lambda s: None, monotonic=lambda: float(next(t)), **kw
    )


def _planned() -> tuple[Snapshot, Any]:
    snap = Snapshot(
        fleet(("a100", "a", 2)),
        (workload("mistral-7b", 16000, 0.25, 1, iso="strict"),),
    )
    return snap, plan(snap, Policy(modes=("mig",)))


def _server(ns: str = "gpu-operator") -> KubeServer:
    k = KubeServer(gpu_operator=False)
    k.state.add_gpu_operator(namespace=ns, name="gpu-cluster-policy")
    k.state.add_node("a", gpus=2)
    k.state.add_deployment("default", "mistral-7b", model="mistral-7b")
    return k


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with _server() as k:
        yield k


def test_the_cluster_policy_points_at_costctl_and_keeps_the_operator_configs(
    kube: KubeServer,
) -> None:
    snap, p = _planned()
    a = _applier(kube)
    assert a.apply(p, snap.gpus).applied
    spec = kube.state.clusterpolicies["gpu-cluster-policy"]["spec"]
    assert spec["migManager"]["config"] == {"name": "costctl-mig-parted", "default": "all-disabled"}
    assert spec["devicePlugin"]["config"] == {
        "name": "costctl-device-plugin",
        "default": "costctl-none",
    }
    assert spec["mig"] == {"strategy": "mixed"}  # the operator's own fields untouched
    cm = kube.state.configmaps[("gpu-operator", "costctl-mig-parted")]
    configs = yaml.safe_load(cm["data"]["config.yaml"])["mig-configs"]
    for name, entries in OPERATOR_MIG_CONFIGS.items():
        assert configs[name] == entries  # all-1g.10gb, all-balanced, ... stay usable
    assert cm["metadata"]["annotations"] == {"costctl.io/copied-from": "default-mig-parted-config"}
    # the operator's ConfigMap is only read
    assert (
        "PATCH",
        "/api/v1/namespaces/gpu-operator/configmaps/default-mig-parted-config",
    ) not in (kube.state.requests)
    # a node an admin labels with an operator config still reconfigures (once it is idle)
    a.scale_model("mistral-7b", 0)
    a.core.patch_node("a", {"metadata": {"labels": {"nvidia.com/mig.config": "all-1g.10gb"}}})
    assert a.wait_mig("a") == "success"
    alloc = kube.state.nodes["a"]["status"]["allocatable"]
    assert alloc["nvidia.com/mig-1g.10gb"] == "14"


def test_a_stock_operator_fails_a_config_it_was_not_pointed_at(kube: KubeServer) -> None:
    """The fake MIG manager reads only the ConfigMap the ClusterPolicy names."""
    a = _applier(kube)
    a.core.patch_node("a", {"metadata": {"labels": {"nvidia.com/mig.config": "costctl-xyz"}}})
    assert a.wait_mig("a") == "failed"


def test_operator_namespace_comes_from_settings() -> None:
    with _server("nvidia-gpu-operator") as k:
        snap, p = _planned()
        cfg = SchedulerConfig(gpu_operator_namespace="nvidia-gpu-operator")
        a = _applier(k, config=cfg)
        assert a.apply(p, snap.gpus).applied
        assert ("nvidia-gpu-operator", "costctl-mig-parted") in k.state.configmaps
        assert not any(ns == "gpu-operator" for ns, _ in k.state.configmaps)


def test_no_cluster_policy_is_a_clear_error() -> None:
    with KubeServer(gpu_operator=False) as k:
        k.state.add_node("a", gpus=2)
        k.state.add_deployment("default", "mistral-7b", model="mistral-7b")
        snap, p = _planned()
        a = _applier(k)
        with pytest.raises(ApplyError, match=r"no nvidia\.com/v1 ClusterPolicy"):
            a.apply(p, snap.gpus, dry_run=True)


# -- server-side apply in the fake ------------------------------------------------------------


def _apply(api: client.ApiClient, body: dict[str, Any], manager: str, force: bool) -> Any:
    return client.CoreV1Api(api).patch_namespaced_config_map(
        body["metadata"]["name"],
        "default",
        body,
        field_manager=manager,
        force=force,
        _content_type=APPLY,
    )


def _cm(data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}


def test_ssa_removes_only_what_the_manager_dropped_and_conflicts_without_force() -> None:
    with KubeServer(gpu_operator=False) as k:
        api = k.api_client()
        _apply(api, _cm({"a": "1", "b": "2"}), "costctl", False)
        _apply(api, _cm({"x": "9"}), "someone", False)
        got = _apply(api, _cm({"a": "1"}), "costctl", False)  # b dropped by its only owner
        assert got.data == {"a": "1", "x": "9"}
        with pytest.raises(ApiException) as exc:
            _apply(api, _cm({"x": "10"}), "costctl", False)
        assert exc.value.status == 409 and "someone" in str(exc.value.body)
        got = _apply(api, _cm({"a": "1", "x": "10"}), "costctl", True)  # force takes x over
        assert got.data == {"a": "1", "x": "10"}
        managers = {m.manager: m.operation for m in got.metadata.managed_fields}
        assert managers == {"costctl": "Apply"}
        got = _apply(api, _cm({"a": "1"}), "costctl", False)
        assert got.data == {"a": "1"}
        dry = client.CoreV1Api(api).patch_namespaced_config_map(
            "c",
            "default",
            _cm({"z": "0"}),
            field_manager="costctl",
            dry_run="All",
            _content_type=APPLY,
        )
        assert dry.data == {"z": "0"} and k.state.configmaps[("default", "c")]["data"] == {"a": "1"}
        with pytest.raises(ApiException) as exc:
            client.CoreV1Api(api).patch_namespaced_config_map(
                "c", "default", _cm({}), _content_type=APPLY
            )
        assert exc.value.status == 400  # fieldManager is required
