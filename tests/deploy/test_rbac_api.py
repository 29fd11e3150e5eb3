"""The API's RBAC in deploy/ against what its kill-switch does.

POST /v1/killswitches (scope model) and the revive route call the API process's scaler:
``KubeApplier.from_settings`` with the api Deployment's environment, ``scale_model(model, 0)``
and ``scale_model(model, before)``. That drive runs against the fake API server; every request
it makes must be granted to the api's ServiceAccount, each of its permissions must be needed,
and it gets nothing else (no create, no nodes or ConfigMaps, nothing cluster-wide).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.drive import applier_of, deployment_permissions
from tests.deploy.kustomize import Doc
from tests.deploy.manifests import built, env_of, named
from tests.deploy.rbac import Permission, allows, denied, key
from tests.utils.kube_server import Access, KubeServer

API = "costctl-api"
MODEL = "llama-3-8b"
# the model's Deployments and replicas: the base one and an MPS clone the worker made
REPLICAS = {MODEL: 2, f"{MODEL}-mps-15": 1}
GRANTED = {
    ("default", "apps", "deployments", "list"),
    ("default", "apps", "deployments", "patch"),
    ("default", "apps", "deployments/scale", "get"),
    ("default", "apps", "deployments/scale", "patch"),
}


def api_permissions(docs: list[Doc]) -> list[Permission]:
    """The api ServiceAccount's permissions in a build."""
    return deployment_permissions(docs, API)


def _kill_and_revive(kube: KubeServer, docs: list[Doc]) -> None:
    a, settings = applier_of(kube, docs, API)
    ns = settings.scheduler.kube_namespace
    for name, n in REPLICAS.items():
        kube.state.add_deployment(ns, name, model=MODEL, replicas=n)
    kube.state.add_deployment(ns, "mistral-7b", model="mistral-7b", replicas=1)
    before = a.scale_model(MODEL, 0)  # killswitch.kill
    assert before == 3
    assert [kube.state.deployments[(ns, d)]["spec"]["replicas"] for d in REPLICAS] == [0, 0]
    assert a.scale_model(MODEL, before) == 0  # killswitch.revive with previous_replicas
    assert {d: kube.state.deployments[(ns, d)]["spec"]["replicas"] for d in REPLICAS} == REPLICAS
    assert kube.state.deployments[(ns, "mistral-7b")]["spec"]["replicas"] == 1


@pytest.fixture(scope="module")
def traffic() -> Iterator[list[Access]]:
    with KubeServer() as kube:
        _kill_and_revive(kube, built())
        yield list(kube.state.access)


def test_the_drive_is_what_scale_model_sends(traffic: list[Access]) -> None:
    seen = {(a.verb, a.group, a.rbac_resource, a.namespace) for a in traffic}
    assert seen == {(v, g, r, ns) for ns, g, r, v in GRANTED}
    names = {a.name for a in traffic if a.rbac_resource == "deployments/scale"}
    assert names == set(REPLICAS)


def test_every_request_of_the_kill_switch_is_granted_to_the_api(traffic: list[Access]) -> None:
    assert denied(api_permissions(built()), traffic) == []


def test_the_api_gets_exactly_the_kill_switch_and_nothing_else() -> None:
    perms = api_permissions(built())
    assert {key(p) for p in perms} == GRANTED
    assert all(p.namespace == "default" and not p.names for p in perms)
    for ns, group, resource, verb in [
        ("default", "apps", "deployments", "create"),
        ("default", "", "configmaps", "get"),
        ("gpu-operator", "", "configmaps", "patch"),
        (None, "", "nodes", "get"),
        (None, "", "nodes", "list"),
        (None, "apps", "deployments", "list"),
        ("kube-system", "apps", "deployments", "patch"),
    ]:
        a = Access(verb, group, resource, None, ns, None)
        assert denied(perms, [a]) == [a], a


@pytest.mark.parametrize("perm", api_permissions(built()), ids=str)
def test_each_api_permission_is_needed(perm: Permission, traffic: list[Access]) -> None:
    others = [p for p in api_permissions(built()) if p != perm]
    lost = denied(others, traffic)
    assert lost, f"{perm} ({perm.source}) is granted but no request needs it"
    assert all(allows(perm, a) for a in lost)


def test_the_api_and_the_worker_manage_one_namespace_where_the_api_role_is() -> None:
    docs = built()
    envs = [
        env_of(named(docs, "Deployment", d)["spec"]["template"]["spec"]["containers"][0])
        for d in ("costctl-api", "costctl-worker")
    ]
    (ns,) = {e["COSTCTL_SCHEDULER__KUBE_NAMESPACE"] for e in envs}
    role = named([d for d in docs if d["metadata"].get("namespace") == ns], "Role", "costctl-api")
    assert role["metadata"]["labels"]["app.kubernetes.io/component"] == "api"


def test_the_api_binding_names_the_api_service_account(traffic: list[Access]) -> None:
    docs = built()
    (rb,) = [d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == API]
    assert rb["subjects"] == [
        {"kind": "ServiceAccount", "name": "costctl-api", "namespace": "costctl"}
    ]
    rb["subjects"][0]["name"] = "costctl-dashboard"
    assert denied(api_permissions(docs), traffic) == list(dict.fromkeys(traffic))
