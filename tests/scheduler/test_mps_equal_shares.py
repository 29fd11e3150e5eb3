"""MPS as the device plugin serves it: what each pod gets, read back from the rendered config.

The NVIDIA device plugin's MPS sharing (``sharing.mps.resources[].replicas``) splits every GPU
of a node into ``replicas`` equal shares: each client gets 1/replicas of the SMs and of the
memory, asks for one share (``nvidia.com/gpu: 1``; MPS forces failRequestsGreaterThanOne),
and its env vars can only lower that. So the share a pod gets is 1/replicas of its node's
config, whatever the planner's per-slot numbers say.
"""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.catalog import gpu_type
from scheduler.kube.render import DP_CONFIG_LABEL, render
from scheduler.model import Mode, Plan, Snapshot, Workload
from scheduler.planner import plan
from scheduler.policy import Policy
from scheduler.strategies import strategy_table
from tests.scheduler.builders import fleet, workload


def _served(p: Plan, snap: Snapshot) -> list[tuple[Workload, str, float, float]]:
    """(workload, GPU type, SM fraction, memory MiB) each MPS pod gets from the rendered
    device-plugin config of its node."""
    r = render(p, snap.gpus)
    configs = {k: yaml.safe_load(v) for k, v in r.device_plugin.data.items()}
    types = {g.uuid: g.gpu_type for g in snap.gpus}
    by_model = {w.model: w for w in snap.workloads}
    out = []
    for s in p.slots:
        if s.mode is not Mode.mps:
            continue
        doc = configs[r.node_labels[s.node][DP_CONFIG_LABEL]]
        (res,) = doc["sharing"]["mps"]["resources"]
        assert res["name"] == "nvidia.com/gpu" and res["replicas"] >= 2
        assert doc["flags"]["migStrategy"] == "none"  # MPS is not offered with MIG
        t = types[s.gpu_uuid]
        n = res["replicas"]
        out.append((by_model[s.model], t, 1.0 / n, gpu_type(t).memory_mib / n))
        clients = sum(1 for x in p.slots if x.gpu_uuid == s.gpu_uuid)
        assert clients <= n  # no more clients than the GPU has shares
    return out


def test_each_pod_gets_what_its_model_needs() -> None:
    snap = Snapshot(
        fleet(("a100", "n1", 2), ("h100", "n2", 2)),
        (
            workload("big", 30000, 0.45, 2),
            workload("mid", 20000, 0.3, 3),
            workload("small", 9000, 0.1, 5),
        ),
    )
    p = plan(snap)
    assert not p.unplaced
    served = _served(p, snap)
    assert len(served) == len([s for s in p.slots if s.mode is Mode.mps]) > 0
    for w, t, sm, mem in served:
        assert sm >= w.compute_on(t) - 1e-9, (w.model, t, sm)
        assert mem >= w.mem_mib, (w.model, t, mem)


def test_per_claim_shares_are_not_what_the_device_plugin_serves() -> None:
    # the old path: 0.6 + 0.3 of one T4 by MPS; the device plugin would give each half of it
    ws = (
        workload("a", 4000, 0.6, scale_compute=False),
        workload("b", 4000, 0.3, scale_compute=False),
    )
    snap = Snapshot(fleet(("t4", "n1", 1), ("t4", "n2", 1)), ws)
    old = plan(snap, Policy(mps_shares="per-claim"))
    assert {s.mode for s in old.slots} == {Mode.mps} and old.gpus_used == 1
    assert any(sm < w.compute_on(t) for w, t, sm, _ in _served(old, snap))
    new = plan(snap)  # 0.6 is more than any equal share (replicas >= 2): a whole GPU
    assert not new.unplaced
    assert {(s.model, s.mode) for s in new.slots} == {("a", Mode.gpu), ("b", Mode.mps)}
    assert all(sm >= w.compute_on(t) for w, t, sm, _ in _served(new, snap))


def test_a_replica_that_needs_a_coarser_split_resplits_the_node() -> None:
    # "small" alone would take quarters; "big" needs half a GPU: the node is split in 2
    snap = Snapshot(
        fleet(("a100", "n1", 2)), (workload("small", 9000, 0.2, 2), workload("big", 30000, 0.45))
    )
    p = plan(snap)
    assert not p.unplaced and p.nodes[0].mps_replicas == 2
    for w, t, sm, mem in _served(p, snap):
        assert sm >= w.compute_on(t) and mem >= w.mem_mib


def test_unknown_share_rule_is_rejected() -> None:
    with pytest.raises(ValueError, match="mps_shares"):
        strategy_table(["mps"], "unequal")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1000, 60000), st.floats(0.02, 0.9), st.integers(1, 4)),
        min_size=1,
        max_size=6,
    )
)
def test_rendered_shares_cover_demand_for_any_mix(specs: list[tuple[int, float, int]]) -> None:
    ws = tuple(workload(f"m{i}", mem, round(c, 3), n) for i, (mem, c, n) in enumerate(specs))
    snap = Snapshot(fleet(("a100", "n1", 4), ("h100", "n2", 4), ("a100", "n3", 4)), ws)
    p = plan(snap)
    for w, t, sm, mem in _served(p, snap):
        assert sm >= w.compute_on(t) - 1e-9
        assert mem >= w.mem_mib
    placed = sum(1 for s in p.slots if s.mode is not Mode.gpu) + sum(
        1 for s in p.slots if s.mode is Mode.gpu
    )
    assert placed + len(p.unplaced) >= sum(w.replicas for w in ws)
    if not p.unplaced:  # the bound relaxes equal shares to per-claim ones: still a bound
        assert p.lower_bound.gpus <= p.gpus_used
        assert p.lower_bound.usd_per_hour <= p.usd_per_hour + 1e-6
