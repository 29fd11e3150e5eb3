"""The fake API server's cluster behaviours: controllers, scheduler, GPU Operator, timeline.

- **Deployment controller**: each Deployment owns ``spec.replicas`` pods stamped from its
  template; a changed template replaces its pods (new ones created before the old are
  deleted); scaling down deletes unscheduled pods first, then the lowest
  ``controller.kubernetes.io/pod-deletion-cost``, then the newest.
- **Scheduler**: a pending pod binds to the first node (by name) that is not cordoned,
  matches its ``nodeSelector`` and required node affinity (``In``/``NotIn`` on labels) and has
  room for its resource limits in ``status.allocatable`` (extended resources only).
- **GPU Operator** (``add_gpu_operator``): a ClusterPolicy and the operator's own
  ``default-mig-parted-config``. Changing ``nvidia.com/mig.config`` sets
  ``nvidia.com/mig.config.state=pending`` and takes the node's GPU resources away; the MIG
  manager (one step per GET of the node) reports ``success`` only when no pod on the node
  holds a GPU resource, and only for a config that exists in the ConfigMap named by
  ``ClusterPolicy.spec.migManager.config.name`` (else ``failed``). The device plugin then
  advertises ``status.allocatable`` from that MIG layout and the sharing config named by the
  node's ``nvidia.com/device-plugin.config`` label (or ``spec.devicePlugin.config.default``)
  in the ConfigMap ``spec.devicePlugin.config.name``: ``nvidia.com/gpu`` = full GPUs x
  replicas, ``nvidia.com/mig-<profile>`` per MIG device (mixed strategy).
- **Timeline** (``state.timeline``): every pod bind/delete, node label change, cordon and MIG
  state, in order.

Where it differs from a real cluster: pods are owned by their Deployment directly (no
ReplicaSet), start Running the moment they bind, and everything happens synchronously inside
the request that caused it; a MIG reconfiguration needs the whole node's GPUs free (the real
MIG manager needs every GPU it repartitions idle); ``nvidia.com/gpu`` limits only are counted
(no CPU/memory) and device-plugin configs are read for their ``replicas`` only.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml

if TYPE_CHECKING:
    from tests.utils.kube_server import KubeState

MIG_CONFIG = "nvidia.com/mig.config"
MIG_STATE = "nvidia.com/mig.config.state"
DP_CONFIG = "nvidia.com/device-plugin.config"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
OPERATOR_DEFAULT_MIG = "default-mig-parted-config"
OPERATOR_MIG_CONFIGS = {
    "all-disabled": [{"devices": "all", "mig-enabled": False}],
    "all-enabled": [{"devices": "all", "mig-enabled": True, "mig-devices": {}}],
    "all-1g.10gb": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.10gb": 7}}],
    "all-balanced": [
        {
            "devices": "all",
            "mig-enabled": True,
            "mig-devices": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
        }
    ],
}


class Event(NamedTuple):
    """One state change: ``kind`` in bind, delete, label, cordon, mig-state."""

    kind: str
    node: str
    subject: str
    value: str
    gpu: bool = False


def gpu_requests(pod: dict[str, Any]) -> dict[str, int]:
    """A pod's GPU resources (``nvidia.com/*`` limits, summed over containers)."""
    out: dict[str, int] = {}
    for c in pod["spec"].get("containers") or []:
        for k, v in ((c.get("resources") or {}).get("limits") or {}).items():
            if k.startswith("nvidia.com/"):
                out[k] = out.get(k, 0) + int(v)
    return out


def holds_gpu(pod: dict[str, Any]) -> bool:
    """Whether a bound pod holds a GPU resource."""
    return bool(pod["spec"].get("nodeName")) and bool(gpu_requests(pod))


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj["metadata"].setdefault("labels", {})


def _affinity_ok(pod: dict[str, Any], labels: dict[str, str]) -> bool:
    spec = pod["spec"]
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    na = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not na:
        return True
    for term in na.get("nodeSelectorTerms") or []:
        ok = True
        for e in term.get("matchExpressions") or []:
            have = labels.get(e["key"])
            if e["operator"] == "In" and have not in e.get("values", []):
                ok = False
            if e["operator"] == "NotIn" and have in e.get("values", []):
                ok = False
        if ok:
            return True
    return False


def _fits(st: KubeState, pod: dict[str, Any], node: dict[str, Any]) -> bool:
    if node["spec"].get("unschedulable") or not _affinity_ok(pod, _labels(node)):
        return False
    want = gpu_requests(pod)
    if not want:
        return True
    alloc = node["status"].get("allocatable") or {}
    name = node["metadata"]["name"]
    used: dict[str, int] = {}
    for p in st.pods.values():
        if p["spec"].get("nodeName") == name:
            for k, v in gpu_requests(p).items():
                used[k] = used.get(k, 0) + v
    return all(used.get(k, 0) + v <= int(alloc.get(k, 0)) for k, v in want.items())


def _model(pod: dict[str, Any]) -> str:
    return str(_labels(pod).get("costctl.io/model", ""))


def delete_pod(st: KubeState, key: tuple[str, str]) -> None:
    """Remove a pod (timeline: delete)."""
    pod = st.pods.pop(key)
    node = pod["spec"].get("nodeName") or ""
    st.timeline.append(Event("delete", node, "/".join(key), _model(pod), holds_gpu(pod)))


def schedule(st: KubeState) -> None:
    """Bind every pending pod that fits somewhere."""
    for key, pod in sorted(st.pods.items(), key=lambda kv: kv[1]["metadata"].get("seq", 0)):
        if pod["spec"].get("nodeName") or "seq" not in pod["metadata"]:
            continue
        for name, node in sorted(st.nodes.items()):
            if _fits(st, pod, node):
                pod["spec"]["nodeName"] = name
                pod["status"] = {"phase": "Running"}
                st.timeline.append(
                    Event("bind", name, "/".join(key), _model(pod), bool(gpu_requests(pod)))
                )
                break


def _owned(st: KubeState, ns: str, name: str) -> list[tuple[str, str]]:
    return [
        k
        for k, p in st.pods.items()
        if k[0] == ns
        and any(
            r.get("kind") == "Deployment" and r.get("name") == name
            for r in p["metadata"].get("ownerReferences") or []
        )
    ]


def _victim_rank(pod: dict[str, Any]) -> tuple[int, int, int]:
    cost = int((pod["metadata"].get("annotations") or {}).get(DELETION_COST, 0))
    return (1 if pod["spec"].get("nodeName") else 0, cost, -int(pod["metadata"]["seq"]))


def reconcile(st: KubeState) -> None:
    """Run the Deployment controller, then the scheduler."""
    for (ns, name), d in sorted(st.deployments.items()):
        tpl = d["spec"].get("template") or {}
        h = str(abs(hash(json.dumps(tpl, sort_keys=True))) % 10**8)
        mine = _owned(st, ns, name)
        current = [k for k in mine if st.pods[k]["metadata"].get("hash") == h]
        stale = [k for k in mine if k not in current]
        want = int(d["spec"].get("replicas") or 0)
        for _ in range(want - len(current)):
            st.seq += 1
            pname = f"{name}-{st.seq}"
            meta = {
                "name": pname,
                "namespace": ns,
                "uid": f"uid-{st.seq}",
                "labels": dict((tpl.get("metadata") or {}).get("labels") or {}),
                "seq": st.seq,
                "hash": h,
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": name,
                        "uid": f"uid-{ns}-{name}",
                        "controller": True,
                    }
                ],
            }
            spec = json.loads(json.dumps(tpl.get("spec") or {}))
            st.pods[(ns, pname)] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": meta,
                "spec": spec,
                "status": {"phase": "Pending"},
            }
            current.append((ns, pname))
        for k in stale:
            delete_pod(st, k)
        extra = len(current) - want
        if extra > 0:
            for k in sorted(current, key=lambda k: _victim_rank(st.pods[k]))[:extra]:
                delete_pod(st, k)
    schedule(st)
    for (ns, name), d in st.deployments.items():
        pods = [st.pods[k] for k in _owned(st, ns, name)]
        ready = sum(1 for p in pods if p["spec"].get("nodeName"))
        d["status"] = {"replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready}


# -- GPU Operator --------------------------------------------------------------------------


def _cluster_policy(st: KubeState) -> dict[str, Any] | None:
    return next(iter(st.clusterpolicies.values()), None)


def _config_map(st: KubeState, name: str) -> dict[str, str]:
    cm = st.configmaps.get((st.operator_namespace, name))
    return dict((cm or {}).get("data") or {})


def mig_configs(st: KubeState) -> dict[str, Any]:
    """The MIG configs the MIG manager reads (ClusterPolicy's ConfigMap, ``config.yaml``)."""
    cp = _cluster_policy(st)
    name = ((cp or {}).get("spec", {}).get("migManager", {}).get("config") or {}).get(
        "name"
    ) or OPERATOR_DEFAULT_MIG
    doc = yaml.safe_load(_config_map(st, name).get("config.yaml") or "{}") or {}
    return dict(doc.get("mig-configs") or {})


def _sharing_replicas(st: KubeState, node: dict[str, Any]) -> int | None:
    """Replicas per full GPU from the device-plugin config (None: the plugin cannot start)."""
    cp = _cluster_policy(st)
    cfg = (cp or {}).get("spec", {}).get("devicePlugin", {}).get("config") or {}
    key = _labels(node).get(DP_CONFIG) or cfg.get("default")
    if not cfg.get("name") or not key:
        return 1
    text = _config_map(st, cfg["name"]).get(key)
    if text is None:
        return None
    sharing = (yaml.safe_load(text) or {}).get("sharing") or {}
    for mode in ("mps", "timeSlicing"):
        for r in (sharing.get(mode) or {}).get("resources") or []:
            if r.get("name") == "nvidia.com/gpu":
                return int(r["replicas"])
    return 1


def advertise(st: KubeState, name: str) -> None:
    """The device plugin's ``status.allocatable`` for a node with ``st.node_gpus[name]`` GPUs."""
    n = st.node_gpus.get(name)
    if n is None:
        return
    node = st.nodes[name]
    alloc = {
        k: v
        for k, v in (node["status"].get("allocatable") or {}).items()
        if not k.startswith("nvidia.com/")
    }
    replicas = _sharing_replicas(st, node)
    if _labels(node).get(MIG_STATE) != "pending" and replicas is not None:
        entries = st.node_mig.get(name) or []
        full = 0
        for i in range(n):
            e = next(
                (e for e in entries if e.get("devices") == "all" or i in (e.get("devices") or [])),
                None,
            )
            if e and e.get("mig-enabled"):
                for prof, c in (e.get("mig-devices") or {}).items():
                    k = f"nvidia.com/mig-{prof}"
                    alloc[k] = str(int(alloc.get(k, 0)) + int(c))
            else:
                full += 1
        if full:
            alloc["nvidia.com/gpu"] = str(full * replicas)
    node["status"]["allocatable"] = alloc


def mig_manager_step(st: KubeState, name: str) -> None:
    """One look of the MIG manager at a node whose state is pending."""
    labels = _labels(st.nodes[name])
    if labels.get(MIG_STATE) != "pending":
        return
    forced = st.mig_outcome.get(name)
    if forced == "stuck":
        return
    if any(holds_gpu(p) and p["spec"]["nodeName"] == name for p in st.pods.values()):
        return  # GPUs in use: cannot repartition
    configs = mig_configs(st)
    wanted = labels.get(MIG_CONFIG)
    if forced == "failed" or wanted not in configs:
        outcome = "failed"
    else:
        outcome = "success"
        st.node_mig[name] = list(configs[wanted])
    labels[MIG_STATE] = outcome
    st.timeline.append(Event("mig-state", name, "", outcome))
    advertise(st, name)
    reconcile(st)


def node_changed(st: KubeState, name: str, before: dict[str, Any]) -> None:
    """Timeline and operator reactions to a write of a node."""
    node = st.nodes[name]
    old, new = before["metadata"].get("labels") or {}, _labels(node)
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k) and k != MIG_STATE:
            st.timeline.append(Event("label", name, k, str(new.get(k))))
    if old.get(MIG_CONFIG) != new.get(MIG_CONFIG):
        new[MIG_STATE] = "pending"
        st.timeline.append(Event("mig-state", name, "", "pending"))
    if bool(before["spec"].get("unschedulable")) != bool(node["spec"].get("unschedulable")):
        st.timeline.append(
            Event("cordon", name, "", str(bool(node["spec"].get("unschedulable"))).lower())
        )
    advertise(st, name)
    reconcile(st)


def gpus_busy_during_reconfiguration(timeline: list[Event]) -> list[str]:
    """Violations: a pod holding a node's GPUs while that node's MIG state is pending.

    Replays the timeline: a node is reconfiguring from ``mig-state pending`` to its outcome;
    a GPU pod (``Event.gpu``) is on a node from ``bind`` to ``delete``.
    """
    on: dict[str, set[str]] = {}
    pending: set[str] = set()
    out = []
    for e in timeline:
        if e.kind == "bind" and e.gpu:
            on.setdefault(e.node, set()).add(e.subject)
        elif e.kind == "delete":
            on.get(e.node, set()).discard(e.subject)
        elif e.kind == "mig-state":
            if e.value == "pending":
                pending.add(e.node)
            else:
                pending.discard(e.node)
        if e.node in pending and on.get(e.node):
            out.append(f"{e.node}: {sorted(on[e.node])} while MIG reconfigures ({e.kind})")
    return out
