"""This node's pods and labels through the real kubernetes client on the fake API server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scheduler.agent.join import model_for
from scheduler.kube.pods import KubePodLister, PodListError
from scheduler.podmap import PodInfo
from tests.utils.kube_server import KubeServer

U = "11111111-2222-3333-4444-{:012d}"


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as k:
        k.state.add_node(
            "gpu-a",
            {"nvidia.com/gpu.replicas": "4", "nvidia.com/gpu.sharing-strategy": "mps"},
        )
        k.state.add_node("gpu-b")
        k.state.add_pod(
            "serving", "llama-7d9f8-x2x", node="gpu-a", uid=U.format(1),
            labels={"costctl.io/model": "llama-3-8b", "pod-template-hash": "7d9f8"},
            owner=("ReplicaSet", "llama-7d9f8"),
        )  # fmt: skip
        k.state.add_pod(
            "serving", "qwen-0", node="gpu-a", uid=U.format(2),
            labels={"app.kubernetes.io/name": "qwen-2"}, owner=("StatefulSet", "qwen"),
        )  # fmt: skip
        k.state.add_pod("batch", "other", node="gpu-b", uid=U.format(3))
        yield k


def test_lists_only_this_nodes_pods_with_labels_and_owner(kube: KubeServer) -> None:
    lister = KubePodLister(kube.api_client(), "gpu-a")
    pods = sorted(lister.pods(), key=lambda p: p.name)
    assert [(p.namespace, p.name, p.uid) for p in pods] == [
        ("serving", "llama-7d9f8-x2x", U.format(1)),
        ("serving", "qwen-0", U.format(2)),
    ]
    assert pods[0].labels["costctl.io/model"] == "llama-3-8b"
    assert (pods[1].owner_kind, pods[1].owner_name) == ("StatefulSet", "qwen")
    assert ("GET", "/api/v1/pods") in kube.state.requests


def test_node_labels_say_how_shared_gpus_are_split(kube: KubeServer) -> None:
    labels = KubePodLister(kube.api_client(), "gpu-a").node_labels()
    assert labels["nvidia.com/gpu.replicas"] == "4"
    assert labels["nvidia.com/gpu.sharing-strategy"] == "mps"


def test_api_errors_are_pod_list_errors(kube: KubeServer) -> None:
    lister = KubePodLister(kube.api_client(), "gpu-a")
    kube.state.fail_next.append(503)
    with pytest.raises(PodListError, match="HTTP 503"):
        lister.pods()
    with pytest.raises(PodListError, match="HTTP 404"):
        KubePodLister(kube.api_client(), "no-such-node").node_labels()


def test_unreachable_api_is_a_pod_list_error() -> None:
    with KubeServer() as k:
        client = k.api_client()
    lister = KubePodLister(client, "gpu-a", timeout_s=2)
    with pytest.raises(PodListError, match="list pods on node gpu-a"):
        lister.pods()


def test_fake_server_refuses_an_unsupported_field_selector(kube: KubeServer) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube.api_client())
    with pytest.raises(client.exceptions.ApiException) as err:
        core.list_pod_for_all_namespaces(field_selector="spec.schedulerName=x")
    assert err.value.status == 400
    found = core.list_namespaced_pod("serving", field_selector="metadata.name=qwen-0")
    assert [p.metadata.name for p in found.items] == ["qwen-0"]


@pytest.mark.parametrize(
    ("labels", "owner", "expected"),
    [
        ({"costctl.io/model": "llama-3-8b", "app.kubernetes.io/name": "x"}, None, "llama-3-8b"),
        ({"app.kubernetes.io/name": "qwen-2"}, ("StatefulSet", "qwen"), "qwen-2"),
        ({"costctl.io/model": "__idle__", "app.kubernetes.io/name": "ok"}, None, "ok"),
        ({"pod-template-hash": "5d8f7c"}, ("ReplicaSet", "mixtral-5d8f7c"), "batch/mixtral"),
        ({}, ("Job", "eval-17"), "batch/eval-17"),
        ({}, None, "batch/pod-1"),
        ({"costctl.io/model": "  "}, None, "batch/pod-1"),
    ],
    ids=["label", "app-name", "reserved-skipped", "deployment", "job", "bare-pod", "blank"],
)
def test_model_of_a_pod(
    labels: dict[str, str], owner: tuple[str, str] | None, expected: str
) -> None:
    kind, name = owner or (None, None)
    pod = PodInfo("u", "batch", "pod-1", labels, kind, name)
    assert model_for(pod, "costctl.io/model") == expected


def test_model_label_is_configurable() -> None:
    pod = PodInfo("u", "ns", "p", {"team.example/model": "m1", "costctl.io/model": "m2"})
    assert model_for(pod, "team.example/model") == "m1"
