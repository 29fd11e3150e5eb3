"""The pods of one node and the node's labels, from the Kubernetes API (the agent's view).

``KubePodLister(api_client, node).pods()`` lists ``spec.nodeName=<node>`` pods of every
namespace (``resourceVersion=0``: served from the API server's watch cache, not etcd);
``node_labels()`` reads the Node (GPU feature discovery's ``nvidia.com/gpu.replicas`` and
``nvidia.com/gpu.sharing-strategy`` tell how a shared GPU is split). RBAC: pods list
(cluster-wide, the field selector narrows it to this node) and nodes get.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scheduler.podmap import PodInfo


class PodListError(RuntimeError):
    """The Kubernetes API could not list this node's pods or read the node."""


def _owner(meta: Any) -> tuple[str | None, str | None]:
    refs = meta.owner_references or []
    ref = next((r for r in refs if r.controller), refs[0] if refs else None)
    return (ref.kind, ref.name) if ref is not None else (None, None)


def pod_info(pod: Any) -> PodInfo:
    """A kubernetes V1Pod as a PodInfo."""
    meta = pod.metadata
    kind, name = _owner(meta)
    return PodInfo(
        uid=meta.uid or "",
        namespace=meta.namespace or "",
        name=meta.name or "",
        labels=dict(meta.labels or {}),
        owner_kind=kind,
        owner_name=name,
    )


@dataclass
class KubePodLister:
    """Pods on ``node`` and its labels through a real kubernetes ApiClient."""

    api_client: client.ApiClient
    node: str
    timeout_s: float = 10.0

    @classmethod
    def in_cluster(cls, node: str) -> KubePodLister:
        """From the pod's service account (in-cluster), else ~/.kube/config."""
        return cls(_kube_client(), node)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=self.timeout_s, **kwargs)
        except ApiException as exc:
            raise PodListError(f"{what}: HTTP {exc.status} {exc.reason}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise PodListError(f"{what}: {exc}") from exc

    def pods(self) -> list[PodInfo]:
        """Every pod scheduled on this node. Raises: PodListError."""
        found = self._call(
            f"list pods on node {self.node}",
            client.CoreV1Api(self.api_client).list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={self.node}",
            resource_version="0",
        )
        return [pod_info(p) for p in found.items]

    def node_labels(self) -> dict[str, str]:
        """This node's labels. Raises: PodListError."""
        node = self._call(
            f"read node {self.node}", client.CoreV1Api(self.api_client).read_node, self.node
        )
        return dict(node.metadata.labels or {})


def _kube_client() -> client.ApiClient:
    """In-cluster service account, else ~/.kube/config."""
    from kubernetes import config as kube_config

    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
    return client.ApiClient()


class PodModels:
    """(namespace, pod) -> the model the pod serves, from its labels (``model_for``'s rules).

    The DCGM pull's lookup: dcgm-exporter names pods but not models. Answers are cached per
    pod (a pod's labels that name its model do not change in its life). A pod the API no
    longer has is None; any other API error raises PodListError, so the pull fails and runs
    the same range again rather than leaving that time unattributed. RBAC: pods get.
    """

    def __init__(
        self,
        label: str,
        api_client: client.ApiClient | None = None,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self.label, self.timeout_s = label, timeout_s
        self._api_client = api_client
        self._cache: dict[tuple[str, str], str | None] = {}

    def __call__(self, namespace: str, pod: str) -> str | None:
        """The model of ``namespace/pod``, or None when the pod is gone."""
        from scheduler.agent.join import model_for

        if (namespace, pod) in self._cache:
            return self._cache[(namespace, pod)]
        if self._api_client is None:
            self._api_client = _kube_client()
        try:
            found = client.CoreV1Api(self._api_client).read_namespaced_pod(
                pod, namespace, _request_timeout=self.timeout_s
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise PodListError(f"read pod {namespace}/{pod}: HTTP {exc.status}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise PodListError(f"read pod {namespace}/{pod}: {exc}") from exc
        model: str | None = model_for(pod_info(found), self.label)
        self._cache[(namespace, pod)] = model
        return model
