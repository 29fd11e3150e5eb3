"""Node CPU and memory: the Fit filter, gangs, and the lower bound with them enforced."""

from __future__ import annotations

from dataclasses import replace

from scheduler.bounds import lower_bound
from scheduler.model import NodeSnapshot, Snapshot
from scheduler.planner import plan
from tests.scheduler.builders import fleet, workload


def _nodes(cpu: int, mem: float, *names: str) -> tuple[NodeSnapshot, ...]:
    return tuple(NodeSnapshot(n, cpu_milli=cpu, mem_mib=mem) for n in names)


def test_cpu_bound_node_sends_replicas_to_another_node() -> None:
    # 4 small MPS replicas fit one A100 by GPU, but n1 has CPU for only 2 of them
    w = replace(workload("m", 4000, 0.1, 4), cpu_milli=3000, host_mem_mib=1000)
    snap = Snapshot(
        fleet(("a100", "n1", 1), ("a100", "n2", 1)), (w,), _nodes(7000, 1e6, "n1", "n2")
    )
    p = plan(snap)
    assert not p.unplaced
    per_node = {n: sum(1 for s in p.slots if s.node == n) for n in ("n1", "n2")}
    assert per_node == {"n1": 2, "n2": 2}
    for n in ("n1", "n2"):
        assert 3000 * per_node[n] <= 7000


def test_host_memory_is_enforced_and_unplaced_says_why() -> None:
    w = replace(workload("m", 4000, 0.1, 3), host_mem_mib=10_000)
    snap = Snapshot(fleet(("a100", "n1", 2)), (w,), _nodes(64_000, 25_000, "n1"))
    p = plan(snap)
    assert len(p.slots) == 2 and len(p.unplaced) == 1
    assert p.unplaced[0].reasons  # no GPU on a node with 10 GB of host memory left


def test_gang_needs_its_cpu_on_one_node() -> None:
    gang = replace(workload("g", 60000, 1.0, 1, gpus=2), cpu_milli=10_000)
    gpus = fleet(("a100", "n1", 2), ("a100", "n2", 2))
    nodes = (NodeSnapshot("n1", cpu_milli=8_000), NodeSnapshot("n2", cpu_milli=16_000))
    p = plan(Snapshot(gpus, (gang,), nodes))
    assert {s.node for s in p.slots} == {"n2"} and len(p.slots) == 2


def test_unknown_allocatable_is_not_enforced() -> None:
    w = replace(workload("m", 4000, 0.1, 4), cpu_milli=10**9)
    p = plan(Snapshot(fleet(("a100", "n1", 1)), (w,)))
    assert len(p.slots) == 4 and not p.unplaced


def test_lower_bound_stays_below_the_plan_with_host_limits() -> None:
    ws = tuple(
        replace(workload(f"m{i}", 6000 + 1000 * i, 0.05 + 0.07 * i, 3), cpu_milli=1500 + 300 * i)
        for i in range(6)
    )
    gpus = fleet(("a100", "n1", 4), ("a100", "n2", 4), ("a100", "n3", 4))
    snap = Snapshot(gpus, ws, _nodes(20_000, 1e6, "n1", "n2", "n3"))
    p = plan(snap)
    assert not p.unplaced
    lb = lower_bound(snap)
    assert lb.gpus <= p.gpus_used and lb.usd_per_hour <= p.usd_per_hour + 1e-9
    for n in ("n1", "n2", "n3"):
        cpu = sum(w.cpu_milli for s in p.slots if s.node == n for w in ws if w.model == s.model)
        assert cpu <= 20_000
