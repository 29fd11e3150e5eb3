"""The worker's RBAC in deploy/ against what the real KubeApplier does (the API's:
test_rbac_api.py).

The applier is built the way `costctl worker` builds it (``KubeApplier.from_settings`` with the
worker Deployment's environment, in-cluster config pointed at the fake API server of
tests/utils/kube_server.py), applies a plan with MIG and MPS changes twice (create, then
update), and scales a model to 0 and back. Every request the server saw must be granted to
the worker's ServiceAccount, and every granted permission must be needed by one of them
(or be listed in RESERVED with the reason it is granted anyway).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scheduler.model import Snapshot
from scheduler.planner import plan
from tests.deploy.drive import applier_of, deployment_permissions, service_account
from tests.deploy.kustomize import Doc
from tests.deploy.manifests import BASE, built, named
from tests.deploy.rbac import Permission, allows, denied, key, permissions
from tests.scheduler.builders import fleet, workload
from tests.utils.kube_server import Access, KubeServer

MODELS = ("llama-3-70b", "llama-3-8b", "mistral-7b", "mixtral-8x7b")
# Granted though today's applier does not use them: (namespace, group, resource, verb) -> why.
RESERVED = {
    (None, "", "nodes", "list"): "issue 8: nodes get/list/patch (the cluster snapshot)",
}
CLUSTER_WIDE_OK = {
    ("", "nodes"): {"get", "list", "patch"},
    ("", "pods"): {"get", "list", "watch"},
    ("nvidia.com", "clusterpolicies"): {"list", "patch"},
}


def worker_permissions(docs: list[Doc]) -> list[Permission]:
    """The worker ServiceAccount's permissions in a build."""
    return deployment_permissions(docs, "costctl-worker")


def _snapshot() -> Snapshot:
    gpus = fleet(("a100", "a", 2), ("h100", "b", 2))
    return Snapshot(
        gpus,
        (
            workload("llama-3-70b", 70000, 0.9, 1, iso="strict"),
            workload("llama-3-8b", 18000, 0.3, 2),
            workload("mistral-7b", 16000, 0.25, 2, iso="strict"),
            workload("mixtral-8x7b", 30000, 0.4, 1, iso="best-effort", latency="batch"),
        ),
    )


def _drive(kube: KubeServer, docs: list[Doc]) -> None:
    a, settings = applier_of(kube, docs, "costctl-worker")
    for n in ("a", "b"):
        kube.state.add_node(n, gpus=2)
    ns = settings.scheduler.kube_namespace
    for m in MODELS:
        kube.state.add_deployment(ns, m, model=m, replicas=1)
        c = kube.state.deployments[(ns, m)]["spec"]["template"]["spec"]["containers"][0]
        c["resources"] = {"limits": {"nvidia.com/gpu": "1"}}  # running on whole GPUs
    kube.state.reconcile()
    snap = _snapshot()
    p = plan(snap)
    rendered = a.render(p, snap.gpus)
    assert any(v.mode.value == "mps" for v in rendered.variants)
    assert any(v.mode.value == "mig" for v in rendered.variants)
    assert a.apply(p, snap.gpus, dry_run=True).changes
    assert a.apply(p, snap.gpus).applied  # ConfigMaps created, nodes relabelled, clones made
    assert a.apply(p, snap.gpus).applied  # ConfigMaps patched
    before = a.scale_model("llama-3-8b", 0)
    assert before > 0 and a.scale_model("llama-3-8b", before) == 0
    assert a.restore("llama-3-8b") == before


@pytest.fixture(scope="module")
def traffic() -> Iterator[list[Access]]:
    with KubeServer() as kube:
        _drive(kube, built())
        yield list(kube.state.access)


def test_the_drive_covers_mig_mps_and_scaling(traffic: list[Access]) -> None:
    seen = {(a.verb, a.rbac_resource, a.namespace) for a in traffic}
    assert seen == {
        ("get", "nodes", None),
        ("patch", "nodes", None),
        ("list", "pods", None),
        ("list", "pods", "default"),
        ("create", "pods/eviction", "default"),
        ("list", "clusterpolicies", None),
        ("patch", "clusterpolicies", None),
        ("get", "configmaps", "gpu-operator"),
        ("create", "configmaps", "gpu-operator"),
        ("patch", "configmaps", "gpu-operator"),
        ("list", "deployments", "default"),
        ("create", "deployments", "default"),
        ("patch", "deployments", "default"),
        ("get", "deployments/scale", "default"),
        ("patch", "deployments/scale", "default"),
    }


def test_every_request_of_the_applier_is_granted_to_the_worker(traffic: list[Access]) -> None:
    assert denied(worker_permissions(built()), traffic) == []


@pytest.mark.parametrize("perm", worker_permissions(built()), ids=str)
def test_each_worker_permission_is_needed(perm: Permission, traffic: list[Access]) -> None:
    others = [p for p in worker_permissions(built()) if p != perm]
    lost = denied(others, traffic)
    if key(perm) in RESERVED:
        assert lost == [], f"{perm} is used now: drop it from RESERVED"
    else:
        assert lost, f"{perm} ({perm.source}) is granted but no request needs it"
        assert all(allows(perm, a) for a in lost)


def test_reserved_permissions_are_granted() -> None:
    assert set(RESERVED) <= {key(p) for p in worker_permissions(built())}


def test_a_missing_rule_is_reported_with_its_requests(traffic: list[Access]) -> None:
    docs = built()
    role = named(
        [d for d in docs if d["metadata"].get("namespace") == "default"], "Role", "costctl-worker"
    )
    role["rules"] = [r for r in role["rules"] if r["resources"] != ["deployments/scale"]]
    lost = {
        (a.verb, a.rbac_resource, a.namespace, a.name)
        for a in denied(worker_permissions(docs), traffic)
    }
    scale = {
        (a.verb, a.rbac_resource, a.namespace, a.name)
        for a in traffic
        if a.rbac_resource == "deployments/scale"
    }
    assert lost == scale  # the drain's surges and the kill-switch's scaling
    names = {name for _, _, _, name in lost}
    assert {("get", "deployments/scale", "default", "llama-3-8b")} <= lost
    assert any(n and n.startswith("llama-3-8b-") for n in names)  # a cloned variant too


def test_namespaced_rules_stop_at_their_namespace(traffic: list[Access]) -> None:
    perms = worker_permissions(built())
    # (listing pods is granted cluster-wide, so a namespaced list is allowed everywhere)
    moved = [
        a._replace(namespace="kube-system")
        for a in traffic
        if a.namespace and a.rbac_resource != "pods"
    ]
    assert moved and denied(perms, moved) == list(dict.fromkeys(moved))
    # the named ConfigMaps only: another ConfigMap in gpu-operator stays out of reach
    other = Access("patch", "", "configmaps", None, "gpu-operator", "gpu-operator-config")
    assert denied(perms, [other]) == [other]
    # a RoleBinding for another ServiceAccount grants the worker nothing
    docs = built()
    for d in docs:
        if d["kind"] == "RoleBinding":
            d["subjects"][0]["name"] = "someone-else"
    assert denied(worker_permissions(docs), traffic)


def _roles(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in ("Role", "ClusterRole")]


def test_no_wildcards_no_secrets_no_escalation() -> None:
    for r in _roles(built()) + _roles(built(BASE)):
        assert "aggregationRule" not in r
        for rule in r["rules"]:
            assert "nonResourceURLs" not in rule, r["metadata"]
            words = rule["apiGroups"] + rule["resources"] + rule["verbs"]
            assert "*" not in words and not any("*" in w for w in words), r["metadata"]
            assert not {"secrets", "serviceaccounts/token"} & set(rule["resources"])
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def test_cluster_roles_grant_only_nodes_pod_reads_and_clusterpolicies() -> None:
    for r in built():
        if r["kind"] != "ClusterRole":
            continue
        for rule in r["rules"]:
            for g in rule["apiGroups"]:
                for res in rule["resources"]:
                    allowed = CLUSTER_WIDE_OK.get((g, res), set())
                    assert set(rule["verbs"]) <= allowed, (r["metadata"]["name"], g, res)


def test_agent_reads_pods_and_nodes_only() -> None:
    docs = built()
    perms = permissions(docs, *service_account(docs, "DaemonSet", "costctl-agent"))
    assert {key(p) for p in perms} == {
        (None, "", "pods", "get"),
        (None, "", "pods", "list"),
        (None, "", "nodes", "get"),
    }


@pytest.mark.parametrize(
    ("kind", "name"), [("Deployment", "costctl-dashboard"), ("Job", "costctl-db-upgrade")]
)
def test_dashboard_and_migration_have_no_rbac(kind: str, name: str) -> None:
    docs = built()
    assert permissions(docs, *service_account(docs, kind, name)) == []
