"""Exact object changes: server-side apply through MPS -> MIG -> time-slicing -> whole GPU.

Against the fake API server (tests/utils/kube_server.py: server-side apply with managedFields,
a Deployment controller and scheduler, the GPU Operator's MIG manager and device plugin). After
each apply a model's Deployment holds exactly the GPU limit and env of its current mode (none
left from the previous one), the fields its owner set (image) stay, a second apply and a
``--dry-run`` find zero changes, and the timeline shows no model pod on a node's GPUs while
that node's MIG layout changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.kube import KubeApplier
from scheduler.model import Snapshot
from scheduler.planner import plan
from scheduler.policy import Policy
from tests.scheduler.builders import fleet, workload
from tests.utils.kube_server import KubeServer
from tests.utils.kube_sim import gpus_busy_during_reconfiguration

MODELS = ("llama-3-8b", "mistral-7b")
IMAGE = "vllm/vllm-openai:v0.6"


def _snapshot(scale: float = 1.0) -> Snapshot:
    """Two A100 nodes; ``scale`` multiplies the compute demand (4: a whole GPU per replica)."""
    return Snapshot(
        fleet(("a100", "a", 2), ("a100", "b", 2)),
        (
            workload("llama-3-8b", 18000, 0.3 * scale, 2, iso="best-effort", latency="batch"),
            workload("mistral-7b", 16000, 0.25 * scale, 1, iso="best-effort", latency="batch"),
        ),
    )


@pytest.fixture
def kube() -> Iterator[KubeServer]:
    with KubeServer() as k:
        for n in ("a", "b"):
            k.state.add_node(n, gpus=2)
        for m in MODELS:
            k.state.add_deployment("default", m, model=m, replicas=1, image=IMAGE)
        k.state.reconcile()
        yield k


def _applier(kube: KubeServer) -> KubeApplier:
    return KubeApplier(kube.api_client(), "default", sleep=lambda s: None)


def _containers(kube: KubeServer) -> dict[str, dict[str, Any]]:
    """Running Deployments (replicas > 0) -> their first container."""
    return {
        name: d["spec"]["template"]["spec"]["containers"][0]
        for (_, name), d in kube.state.deployments.items()
        if d["spec"].get("replicas")
    }


def test_mode_round_trip_ends_clean_and_idempotent(kube: KubeServer) -> None:
    a = _applier(kube)
    for mode, resource, scale in [
        ("mps", "nvidia.com/gpu", 1.0),
        ("mig", "nvidia.com/mig-", 1.0),
        ("timeslice", "nvidia.com/gpu", 1.0),
        ("gpu", "nvidia.com/gpu", 4.0),
    ]:
        snap = _snapshot(scale)
        p = plan(snap, Policy(modes=(mode,)))
        assert not p.unplaced, mode
        result = a.apply(p, snap.gpus)
        assert result.applied and not result.errors, (mode, result.errors)
        for name, c in _containers(kube).items():
            limits = c["resources"]["limits"]
            assert len(limits) == 1 and next(iter(limits)).startswith(resource), (mode, name, c)
            env = {e["name"] for e in c.get("env") or []}
            if mode == "mps":
                assert env == {
                    "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
                    "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT",
                }, (mode, name)
            else:
                assert not env, (mode, name, env)
            assert c["image"] == IMAGE
        # every model replica runs, on a GPU resource the device plugin advertises
        pods = [
            p for p in kube.state.pods.values() if p["metadata"]["labels"].get("costctl.io/model")
        ]
        assert all(p["spec"].get("nodeName") for p in pods), mode
        assert sum(1 for p in pods) == 3, mode
        assert a.apply(p, snap.gpus, dry_run=True).changes == (), mode
        again = a.apply(p, snap.gpus)
        assert again.applied and again.changes == (), (mode, again.changes)
    assert gpus_busy_during_reconfiguration(kube.state.timeline) == []
    assert any(e.kind == "mig-state" and e.value == "success" for e in kube.state.timeline)
