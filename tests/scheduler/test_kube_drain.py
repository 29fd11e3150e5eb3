"""Drain before repartition, read from the fake API server's timeline.

Models run on whole GPUs of node ``a`` (their own Deployments, no affinity); a MIG plan
repartitions ``a``. The applier must cordon ``a``, surge the replicas onto ``b``, evict the old
pods (PodDisruptionBudgets honoured), relabel, wait for the MIG manager (which only succeeds
when no pod holds the node's GPUs), uncordon, and only then place the plan's pods.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scheduler.config import SchedulerConfig
from scheduler.kube import KubeApplier
from scheduler.kube import drain as drain_mod
from scheduler.model import Plan, Snapshot
from scheduler.planner import plan
from scheduler.policy import Policy
from tests.scheduler.builders import fleet, workload
from tests.utils.kube_server import KubeServer
from tests.utils.kube_sim import Event, gpus_busy_during_reconfiguration

MODELS = ("llama-3-8b", "mistral-7b")


def _planned() -> tuple[Snapshot, Plan]:
    snap = Snapshot(
        fleet(("a100", "a", 2), ("a100", "b", 2)),
        (
            workload("llama-3-8b", 18000, 0.3, 1, iso="strict"),
            workload("mistral-7b", 16000, 0.25, 1, iso="strict"),
        ),
    )
    p = plan(snap, Policy(modes=("mig",)))
    assert {s.node for s in p.slots} == {"a"}
    return snap, p


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as k:
        for n in ("a", "b"):
            k.state.add_node(n, gpus=2)
        for m in MODELS:
            k.state.add_deployment("default", m, model=m, replicas=1)
            c = k.state.deployments[("default", m)]["spec"]["template"]["spec"]["containers"][0]
            c["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
        k.state.reconcile()
        assert {p["spec"]["nodeName"] for p in k.state.pods.values()} == {"a"}
        yield k


def _applier(kube: KubeServer, **kw: object) -> KubeApplier:
    return KubeApplier(kube.api_client(), "default", sleep=lambda s: None, **kw)  # type: ignore[arg-type]


def _index(timeline: list[Event], pred: object) -> int:
    return next(i for i, e in enumerate(timeline) if pred(e))  # type: ignore[operator]


def test_replicas_surge_elsewhere_before_the_node_is_repartitioned(kube: KubeServer) -> None:
    snap, p = _planned()
    a = _applier(kube)
    dry = a.apply(p, snap.gpus, dry_run=True).changes
    # the manifest's own nvidia.com/gpu limit is taken over (SSA alone would keep it)
    assert any(c.field.startswith("take over") for c in dry)
    result = a.apply(p, snap.gpus)
    assert result.applied and not result.errors and result.notes == ()
    assert a.apply(p, snap.gpus, dry_run=True).changes == ()
    t = kube.state.timeline
    assert gpus_busy_during_reconfiguration(t) == []
    cordon = _index(t, lambda e: e.kind == "cordon" and e.value == "true")
    surged = _index(t, lambda e: e.kind == "bind" and e.node == "b")
    evicted = _index(t, lambda e: e.kind == "delete" and e.node == "a" and e.gpu)
    relabel = _index(t, lambda e: e.kind == "label" and e.subject == "nvidia.com/mig.config")
    success = _index(t, lambda e: e.kind == "mig-state" and e.value == "success")
    uncordon = _index(t, lambda e: e.kind == "cordon" and e.value == "false")
    placed = max(i for i, e in enumerate(t) if e.kind == "bind" and e.node == "a")
    assert cordon < surged < evicted < relabel < success < uncordon < placed
    # the plan's pods run on the new MIG devices of a, nothing is left on b
    on = {p["metadata"]["labels"]["costctl.io/model"]: p for p in kube.state.pods.values()}
    assert {p["spec"]["nodeName"] for p in on.values()} == {"a"}
    limits = on["mistral-7b"]["spec"]["containers"][0]["resources"]["limits"]
    assert list(limits) == ["nvidia.com/mig-2g.20gb"]
    assert not kube.state.nodes["a"]["spec"].get("unschedulable")


def test_without_room_elsewhere_replicas_are_scaled_down_and_reported(kube: KubeServer) -> None:
    kube.state.nodes["b"]["spec"]["unschedulable"] = True  # no room anywhere else
    snap, p = _planned()
    result = _applier(kube).apply(p, snap.gpus)
    assert result.applied and not result.errors
    assert sorted(result.notes) == [
        "llama-3-8b: scaled down 1 -> 0 while a is repartitioned (no room elsewhere)",
        "mistral-7b: scaled down 1 -> 0 while a is repartitioned (no room elsewhere)",
    ]
    assert gpus_busy_during_reconfiguration(kube.state.timeline) == []
    assert kube.state.deployments[("default", "mistral-7b")]["spec"]["replicas"] == 1  # placed


def test_a_disruption_budget_that_forbids_eviction_skips_the_node(kube: KubeServer) -> None:
    kube.state.nodes["b"]["spec"]["unschedulable"] = True
    kube.state.add_pdb("default", "llama", {"app": "llama-3-8b"}, minAvailable=1)
    snap, p = _planned()
    result = _applier(kube).apply(p, snap.gpus)
    assert not result.applied and result.failed_nodes == ("a",)
    assert "PodDisruptionBudget refuses evicting default/llama-3-8b" in result.errors[0]
    node = kube.state.nodes["a"]
    assert "nvidia.com/mig.config" not in node["metadata"]["labels"]
    assert not node["spec"].get("unschedulable")  # uncordoned
    assert {n: d["spec"]["replicas"] for (_, n), d in kube.state.deployments.items()} == {
        "llama-3-8b": 1,
        "mistral-7b": 1,
    }


def test_relabelling_under_running_pods_never_reconfigures(
    kube: KubeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake's MIG manager has teeth: skip the drain and the node times out, rolled back."""

    def no_drain(a: KubeApplier, node: str) -> tuple[drain_mod.Drained, str | None]:
        return drain_mod.Drained(node), None

    monkeypatch.setattr(drain_mod, "drain", no_drain)
    t = iter(range(0, 10_000, 100))
    a = _applier(
        kube, monotonic=lambda: float(next(t)), config=SchedulerConfig(apply_timeout_s=300)
    )
    snap, p = _planned()
    result = a.apply(p, snap.gpus)
    assert result.failed_nodes == ("a",) and "timeout" in result.errors[0]
    assert gpus_busy_during_reconfiguration(kube.state.timeline) != []


def test_a_failed_mig_reconfiguration_restores_replicas_and_uncordons(kube: KubeServer) -> None:
    kube.state.mig_outcome["a"] = "failed"
    snap, p = _planned()
    result = _applier(kube).apply(p, snap.gpus)
    assert result.failed_nodes == ("a",) and "rolled back, node uncordoned" in result.errors[0]
    assert not kube.state.nodes["a"]["spec"].get("unschedulable")
    assert {n: d["spec"]["replicas"] for (_, n), d in kube.state.deployments.items()} == {
        "llama-3-8b": 1,
        "mistral-7b": 1,
    }
