"""The pure DCGM conversion on hand-made query_range results (no server)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from billing.schemas import AllocationIn
from scheduler.dcgm.convert import (
    FB_FREE,
    FB_USED,
    GPU_UTIL,
    GR_ACTIVE,
    POWER,
    Options,
    convert,
    holder_of,
    mig_device_id,
)
from scheduler.dcgm.gputypes import gpu_type_of, mig_fraction
from scheduler.promclient import Series

T0 = datetime(2026, 11, 23, 10, tzinfo=UTC)
STEP = 10
OPTS = Options(step_s=STEP)
H100 = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
A100 = "GPU-bbbbbbbb-0000-0000-0000-000000000000"


def lbl(uuid: str, gi: int | None = None, profile: str = "", pod: str = "", **extra: str) -> dict:
    out = {
        "gpu": "0" if uuid == H100 else "1",
        "UUID": uuid,
        "device": "nvidia0",
        "modelName": "NVIDIA H100 80GB HBM3" if uuid == H100 else "NVIDIA A100-SXM4-80GB",
        "Hostname": "node-a",
        "DCGM_FI_DRIVER_VERSION": "550.54.15",
        "instance": "10.0.0.5:9400",
        "job": "dcgm",
    }
    if gi is not None:
        out |= {"GPU_I_ID": str(gi), "GPU_I_PROFILE": profile}
    if pod:
        out |= {"namespace": "ml", "pod": pod, "container": "main"}
    return out | extra


def at(i: int) -> float:
    return (T0 + timedelta(seconds=i * STEP)).timestamp()


def series(labels: dict, steps: Sequence[int], value: float) -> Series:
    return Series(labels, tuple((at(i), value) for i in steps))


def results(**by_metric: list[Series]) -> dict[str, list[Series]]:
    names = {"gr": GR_ACTIVE, "util": GPU_UTIL, "used": FB_USED, "free": FB_FREE, "power": POWER}
    return {names[k]: v for k, v in by_metric.items()}


MODELS = {("ml", "llama-0"): "llama-3-70b", ("ml", "mistral-0"): "mistral-7b"}


def run(
    res: Mapping[str, list[Series]],
    steps: int = 6,
    known: Sequence[AllocationIn] = (),
    models: Mapping[tuple[str, str], str | None] = MODELS,
    opts: Options = OPTS,
    first: int = 0,
):
    return convert(
        res,
        start=T0 + timedelta(seconds=first * STEP),
        end=T0 + timedelta(seconds=(first + steps) * STEP),
        opts=opts,
        models=models,
        known=known,
    )


def test_whole_gpu_samples_use_gr_engine_active_else_gpu_util() -> None:
    res = results(
        gr=[series(lbl(H100, pod="llama-0"), range(3), 0.734)],
        util=[series(lbl(H100, pod="llama-0"), range(6), 55)],
        used=[series(lbl(H100, pod="llama-0"), range(6), 20000)],
        free=[series(lbl(H100, pod="llama-0"), range(6), 61920)],
        power=[series(lbl(H100, pod="llama-0"), range(6), 312.5)],
    )
    out = run(res)
    assert [s.ts for s in out.samples] == [T0 + timedelta(seconds=10 * i) for i in range(6)]
    # GR_ENGINE_ACTIVE 0.734 x 100 while exported, then GPU_UTIL's 55 %
    assert [s.sm_util for s in out.samples] == pytest.approx([73.4] * 3 + [55.0] * 3)
    s = out.samples[0]
    assert (s.gpu_uuid, s.parent_uuid, s.gpu_type, s.node) == (H100, None, "H100-80GB", "node-a")
    assert (s.mem_used_mib, s.mem_total_mib, s.power_w, s.interval_s) == (
        20000,
        81920,
        312.5,
        STEP,
    )
    # one open holding of the whole GPU, fraction 1
    (a,) = out.allocations
    assert (a.device_uuid, a.gpu_uuid, a.model, a.mode, a.fraction) == (
        H100,
        H100,
        "llama-3-70b",
        "gpu",
        1.0,
    )
    assert (a.start, a.end, a.source, a.observer) == (T0, None, "observed", "dcgm")
    # pod-level utilisation rows: pid 0, % of the whole GPU
    assert [p.sm_util for p in out.processes] == pytest.approx([73.4] * 3 + [55.0] * 3)
    assert {(p.pid, p.model, p.pod) for p in out.processes} == {(0, "llama-3-70b", "llama-0")}


def test_mig_instances_get_own_rows_and_the_parent_is_made_from_them() -> None:
    g1 = lbl(A100, 1, "3g.40gb", pod="llama-0")
    g2 = lbl(A100, 2, "4g.40gb", pod="mistral-0")
    res = results(
        gr=[series(g1, range(2), 0.3), series(g2, range(2), 0.6)],
        used=[series(g1, range(2), 1000), series(g2, range(2), 3000)],
        free=[series(g1, range(2), 39192), series(g2, range(2), 37192)],
        power=[series(g1, range(2), 250.0), series(g2, range(2), 250.0)],
    )
    out = run(res, steps=2)
    by = {(s.gpu_uuid, s.ts): s for s in out.samples}
    mig1, mig2 = mig_device_id(A100, 1), mig_device_id(A100, 2)
    assert mig1 == f"MIG-{A100}/gi1"
    assert len(out.samples) == 6  # 2 instances + the parent, 2 steps
    i1 = by[(mig1, T0)]
    assert (i1.parent_uuid, i1.mig_profile, i1.sm_util, i1.mem_total_mib, i1.power_w) == (
        A100,
        "3g.40gb",
        pytest.approx(30.0),
        40192,
        None,
    )
    parent = by[(A100, T0)]
    # 30 % x 3/7 + 60 % x 4/7 = 12.857 + 34.286
    assert parent.sm_util == pytest.approx(30 * 3 / 7 + 60 * 4 / 7)
    assert (parent.parent_uuid, parent.mig_profile, parent.gpu_type) == (None, None, "A100-80GB")
    assert (parent.mem_used_mib, parent.mem_total_mib, parent.power_w) == (4000, 81920, 250.0)
    fractions = {a.device_uuid: (a.mode, a.profile, a.fraction) for a in out.allocations}
    assert fractions == {
        mig1: ("mig", "3g.40gb", pytest.approx(3 / 7)),
        mig2: ("mig", "4g.40gb", pytest.approx(4 / 7)),
    }
    assert {a.gpu_uuid for a in out.allocations} == {A100}
    # process rows: instance util x slice fraction = % of the whole GPU
    procs = {(p.device_uuid, p.ts): p.sm_util for p in out.processes}
    assert procs[(mig2, T0)] == pytest.approx(60 * 4 / 7)


def test_a_holding_is_a_run_of_consecutive_steps_with_one_pod() -> None:
    # llama-0 at steps 0-2, mistral-0 at 3-4, nobody at 5, llama-0 again at 6-7 (gap at 8), 9
    res = results(
        used=[
            series(lbl(H100, pod="llama-0"), [0, 1, 2, 6, 7, 9], 100),
            series(lbl(H100, pod="mistral-0"), [3, 4], 100),
            series(lbl(H100), [5], 100),
        ]
    )
    out = run(res, steps=10)
    got = [(a.pod, a.start, a.end) for a in out.allocations]
    t = lambda i: T0 + timedelta(seconds=i * STEP)  # noqa: E731
    assert got == [
        ("llama-0", t(0), t(3)),
        ("mistral-0", t(3), t(5)),
        ("llama-0", t(6), t(8)),
        ("llama-0", t(9), None),  # reaches the range's last step: still open
    ]
    assert len(out.samples) == 9  # 10 steps, no reading at step 8: not metered there


def test_two_pods_on_one_gpu_share_it_and_the_share_changes_split_holdings() -> None:
    res = results(
        used=[
            series(lbl(H100, pod="llama-0"), range(4), 100),
            series(lbl(H100, pod="mistral-0"), [2, 3], 100),
        ]
    )
    out = run(res, steps=4)
    t = lambda i: T0 + timedelta(seconds=i * STEP)  # noqa: E731
    got = sorted((a.pod, a.start, a.end, a.mode, a.fraction) for a in out.allocations)
    assert got == [
        ("llama-0", t(0), t(2), "gpu", 1.0),
        ("llama-0", t(2), None, "timeslice", 0.5),
        ("mistral-0", t(2), None, "timeslice", 0.5),
    ]
    # shared steps have no pod-level utilisation row (unknown split)
    assert [p.ts for p in out.processes] == [t(0), t(1)]


def prior(pod: str, start: datetime, end: datetime | None = None) -> AllocationIn:
    return AllocationIn(
        device_uuid=H100,
        gpu_uuid=H100,
        node="node-a",
        namespace="ml",
        pod=pod,
        container="main",
        model=MODELS[("ml", pod)],
        mode="gpu",
        fraction=1.0,
        start=start,
        end=end,
        observer="dcgm",
    )


def test_runs_continue_stored_open_holdings_and_absent_ones_are_closed() -> None:
    earlier = T0 - timedelta(minutes=5)
    known = [prior("llama-0", earlier), prior("mistral-0", earlier)]
    res = results(used=[series(lbl(H100, pod="llama-0"), [0, 1], 100)])
    out = run(res, steps=2, known=known)
    got = sorted((a.pod, a.start, a.end) for a in out.allocations)
    # llama-0 goes on (same start, still open); mistral-0 is not on the GPU: ends at the start
    assert got == [("llama-0", earlier, None), ("mistral-0", earlier, T0)]


def test_a_repull_recomputes_its_own_holdings_instead_of_closing_them() -> None:
    res = results(used=[series(lbl(H100, pod="llama-0"), [1, 2], 100)])
    first = run(res, steps=3)
    again = run(res, steps=3, known=first.allocations)
    assert again.allocations == first.allocations


@pytest.mark.parametrize(
    ("labels", "mode", "want"),
    [
        ({"pod": "p", "namespace": "ns", "container": "c"}, "auto", ("ns", "p", "c")),
        (
            {"pod": "dcgm-x", "exported_pod": "p", "exported_namespace": "ns"},
            "auto",
            ("ns", "p", "-"),
        ),
        ({"pod": "dcgm-x", "namespace": "gpu-operator"}, "exported", None),
        ({"namespace": "ns"}, "auto", None),
    ],
    ids=["plain", "exported-wins", "exported-only", "no-pod"],
)
def test_holder_labels(labels: dict, mode: str, want: tuple | None) -> None:
    assert holder_of(labels, mode) == want  # type: ignore[arg-type]


def test_unresolved_pods_are_listed_and_not_allocated() -> None:
    res = results(used=[series(lbl(H100, pod="who-0"), [0], 100)])
    out = run(res, steps=1, models={("ml", "who-0"): None})
    assert (out.allocations, out.processes, out.unresolved) == ([], [], {("ml", "who-0")})
    assert len(out.samples) == 1  # still metered: its cost stays unallocated


def test_pricing_class_per_node_and_extra_gpu_types() -> None:
    opts = Options(
        step_s=STEP, gpu_types={"NVIDIA H100 80GB HBM3": "H100-X"}, pricing_class={"node-a": "spot"}
    )
    out = run(results(used=[series(lbl(H100), [0], 1)]), steps=1, opts=opts)
    assert (out.samples[0].gpu_type, out.samples[0].pricing_class) == ("H100-X", "spot")


def test_off_grid_range_is_refused() -> None:
    with pytest.raises(ValueError, match="grid"):
        convert(
            {},
            start=T0 + timedelta(seconds=3),
            end=T0 + timedelta(seconds=60),
            opts=OPTS,
            models={},
        )


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("NVIDIA H100 80GB HBM3", "H100-80GB"),
        ("NVIDIA H100 PCIe", "H100-80GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100 80GB PCIe", "A100-80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("NVIDIA A100-PCIE-40GB", "A100-40GB"),
        ("NVIDIA H200", "H200-141GB"),
        ("NVIDIA A30", "A30"),
        ("NVIDIA A10", "A10"),
        ("Tesla T4", "T4"),
        ("Tesla V100-SXM2-32GB", "V100M32"),
        ("NVIDIA L4", "NVIDIA L4"),  # unknown: unchanged (unpriced under its own name)
    ],
)
def test_model_names(name: str, want: str) -> None:
    assert gpu_type_of(name) == want


@pytest.mark.parametrize(
    ("gpu_type", "profile", "want"),
    [
        ("A100-80GB", "3g.40gb", 3 / 7),
        ("A100-40GB", "1g.5gb", 1 / 7),
        ("H100-80GB", "7g.80gb", 1.0),
        ("A30", "2g.12gb", 2 / 4),  # A30: 4 slices
        ("NVIDIA L40", "2g.24gb", 2 / 7),  # unknown type: <n>g over 7
        ("A100-80GB", "weird", None),
    ],
)
def test_mig_fraction(gpu_type: str, profile: str, want: float | None) -> None:
    assert mig_fraction(gpu_type, profile) == (pytest.approx(want) if want else None)
