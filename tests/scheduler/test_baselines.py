"""The comparison packers of `bench pack`: first-fit / best-fit and FGD, with node CPU/memory."""

from __future__ import annotations

from dataclasses import replace

from scheduler.baselines import HostFleet, pack_baseline
from scheduler.fgd import _Frag, pack_fgd, target_classes
from scheduler.model import NodeSnapshot, Snapshot, Workload
from tests.scheduler.builders import fleet, workload


def _frac(milli: int, cpu: int = 0) -> Workload:
    return replace(workload("p", 100, milli / 1000, scale_compute=False), cpu_milli=cpu, replicas=1)


def test_fragmentation_of_a_node_follows_the_paper() -> None:
    # classes: half a GPU (p=0.5) and a whole GPU (p=0.5); one node, GPUs free 1000 / 300
    frag = _Frag([(500, 1, 0.0, 0.0, 0.5), (1000, 1, 0.0, 0.0, 0.5)])
    import numpy as np

    f = frag(np.array([[1000.0, 300.0]]), np.array([1e9]), np.array([1e9]), np.array([0]))
    # half-GPU pods: 300 is stranded; whole-GPU pods: 300 is stranded -> 0.5x300 + 0.5x300
    assert f[0] == 300.0
    # a node without CPU for either class: everything free is fragment
    f = frag(np.array([[1000.0, 300.0]]), np.array([-1.0]), np.array([1e9]), np.array([0]))
    assert f[0] == 1300.0


def test_fgd_fills_the_half_used_gpu_first_fit_opens_in_index_order() -> None:
    gpus = fleet(("t4", "n1", 1), ("t4", "n2", 1))
    snap = Snapshot(gpus, ())
    # n1's GPU gets 0.5; then 0.5 more: first-fit puts it on n1 too, so do both. Then 0.6:
    # n2. Then a 0.4: first-fit -> n2 (first with room is n2: n1 is full), FGD -> n2.
    order = [_frac(500), _frac(500), _frac(600), _frac(400)]
    ff = pack_baseline(snap, order, best=False)
    fgd = pack_fgd(snap, order)
    assert ff.placed == fgd.placed == 4 and ff.gpus_used == fgd.gpus_used == 2
    assert fgd.gpu_share_placed == 2.0


def test_fgd_avoids_the_gpu_that_strands_share() -> None:
    # mostly 0.7-GPU pods: after a 0.2 pod on GPU A, a 0.3 pod on A would leave 0.5, which no
    # 0.7 pod can use; FGD puts it on B (leaving 0.7), first-fit on A. Then only FGD fits
    # both 0.7 pods (A: 0.8 free, B: 0.7 free).
    gpus = fleet(("t4", "n1", 1), ("t4", "n2", 1))
    snap = Snapshot(gpus, ())
    order = [_frac(200), _frac(300)] + [_frac(700)] * 4
    assert [c[0] for c in target_classes(order)] == [200, 300, 700]
    ff = pack_baseline(snap, order, best=False)
    fgd = pack_fgd(snap, order)
    assert ff.placed == 3 and fgd.placed == 4
    assert fgd.gpu_share_placed == 1.9 > ff.gpu_share_placed == 1.2


def test_node_cpu_is_enforced_by_the_baselines() -> None:
    gpus = fleet(("t4", "n1", 2))
    nodes = (NodeSnapshot("n1", cpu_milli=5000, mem_mib=1e9),)
    snap = Snapshot(gpus, (), nodes)
    order = [_frac(300, cpu=2000)] * 4
    for res in (
        pack_baseline(snap, order, best=False),
        pack_baseline(snap, order, best=True),
        pack_fgd(snap, order),
    ):
        assert res.placed == 2 and res.unplaced == 2
        assert res.gpu_share_placed == 0.6
    assert HostFleet(snap).cpu_free.tolist() == [5000.0]
