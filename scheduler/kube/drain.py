"""Move a model's pods off a node before its MIG layout changes (MIG needs the GPUs idle).

``drain(applier, node)``:
1. **cordon** the node (``spec.unschedulable``), so no replacement lands on it;
2. **surge**: each model Deployment with k GPU pods on the node is scaled up by k, so the
   replacements start elsewhere while the old pods still serve (where capacity allows);
3. **evict** the node's GPU pods through the Eviction API (``pods/eviction``), which honours
   PodDisruptionBudgets: a refusal (HTTP 429) stops the drain and the node is skipped;
4. wait (``drain_timeout_s``) until no GPU pod of a model is left on the node;
5. scale each Deployment back to its replicas, or to the pods that found room elsewhere when
   fewer did (the scheduler deletes unscheduled pods first): "scaled down" notes say so.

A GPU pod on the node that no model Deployment owns (another team's job) cannot be moved:
the node is skipped. ``undrain`` puts the replicas back and uncordons (MIG failure, timeout).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubernetes import client

from scheduler.kube.render import MODEL_LABEL

if TYPE_CHECKING:
    from scheduler.kube.apply import KubeApplier


@dataclass
class Drained:
    """What a drain changed: the node, the replicas before, notes for the report."""

    node: str
    replicas: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _holds_gpu(pod: Any) -> bool:
    for c in pod.spec.containers or []:
        limits = (c.resources.limits if c.resources else None) or {}
        if any(k.startswith("nvidia.com/") for k in limits):
            return True
    return False


def _gpu_pods(a: KubeApplier, node: str) -> list[Any]:
    found = a._retry(a.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}")
    return [p for p in found.items if _holds_gpu(p) and not p.metadata.deletion_timestamp]


def _owner(pod: Any, deployments: list[Any]) -> str | None:
    labels = pod.metadata.labels or {}
    for d in deployments:
        sel = d.spec.selector.match_labels or {}
        if (
            pod.metadata.namespace == d.metadata.namespace
            and sel
            and all(labels.get(k) == v for k, v in sel.items())
        ):
            return str(d.metadata.name)
    return None


def _scheduled(a: KubeApplier, d: Any) -> int:
    sel = ",".join(f"{k}={v}" for k, v in sorted((d.spec.selector.match_labels or {}).items()))
    pods = a._retry(a.core.list_namespaced_pod, a.namespace, label_selector=sel).items
    return sum(1 for p in pods if p.spec.node_name and not p.metadata.deletion_timestamp)


def drain(a: KubeApplier, node: str) -> tuple[Drained, str | None]:
    """Cordon ``node`` and move its model GPU pods elsewhere; (what was done, error or None)."""
    out = Drained(node)
    pods = _gpu_pods(a, node)
    a.cordon(node, True)
    if not pods:
        return out, None
    deps = a._retry(
        a.apps.list_namespaced_deployment, a.namespace, label_selector=MODEL_LABEL
    ).items
    by_name = {d.metadata.name: d for d in deps}
    owned: dict[str, list[Any]] = {}
    for p in pods:
        owner = _owner(p, deps)
        if owner is None:
            return out, (
                f"{node}: pod {p.metadata.namespace}/{p.metadata.name} holds GPUs and is not a "
                "model Deployment's: cannot move it; node skipped"
            )
        owned.setdefault(owner, []).append(p)
    for name, ps in sorted(owned.items()):
        r = int(by_name[name].spec.replicas or 0)
        out.replicas[name] = r
        a._set_replicas(name, r + len(ps))  # surge: replacements start off the cordoned node
    for _, ps in sorted(owned.items()):
        for p in ps:
            body = client.V1Eviction(
                metadata=client.V1ObjectMeta(name=p.metadata.name, namespace=p.metadata.namespace)
            )
            err = a.evict(p.metadata.name, p.metadata.namespace, body)
            if err:
                return out, f"{node}: {err}; node skipped"
    deadline = a.monotonic() + a.config.drain_timeout_s
    while _gpu_pods(a, node):
        if a.monotonic() >= deadline:
            return (
                out,
                f"{node}: GPU pods still on the node after "
                f"{a.config.drain_timeout_s:.0f} s; node skipped",
            )
        a.sleep(a.poll_s)
    for name, r in sorted(out.replicas.items()):
        placed = _scheduled(a, by_name[name])
        final = min(r, placed)
        a._set_replicas(name, final)
        if final < r:
            out.notes.append(
                f"{name}: scaled down {r} -> {final} while {node} is repartitioned "
                "(no room elsewhere)"
            )
    return out, None


def undrain(a: KubeApplier, d: Drained) -> None:
    """Put the drained Deployments' replicas back and uncordon the node."""
    for name, r in sorted(d.replicas.items()):
        a._set_replicas(name, r)
    a.cordon(d.node, False)
