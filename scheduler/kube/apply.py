"""Apply a plan through the real kubernetes client, and scale models (the kill-switch).

Phases (k8s ReservePlugin semantics): **reserve** remembers, in memory, a node's labels
before we change them; **apply** (planapply.py) server-side-applies the ConfigMaps and the
ClusterPolicy wiring, then node by node drains a node whose MIG layout changes (drain.py),
patches ``nvidia.com/mig.config`` + ``nvidia.com/device-plugin.config`` in one patch and waits
for ``nvidia.com/mig.config.state=success``; on ``failed`` or a timeout **unreserve** patches
the remembered labels back and the node is uncordoned with its replicas restored, so a node is
never left half-applied; Deployments are applied only when every node succeeded. API errors
(429, 5xx, connection) are retried with exponential backoff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scheduler.config import SchedulerConfig
from scheduler.kube.render import (
    MIG_STATE_LABEL,
    MODEL_LABEL,
    Rendered,
    render,
    to_dicts,
)
from scheduler.model import GpuSnapshot, Plan

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_STATUS = {429, 500, 502, 503, 504}
FIELD_MANAGER = "costctl"
APPLY_PATCH = "application/apply-patch+yaml"
BEFORE_SCALE = "costctl.io/replicas-before-scale"
BUSY_STATES = {"pending", "rebooting"}


class ApplyError(RuntimeError):
    """The cluster refused a change (after retries)."""


class NoClusterError(ApplyError):
    """No in-cluster config and no kubeconfig: there is no cluster to talk to."""


def first_line(exc: BaseException) -> str:
    """An exception's first line, at most 120 characters."""
    return (str(exc).splitlines() or [type(exc).__name__])[0][:120]


@dataclass(frozen=True)
class Change:
    """One difference between the cluster and the plan (what --dry-run prints)."""

    kind: str
    name: str
    field: str
    before: Any
    after: Any


@dataclass(frozen=True)
class ApplyResult:
    """What apply did: the changes, whether they were written, and per-node failures."""

    changes: tuple[Change, ...]
    applied: bool
    failed_nodes: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class KubeApplier:
    """The Kubernetes edge: plans onto nodes/ConfigMaps/Deployments, models scaled by label."""

    api_client: client.ApiClient
    namespace: str = "default"
    config: SchedulerConfig = field(default_factory=SchedulerConfig)
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    poll_s: float = 2.0
    _reserved: dict[str, dict[str, str | None]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any) -> KubeApplier:
        """From costctl Settings: in-cluster config, else ~/.kube/config."""
        from kubernetes import config as kube_config

        try:
            kube_config.load_incluster_config()
        except kube_config.ConfigException:
            try:
                kube_config.load_kube_config()
            except (kube_config.ConfigException, OSError) as exc:
                raise NoClusterError(
                    "no Kubernetes cluster: neither an in-cluster service account nor a "
                    f"kubeconfig (KUBECONFIG or ~/.kube/config) was found ({first_line(exc)})"
                ) from exc
        sched: SchedulerConfig = settings.scheduler
        return cls(client.ApiClient(), sched.kube_namespace, sched)

    @property
    def core(self) -> client.CoreV1Api:
        """Core v1 API."""
        return client.CoreV1Api(self.api_client)

    @property
    def apps(self) -> client.AppsV1Api:
        """Apps v1 API."""
        return client.AppsV1Api(self.api_client)

    @property
    def custom(self) -> client.CustomObjectsApi:
        """Custom objects (the GPU Operator's ClusterPolicy)."""
        return client.CustomObjectsApi(self.api_client)

    @property
    def operator_namespace(self) -> str:
        """The GPU Operator's namespace (settings: scheduler.gpu_operator_namespace)."""
        return self.config.gpu_operator_namespace

    def server_apply(self, body: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply ``body`` (Deployment, ConfigMap or ClusterPolicy) as ``costctl``.

        ``force=true``: costctl takes over fields another manager set (the plan is the
        authority on what it owns). Returns the object the API server answers.
        """
        kw: dict[str, Any] = {
            "field_manager": FIELD_MANAGER,
            "force": True,
            "_content_type": APPLY_PATCH,
        }
        if dry_run:
            kw["dry_run"] = "All"
        name = body["metadata"]["name"]
        kind = body["kind"]
        if kind == "Deployment":
            got: Any = self._retry(
                self.apps.patch_namespaced_deployment, name, self.namespace, body, **kw
            )
        elif kind == "ConfigMap":
            got = self._retry(
                self.core.patch_namespaced_config_map, name, self.operator_namespace, body, **kw
            )
        elif kind == "ClusterPolicy":
            got = self._retry(
                self.custom.patch_cluster_custom_object,
                "nvidia.com",
                "v1",
                "clusterpolicies",
                name,
                body,
                **kw,
            )
        else:
            raise ValueError(f"no server-side apply for kind {kind}")
        return dict(got) if isinstance(got, dict) else to_dicts([got])[0]

    def cordon(self, node: str, on: bool) -> None:
        """Set (or clear) ``spec.unschedulable`` on ``node``."""
        self._retry(self.core.patch_node, node, {"spec": {"unschedulable": True if on else None}})

    def evict(self, name: str, namespace: str, body: Any) -> str | None:
        """Evict a pod (policy/v1 Eviction); the refusal's reason, or None when evicted.

        HTTP 429 here is a PodDisruptionBudget that allows no disruption now (not retried).
        """
        try:
            self.core.create_namespaced_pod_eviction(name, namespace, body)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 429:
                return f"PodDisruptionBudget refuses evicting {namespace}/{name}"
            raise ApplyError(f"evict {namespace}/{name}: HTTP {exc.status} {exc.reason}") from exc
        return None

    def _retry(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn``; retry 409/429/5xx and connection errors with backoff 0.2 s x 2^n."""
        attempts = self.config.api_retries + 1
        for attempt in range(attempts):
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                if exc.status not in RETRY_STATUS or attempt == attempts - 1:
                    raise ApplyError(
                        f"{getattr(fn, '__name__', fn)}: HTTP {exc.status} {exc.reason}"
                    ) from exc
            except urllib3.exceptions.HTTPError as exc:
                if attempt == attempts - 1:
                    raise ApplyError(f"{getattr(fn, '__name__', fn)}: {exc}") from exc
            self.sleep(min(5.0, 0.2 * 2**attempt))
        raise AssertionError("unreachable")

    # -- kill-switch --------------------------------------------------------------------------

    def _model_deployments(self, model: str) -> list[Any]:
        found = self._retry(
            self.apps.list_namespaced_deployment,
            self.namespace,
            label_selector=f"{MODEL_LABEL}={model}",
        )
        items = sorted(found.items, key=lambda d: d.metadata.name)
        if not items:
            raise LookupError(f"no Deployment labelled {MODEL_LABEL}={model} in {self.namespace}")
        return items

    def _set_replicas(self, name: str, replicas: int) -> None:
        self._retry(
            self.apps.patch_namespaced_deployment_scale,
            name,
            self.namespace,
            {"spec": {"replicas": replicas}},
        )

    def scale_model(self, model: str, replicas: int) -> int:
        """Scale the model's Deployment(s) to ``replicas``; returns the total replicas before.

        Scaling to 0 records each Deployment's count in the annotation
        ``costctl.io/replicas-before-scale``; scaling back to that total restores each one.
        Raises: LookupError when no Deployment has the label, ValueError for replicas < 0.
        """
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        items = self._model_deployments(model)
        before = {}
        for d in items:
            scale = self._retry(
                self.apps.read_namespaced_deployment_scale, d.metadata.name, self.namespace
            )
            before[d.metadata.name] = int(scale.spec.replicas or 0)
        total = sum(before.values())
        if replicas == 0:
            for name, n in before.items():
                if n > 0:
                    self._retry(
                        self.apps.patch_namespaced_deployment,
                        name,
                        self.namespace,
                        {"metadata": {"annotations": {BEFORE_SCALE: str(n)}}},
                    )
                self._set_replicas(name, 0)
            return total
        saved = {
            d.metadata.name: int((d.metadata.annotations or {}).get(BEFORE_SCALE, 0)) for d in items
        }
        if len(items) > 1 and sum(saved.values()) == replicas:
            for name, n in saved.items():
                self._set_replicas(name, n)
        else:
            for i, name in enumerate(before):
                self._set_replicas(name, replicas if i == 0 else 0)
        return total

    def restore(self, model: str) -> int:
        """Scale every Deployment of ``model`` back to its recorded count; returns the total."""
        items = self._model_deployments(model)
        total = 0
        for d in items:
            n = int((d.metadata.annotations or {}).get(BEFORE_SCALE, 0))
            if n:
                self._set_replicas(d.metadata.name, n)
            total += n
        return total

    # -- reserve / unreserve ------------------------------------------------------------------

    def reserve(self, node: str, labels: dict[str, str | None]) -> None:
        """Remember ``node``'s current values of the labels we are about to change.

        Allowed outcomes: success (no cluster write). Re-reserving keeps the first memory.
        """
        self._reserved.setdefault(node, dict(labels))

    def unreserve(self, node: str) -> bool:
        """Put back what ``reserve`` remembered for ``node``; True if a patch was sent.

        Idempotent and safe without a matching reserve (then it does nothing). Allowed
        outcomes: labels restored, nothing to do, or ApplyError (memory kept to retry).
        """
        labels = self._reserved.get(node)
        if labels is None:
            return False
        self._retry(self.core.patch_node, node, {"metadata": {"labels": labels}})
        self._reserved.pop(node, None)
        return True

    def release(self, node: str) -> None:
        """Forget a reservation after the node was applied successfully."""
        self._reserved.pop(node, None)

    # -- plans --------------------------------------------------------------------------------

    def render(self, plan: Plan, gpus: Sequence[GpuSnapshot]) -> Rendered:
        """The plan's objects for this applier's namespaces and ConfigMap names."""
        return render(
            plan,
            gpus,
            namespace=self.namespace,
            mig_configmap=self.config.mig_parted_configmap,
            device_plugin_configmap=self.config.device_plugin_configmap,
            operator_namespace=self.operator_namespace,
        )

    def apply(
        self,
        plan: Plan,
        gpus: Sequence[GpuSnapshot],
        *,
        dry_run: bool = False,
        target: str = "device-plugin",
    ) -> ApplyResult:
        """Diff the plan against the cluster and, unless ``dry_run``, apply it (see module doc).

        ``target``: "device-plugin" (this module) or "dra" (``scheduler.kube.dra_apply``).
        Raises: ValueError for another target.
        """
        if target == "dra":
            from scheduler.kube.dra_apply import apply_dra_plan

            return apply_dra_plan(self, plan, gpus, dry_run=dry_run)
        if target != "device-plugin":
            raise ValueError(f"unknown target {target!r}; known: device-plugin, dra")
        from scheduler.kube.planapply import apply_rendered, desired, diff_rendered

        want = desired(self, self.render(plan, gpus))
        changes = diff_rendered(self, want)
        if dry_run:
            return ApplyResult(tuple(changes), applied=False)
        return apply_rendered(self, want, changes)

    def wait_mig(self, node: str) -> str:
        """Poll ``nvidia.com/mig.config.state`` until success/failed or the timeout."""
        deadline = self.monotonic() + self.config.apply_timeout_s
        while True:
            labels = self._retry(self.core.read_node, node).metadata.labels or {}
            state = labels.get(MIG_STATE_LABEL, "")
            if state in ("success", "failed"):
                return str(state)
            if self.monotonic() >= deadline:
                return "timeout"
            self.sleep(self.poll_s)


__all__ = [
    "ApplyError",
    "ApplyResult",
    "Change",
    "KubeApplier",
    "NoClusterError",
    "to_dicts",
]
