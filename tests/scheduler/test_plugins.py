"""Scorer cores, the framework's range check, the strategy table and the filters."""

from __future__ import annotations

import pytest

from scheduler.framework import Framework, GpuUse, Request, ScoreRangeError
from scheduler.model import Insufficient, Mode, NodeSharing, Workload
from scheduler.plugins.efficiency import efficiency_score
from scheduler.plugins.filters import FitFilter, GpuTypeFilter, NodeSharingFilter
from scheduler.plugins.isolation_match import isolation_match_score
from scheduler.plugins.most_allocated import most_allocated_score
from scheduler.plugins.price import price_score
from scheduler.plugins.stability import stability_score
from scheduler.strategies import MigSlice, MpsShare, TimeSlice, WholeGpu, strategy_table
from tests.scheduler.builders import workload


@pytest.mark.parametrize(
    ("requested", "used", "capacity", "want"),
    [
        (1000, 2000, 4000, 75),  # (2000+1000)/4000*100 = 75
        (3, 3, 7, 86),  # 6/7*100 = 85.7 -> 86
        (0, 0, 1000, 0),
        (600, 600, 1000, 100),  # 120 clipped to 100
        (1, 0, 0, 0),  # no capacity
    ],
    ids=["k8s-example", "mig-slices", "empty", "over-clipped", "zero-capacity"],
)
def test_most_allocated_score(requested: float, used: float, capacity: float, want: int) -> None:
    assert most_allocated_score(requested, used, capacity) == want


@pytest.mark.parametrize(
    ("marginal", "max_usd", "want"),
    [(0.0, 9.8, 100), (9.8, 9.8, 0), (5.12, 9.8, 48), (2.0, 0.0, 100)],
    ids=["already-paid", "dearest", "a100-vs-h100", "free-fleet"],  # 100*(1-5.12/9.8)=47.8
)
def test_price_score(marginal: float, max_usd: float, want: int) -> None:
    assert price_score(marginal, max_usd) == want


@pytest.mark.parametrize(
    ("needed", "held", "want"),
    [(0.3, 3 / 7, 70), (0.25, 0.25, 100), (0.1, 1.0, 10), (0.5, 0.0, 0)],
    ids=["0.3-in-3g", "exact-mps", "small-on-whole", "nothing-held"],  # 0.3/(3/7)=0.7
)
def test_efficiency_score(needed: float, held: float, want: int) -> None:
    assert efficiency_score(needed, held) == want


@pytest.mark.parametrize(
    ("natural", "mode", "interactive", "want"),
    [
        (Mode.mig, Mode.mig, True, 100),
        (Mode.mps, Mode.mig, True, 50),
        (Mode.timeslice, Mode.timeslice, True, 0),  # interactive avoids time-slicing
        (Mode.timeslice, Mode.timeslice, False, 100),
        (Mode.mig, Mode.mps, False, 0),
    ],
    ids=["natural", "stronger", "interactive-slicing", "batch-slicing", "weaker"],
)
def test_isolation_match_score(natural: Mode, mode: Mode, interactive: bool, want: int) -> None:
    assert isolation_match_score(natural, mode, interactive) == want


def test_stability_score() -> None:
    assert (stability_score(True), stability_score(False)) == (100, 0)


def _use(**kw: object) -> GpuUse:
    base: dict[str, object] = dict(
        pos=0,
        uuid="GPU-0",
        node="n",
        gpu_type="A100-80GB",
        usd_per_hour=5.12,
        mem_capacity_mib=81920.0,
        mode=None,
        node_sharing=None,
    )
    base.update(kw)
    return GpuUse(**base)  # type: ignore[arg-type]


class _Bad:
    name = "Bad"

    def score(self, w: Workload, req: Request, gpu: GpuUse) -> int:
        return 101


class _Fifty:
    name = "Fifty"

    def score(self, w: Workload, req: Request, gpu: GpuUse) -> int:
        return 50


def test_framework_checks_the_score_range_and_applies_weights() -> None:
    w = workload("m", 1000, 0.1)
    req = Request(Mode.mps, 100, 1000, 0.1)
    assert Framework([], [(_Fifty(), 3)]).run_scores(w, req, _use()) == 150
    with pytest.raises(ScoreRangeError, match="Bad returned 101"):
        Framework([], [(_Bad(), 1)]).run_scores(w, req, _use())
    with pytest.raises(ValueError, match="weights"):
        Framework([], [(_Fifty(), -1)])


def test_strategy_table_fails_at_construction_for_an_unknown_mode() -> None:
    table = strategy_table(["mig", "mps"])
    assert set(table) == {Mode.mig, Mode.mps}
    with pytest.raises(ValueError, match="unknown sharing mode 'vgpu'"):
        strategy_table(["mig", "vgpu"])


def test_strategies_requests() -> None:
    small = workload("s", 9000, 0.14, iso="strict")
    assert MigSlice().request(small, "A100-80GB") == Request(Mode.mig, 143, 9856.0, 1 / 7, "1g")
    assert MpsShare().request(small, "A100-80GB") is None  # strict: no MPS
    shared = workload("m", 30000, 0.35)
    req = MpsShare().request(shared, "A100-80GB")
    assert req is not None and (req.compute_milli, req.share) == (350, 0.35)
    assert TimeSlice().request(shared, "A100-80GB") is None  # shared: no time-slicing
    assert MigSlice().request(shared, "T4") is None  # T4 has no MIG
    assert WholeGpu().request(workload("big", 70000, 1.0), "A100-80GB") is not None
    assert WholeGpu().request(shared, "A100-80GB") is None
    strict_t4 = WholeGpu().request(workload("x", 1000, 0.1, iso="strict"), "T4")
    assert strict_t4 is not None and strict_t4.share == 1.0


def test_filters_return_structured_reasons() -> None:
    w = workload("m", 50000, 0.5, gpu_types=("H100-80GB",))
    req = Request(Mode.mps, 500, 50000, 0.5)
    (r,) = GpuTypeFilter().filter(w, req, _use()) or []
    assert r.resource == "gpu_type"
    assert NodeSharingFilter().filter(w, req, _use(node_sharing=NodeSharing.timeslice)) == [
        Insufficient("node_sharing", "node n shares by timeslice, mps needs mps")
    ]
    full = _use(mode=Mode.mps, compute_used=600, mem_used_mib=40000.0, clients=48)
    reasons = FitFilter().filter(w, req, full) or []
    assert {(r.resource, r.requested, r.used, r.capacity) for r in reasons} == {
        ("compute", 500, 600, 1000),
        ("memory", 50000, 40000.0, 81920.0),
        ("clients", 1, 48, 48),
    }
    mig_req = Request(Mode.mig, 571, 40192, 4 / 7, "4g")
    (m,) = FitFilter().filter(w, mig_req, _use(mode=Mode.mig, profiles=("4g",))) or []
    assert (m.resource, m.requested, m.used, m.capacity) == ("mig_slices", 4, 4, 7)
