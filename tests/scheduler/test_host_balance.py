"""HostBalance and NodePack: whole-GPU replicas do not strand GPUs by exhausting node CPU."""

from __future__ import annotations

import math
from dataclasses import replace

from scheduler.model import NodeSnapshot, Snapshot
from scheduler.planner import plan
from scheduler.plugins.host_balance import host_balance_score
from scheduler.policy import DEFAULT_WEIGHTS, Policy
from tests.scheduler.builders import fleet, workload

NEW_SCORES = ("HostBalance", "NodePack")
OLD = Policy(weights=tuple((n, w) for n, w in DEFAULT_WEIGHTS if n not in NEW_SCORES))


def _snap() -> Snapshot:
    # n1: 2 GPUs, 16 cores; n2: 2 GPUs, 48 cores. Two whole-GPU replicas of 12 cores ("a-heavy",
    # placed first) and two of 6 cores: all four fit only if the heavy ones go to n2.
    heavy = replace(workload("a-heavy", 4000, 1.0, 2), cpu_milli=12_000)
    light = replace(workload("b-light", 4000, 1.0, 2), cpu_milli=6_000)
    nodes = (NodeSnapshot("n1", cpu_milli=16_000), NodeSnapshot("n2", cpu_milli=48_000))
    return Snapshot(fleet(("t4", "n1", 2), ("t4", "n2", 2)), (heavy, light), nodes)


def test_cpu_heavy_replicas_go_where_cpu_is_plentiful_and_nothing_is_stranded() -> None:
    p = plan(_snap())
    assert not p.unplaced and p.gpus_used == 4
    assert {s.node for s in p.slots if s.model == "a-heavy"} == {"n2"}
    assert {s.node for s in p.slots if s.model == "b-light"} == {"n1"}


def test_without_the_new_scores_a_heavy_replica_strands_a_gpu() -> None:
    # the old order: the first heavy replica takes n1 (first in the fleet), leaving 4 cores
    # beside n1's other GPU, which no remaining replica can use
    p = plan(_snap(), OLD)
    assert len(p.unplaced) == 1 and p.gpus_used == 3


def test_host_balance_score() -> None:
    assert host_balance_score(12_000, 1.0, 16_000, 2.0) == 67  # 8 cores per free GPU < 12
    assert host_balance_score(6_000, 1.0, 16_000, 2.0) == 100
    assert host_balance_score(0, 1.0, 0, 2.0) == 100  # nothing asked
    assert host_balance_score(4_000, 0.5, math.inf, 1.0) == 100  # unknown allocatable
    assert host_balance_score(4_000, 0.5, 8_000, 0.0) == 0
