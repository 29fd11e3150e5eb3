"""KubeApplier built the way a role's process builds it, against the fake Kubernetes API server.

``KubeApplier.from_settings`` with the Settings a workload's container environment gives (the
plain ``value`` entries; secrets are not needed to reach the cluster) and the in-cluster config
pointed at tests/utils/kube_server.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from kubernetes import client
from kubernetes import config as kube_config

from costctl.settings import Settings
from scheduler.kube import KubeApplier
from tests.deploy.kustomize import Doc
from tests.deploy.manifests import env_of, named
from tests.deploy.rbac import Permission, permissions
from tests.utils.kube_server import KubeServer


def service_account(docs: list[Doc], kind: str, name: str) -> tuple[str, str]:
    """(namespace, ServiceAccount name) of a workload's pods."""
    d = named(docs, kind, name)
    return d["metadata"]["namespace"], d["spec"]["template"]["spec"]["serviceAccountName"]


def deployment_permissions(docs: list[Doc], name: str) -> list[Permission]:
    """The permissions of Deployment ``name``'s ServiceAccount in a build."""
    return permissions(docs, *service_account(docs, "Deployment", name))


def deployment_settings(docs: list[Doc], name: str, mp: pytest.MonkeyPatch) -> Settings:
    """Settings from Deployment ``name``'s container env (set in the environment via ``mp``)."""
    (c,) = named(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
    for k, v in env_of(c).items():
        if isinstance(v, str):
            mp.setenv(k, v)
    return Settings(_env_file=None)  # type: ignore[call-arg]


@contextmanager
def in_cluster(kube: KubeServer) -> Iterator[None]:
    """``load_incluster_config`` points the kubernetes client at ``kube`` inside the block."""
    cfg = client.Configuration()
    cfg.host = kube.url
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(client.Configuration, "_default", None)
        mp.setattr(
            kube_config, "load_incluster_config", lambda: client.Configuration.set_default(cfg)
        )
        yield


def applier_of(kube: KubeServer, docs: list[Doc], name: str) -> tuple[KubeApplier, Settings]:
    """The applier (no sleeping between retries) Deployment ``name``'s process builds."""
    with pytest.MonkeyPatch.context() as mp, in_cluster(kube):
        settings = deployment_settings(docs, name, mp)
        a = KubeApplier.from_settings(settings)
    a.sleep = lambda s: None
    return a, settings
