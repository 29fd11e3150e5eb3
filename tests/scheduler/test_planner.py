"""plan(snapshot, policy): placement rules, bounds, determinism, repacking as a diff."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.bounds import l2_bound, lower_bound
from scheduler.model import Mode, NodeSharing, Slot, Snapshot
from scheduler.planner import plan
from scheduler.policy import Policy
from tests.scheduler.builders import fleet, workload


def _by_mode(p: object) -> Counter[str]:
    return Counter(s.mode.value for s in p.slots)  # type: ignore[attr-defined]


def test_strict_models_get_mig_slices_and_share_a_gpu() -> None:
    snap = Snapshot(
        fleet(("a100", "n1", 2)),
        (workload("a", 9000, 0.14, 4, iso="strict"), workload("b", 30000, 0.4, 1, iso="strict")),
    )
    p = plan(snap)
    assert _by_mode(p) == {"mig": 5}
    assert p.gpus_used == 1  # 4 x 1g + 3g fit one A100 (a layout nos omits)
    (gpu,) = p.gpus
    assert sorted(k for k, _ in gpu.mig_layout or ()) == ["1g", "1g", "1g", "1g", "3g"]
    assert sorted(s.profile or "" for s in p.slots) == ["1g.10gb"] * 4 + ["3g.40gb"]
    assert sum(s.share for s in p.slots) == pytest.approx(1.0)  # 7/7 of the GPU price


def test_shared_models_use_mps_with_thread_percent_and_memory_limit() -> None:
    snap = Snapshot(fleet(("a100", "n1", 2)), (workload("m", 4000, 0.3, 3),))
    p = plan(snap)  # equal shares: 0.3 of the SMs fits a third of the GPU, not a quarter
    assert p.gpus_used == 1 and _by_mode(p) == {"mps": 3}
    assert {(s.thread_pct, s.mem_limit_mib) for s in p.slots} == {(34, 81920 // 3)}  # ceil
    assert p.nodes[0].sharing is NodeSharing.mps and p.nodes[0].mps_replicas == 3
    per_claim = plan(snap, Policy(mps_shares="per-claim"))  # a DRA claim carries each share
    assert {(s.thread_pct, s.mem_limit_mib) for s in per_claim.slots} == {(30, 4000)}
    assert per_claim.nodes[0].mps_replicas == 0


def test_best_effort_batch_prefers_time_slicing_and_share_is_one_over_replicas() -> None:
    snap = Snapshot(
        fleet(("a100", "n1", 1)), (workload("b", 2000, 0.2, 4, iso="best-effort", latency="batch"),)
    )
    p = plan(snap)
    assert _by_mode(p) == {"timeslice": 4}
    assert {s.share for s in p.slots} == {0.25}
    assert p.gpus[0].timeslice_replicas == 4


def test_gangs_take_whole_gpus_on_one_node() -> None:
    snap = Snapshot(
        fleet(("a100", "n1", 2), ("a100", "n2", 4)), (workload("big", 80000, 1.0, 1, gpus=4),)
    )
    p = plan(snap)
    assert {s.node for s in p.slots} == {"n2"} and len(p.slots) == 4
    assert all(s.mode is Mode.gpu and s.share == 1.0 for s in p.slots)


def test_unplaced_replicas_carry_structured_reasons() -> None:
    snap = Snapshot(fleet(("t4", "n1", 1)), (workload("huge", 30000, 0.5, 1),))
    p = plan(snap)
    assert p.gpus_used == 0
    (u,) = p.unplaced
    assert u.model == "huge"
    assert {r.resource for _, r in u.reasons} == {"memory"}  # MPS and whole-GPU both say so
    assert {(r.requested, r.capacity) for _, r in u.reasons} == {(30000, 16384)}


def test_node_sharing_is_one_per_node() -> None:
    # shared (MPS) first; the best-effort batch model would rather time-slice, but every GPU
    # of a node shares one device-plugin config, so on this one-node fleet it joins MPS
    snap = Snapshot(
        fleet(("t4", "n1", 2)),
        (
            workload("s", 2000, 0.6, 1, scale_compute=False),
            workload("b", 2000, 0.6, 1, iso="best-effort", latency="batch", scale_compute=False),
        ),
    )
    per_claim = Policy(mps_shares="per-claim")  # 0.6 of a GPU is no equal MPS share (>= 2)
    p = plan(snap, per_claim)
    assert {s.mode for s in p.slots} == {Mode.mps} and p.gpus_used == 2
    assert [n.sharing for n in p.nodes] == [NodeSharing.mps]
    two = Snapshot(fleet(("t4", "n1", 1), ("t4", "n2", 1)), snap.workloads)
    assert {s.mode for s in plan(two, per_claim).slots} == {Mode.mps, Mode.timeslice}
    # equal shares: the shared model takes a whole GPU, the best-effort one time-slices
    assert {s.mode for s in plan(two).slots} == {Mode.gpu, Mode.timeslice}


def test_cost_prefers_cheaper_gpus() -> None:
    snap = Snapshot(fleet(("h100", "n1", 1), ("a100", "n2", 1)), (workload("m", 20000, 0.3),))
    p = plan(snap)
    assert p.slots[0].node == "n2" and p.usd_per_hour == pytest.approx(5.12)


def test_plan_is_deterministic_and_bounded_below() -> None:
    ws = tuple(workload(f"m{i}", 5000 + 3000 * i, 0.1 + 0.07 * i, 1 + i % 3) for i in range(8))
    snap = Snapshot(fleet(("a100", "n1", 4), ("h100", "n2", 4)), ws)
    a, b = plan(snap), plan(snap)
    assert a == b
    assert a.lower_bound.gpus <= a.gpus_used <= a.one_per_gpu.gpus
    assert a.lower_bound.usd_per_hour <= a.usd_per_hour + 1e-9
    assert not a.unplaced


def test_repack_is_a_diff_and_keeps_a_placement_that_saves_nothing() -> None:
    gpus = fleet(("a100", "n1", 2))
    w = (workload("m", 10000, 0.3, 2),)
    first = plan(Snapshot(gpus, w))
    assert Counter(m.action for m in first.moves) == {"add": 2}
    again = plan(Snapshot(gpus, w, current=first.slots))
    assert Counter(m.action for m in again.moves) == {"keep": 2}
    # a wasteful current placement (two GPUs) is repacked onto one: moves are a diff
    wasteful = (
        Slot("m", 0, "n1", gpus[0].uuid, Mode.gpu, 1.0),
        Slot("m", 1, "n1", gpus[1].uuid, Mode.gpu, 1.0),
    )
    better = plan(Snapshot(gpus, w, current=wasteful))
    assert better.usd_per_hour < better.current_usd_per_hour == pytest.approx(10.24)
    assert Counter(m.action for m in better.moves) == {"remove": 2, "add": 2}


def test_unknown_score_plugin_in_policy_fails() -> None:
    with pytest.raises(ValueError, match="unknown score plugin"):
        plan(Snapshot(fleet(("t4", "n", 1)), ()), Policy(weights=(("Nope", 1),)))


def _ffd(sizes: list[int], cap: int = 1000) -> int:
    bins: list[int] = []
    for s in sorted(sizes, reverse=True):
        for i, b in enumerate(bins):
            if b + s <= cap:
                bins[i] += s
                break
        else:
            bins.append(s)
    return len(bins)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=1000), max_size=40))
def test_l2_bound_lies_between_the_trivial_bound_and_ffd(sizes: list[int]) -> None:
    lb = l2_bound(sizes)
    assert math.ceil(sum(sizes) / 1000) <= lb <= _ffd(sizes)


def test_l2_bound_examples() -> None:
    assert l2_bound([810, 810, 160]) == 2  # 0.81 items need a bin each
    assert l2_bound([600] * 3 + [400] * 3) == 3
    assert l2_bound([510] * 4) == 4  # L1 would say 3


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1000, 40000), st.integers(5, 95), st.integers(1, 3)),
        min_size=1,
        max_size=8,
    )
)
def test_plan_never_beats_its_lower_bound(items: list[tuple[int, int, int]]) -> None:
    ws = tuple(workload(f"m{i}", mem, c / 100, r) for i, (mem, c, r) in enumerate(items))
    snap = Snapshot(fleet(("a100", "n1", 8), ("a100", "n2", 8), ("a100", "n3", 8)), ws)
    p = plan(snap)
    placed = len(p.slots)
    assert placed + len(p.unplaced) == sum(w.replicas for w in ws)
    if not p.unplaced:
        assert p.gpus_used >= lower_bound(snap).gpus
    for g in p.gpus:  # capacity respected on every GPU
        slots = [s for s in p.slots if s.gpu_uuid == g.uuid]
        assert sum(s.share for s in slots) <= 1.0 + 1e-9
