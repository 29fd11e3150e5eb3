"""Attribution arithmetic, policies, and the conservation invariant."""

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.attribution import attribute, round_to_cents
from billing.config import AttributionWeights
from billing.models import IDLE, UNALLOCATED, UNPRICED
from billing.windows import Window
from tests.utils.factories import PRICES, T0, Fleet, GpuSpec, allocations, usage

HOUR = timedelta(hours=1)
W2 = Window(T0, T0 + 2 * HOUR)
EMPTY_PROC = pd.DataFrame(columns=["ts", "gpu_uuid", "model", "sm_util", "interval_s"])


def two_gpu_case(policy: str = "utilization"):  # type: ignore[no-untyped-def]
    fleet = Fleet(
        gpus=[GpuSpec("g0", seconds=7200), GpuSpec("g1", seconds=7200)],
        processes=[("llama", "g0", 20.0)],
    )
    alloc = allocations(
        [
            ("llama", "g0", 3 / 7, T0, None),  # 3g slice of a 7-slice A100
            ("mistral", "g0", 4 / 7, T0 + timedelta(minutes=30), None),  # 4g from 00:30
        ]
    )
    use = usage(1000, seconds=7200)
    return attribute(
        samples=fleet.samples(),
        processes=fleet.process_frame(),
        allocations=alloc,
        usage=use,
        prices=PRICES,
        window=W2,
        weights=AttributionWeights(),
        idle_policy=policy,  # type: ignore[arg-type]
    ), use


def test_arithmetic_of_one_hour() -> None:
    result, _ = two_gpu_case()
    h0 = result.rows[result.rows["hour"] == pd.Timestamp(T0)]
    by = h0.groupby(["kind", "model"])["gpu_seconds"].sum()
    # llama holds 3/7 of g0 for 3600 s = 1542.857 GPU-s; busy = 20% x 3600 / 1542.857 = 0.4667
    assert by[("attributed", "llama")] == pytest.approx(720.0)  # 0.2 x 3600
    assert by[("idle", "llama")] == pytest.approx(3600 * 3 / 7 - 720)
    # mistral: 4/7 x 1800 s, no process samples -> billed in full
    assert by[("attributed", "mistral")] == pytest.approx(1800 * 4 / 7)
    # 7200 metered - 1542.857 - 1028.571 = 4628.571 unallocated
    assert by[("unallocated", UNALLOCATED)] == pytest.approx(7200 - 3600 * 3 / 7 - 1800 * 4 / 7)
    # 2 GPUs x 5.12 USD/h = 10.24 USD = 1024 cents
    assert int(h0["cost_cents"].sum()) == 1024
    assert result.hours["metered_cost_cents"].tolist() == [1024, 1024]


def test_allocation_policy_bills_everything_served() -> None:
    result, _ = two_gpu_case("allocation")
    h0 = result.rows[result.rows["hour"] == pd.Timestamp(T0)]
    assert "llama" not in set(h0[h0["kind"] == "idle"]["model"])
    llama = h0[(h0["kind"] == "attributed") & (h0["model"] == "llama")]
    assert llama["gpu_cost_usd"].sum() == pytest.approx(5.12 * 3 / 7)


def test_tokens_and_requests_are_never_dropped() -> None:
    result, use = two_gpu_case()
    att = result.rows[result.rows["kind"] == "attributed"]
    assert int(att["requests"].sum()) == len(use) == 1000
    assert int(att["input_tokens"].sum()) == int(use["input_tokens"].sum())
    assert int(att["output_tokens"].sum()) == int(use["output_tokens"].sum())


def test_split_is_token_weighted_with_output_heavier() -> None:
    fleet = Fleet(gpus=[GpuSpec("g0")])
    alloc = allocations([("m", "g0", 1.0, T0, None)])
    use = pd.DataFrame(
        {
            "ts": [pd.Timestamp(T0) + pd.Timedelta(minutes=1)] * 2,
            "model": ["m", "m"],
            "customer": ["a", "b"],
            "request_type": ["chat", "chat"],
            "input_tokens": [1000, 0],
            "output_tokens": [0, 250],
        }
    )
    r = attribute(
        samples=fleet.samples(),
        processes=EMPTY_PROC,
        allocations=alloc,
        usage=use,
        prices=PRICES,
        window=Window(T0, T0 + HOUR),
        weights=AttributionWeights(),
    )
    att = r.rows[r.rows["kind"] == "attributed"].set_index("customer")
    # weights 1 x 1000 input vs 4 x 250 output -> equal halves of 5.12 USD
    assert att.loc["a", "cost_cents"] == 256
    assert att.loc["b", "cost_cents"] == 256


def test_model_without_requests_is_all_idle() -> None:
    fleet = Fleet(gpus=[GpuSpec("g0")])
    alloc = allocations([("quiet", "g0", 0.5, T0, None), ("busy", "g0", 0.5, T0, None)])
    use = usage(10, models=("busy",))
    r = attribute(
        samples=fleet.samples(),
        processes=EMPTY_PROC,
        allocations=alloc,
        usage=use,
        prices=PRICES,
        window=Window(T0, T0 + HOUR),
        weights=AttributionWeights(),
    )
    idle = r.rows[(r.rows["kind"] == "idle") & (r.rows["model"] == "quiet")]
    assert idle["customer"].tolist() == [IDLE]
    assert int(idle["cost_cents"].sum()) == 256  # half of 5.12 USD


def test_oversubscribed_gpu_is_capped_at_metered() -> None:
    fleet = Fleet(gpus=[GpuSpec("g0")])
    # three time-slice replicas each claiming half the GPU: 1.5x what exists
    alloc = allocations([(m, "g0", 0.5, T0, None) for m in ("a", "b", "c")])
    use = usage(300, models=("a", "b", "c"))
    r = attribute(
        samples=fleet.samples(),
        processes=EMPTY_PROC,
        allocations=alloc,
        usage=use,
        prices=PRICES,
        window=Window(T0, T0 + HOUR),
        weights=AttributionWeights(),
    )
    assert r.rows["gpu_seconds"].sum() == pytest.approx(3600.0)
    assert int(r.rows["cost_cents"].sum()) == 512
    assert UNALLOCATED not in set(r.rows[r.rows["cost_cents"] > 0]["model"])


def test_unpriced_gpu_is_its_own_row_and_the_others_are_priced() -> None:
    """A GPU type with no price: its time is __unpriced__ (seconds, 0 cents), never a halt."""
    fleet = Fleet(gpus=[GpuSpec("g0", gpu_type="B200"), GpuSpec("g1")])
    alloc = allocations([("m", "g0", 1.0, T0, None), ("m", "g1", 0.5, T0, None)])
    r = attribute(
        samples=fleet.samples(),
        processes=EMPTY_PROC,
        allocations=alloc,
        usage=usage(10, models=("m",)),
        prices=PRICES,
        window=Window(T0, T0 + HOUR),
        weights=AttributionWeights(),
    )
    by = r.rows.set_index(["kind", "model"])
    assert by.loc[("unpriced", UNPRICED), "gpu_seconds"] == pytest.approx(3600.0)
    assert by.loc[("unpriced", UNPRICED), "cost_cents"] == 0
    # g1 priced as usual: half held by m (256 cents), half unallocated (256 cents)
    assert by.loc[("unallocated", UNALLOCATED), "cost_cents"] == 256
    assert r.rows[r.rows["kind"] == "attributed"]["cost_cents"].sum() == 256
    assert r.hours["metered_cost_cents"].tolist() == [512]
    assert r.hours["metered_gpu_seconds"].tolist() == [pytest.approx(7200.0)]
    assert r.rows["gpu_seconds"].sum() == pytest.approx(7200.0)
    assert r.unpriced[["gpu_type", "pricing_class"]].values.tolist() == [["B200", "on-demand"]]


@pytest.mark.parametrize(
    ("exact", "total", "expected"),
    [
        ([0.3333, 0.3333, 0.3334], 100, [33, 33, 34]),  # 33.33+33.33+33.34 cents -> 1 USD
        ([0.005, 0.005], 1, [1, 0]),  # 0.5 + 0.5 cents: one row gets the cent (row order)
        ([1.0, 2.0], 300, [100, 200]),
        ([0.0149, 0.0149, 0.0149], 4, [2, 1, 1]),  # 1.49 x 3 = 4.47 -> 4 cents
    ],
)
def test_round_to_cents_largest_remainder(exact: list[float], total: int, expected: list[int]):
    s = pd.Series(exact)
    g = pd.Series(["h"] * len(exact))
    assert round_to_cents(s, g, pd.Series({"h": total})).tolist() == expected


@settings(max_examples=30, deadline=None)
@given(
    n_gpus=st.integers(1, 4),
    fractions=st.lists(
        st.sampled_from([1 / 7, 2 / 7, 3 / 7, 4 / 7, 1.0, 0.25, 0.5]), min_size=0, max_size=6
    ),
    util=st.floats(0, 100),
    n_events=st.integers(0, 400),
    seed=st.integers(0, 10_000),
    policy=st.sampled_from(["utilization", "allocation"]),
    start_min=st.integers(0, 150),
)
def test_conservation_property(n_gpus, fractions, util, n_events, seed, policy, start_min):  # type: ignore[no-untyped-def]
    """Σ attributed + idle + unallocated cents = metered cents, per hour and in total."""
    rng = np.random.default_rng(seed)
    gpus = [
        GpuSpec(
            f"g{i}",
            gpu_type="A100-80GB",
            seconds=float(rng.integers(600, 3 * 3600)),
            pricing_class=str(rng.choice(["on-demand", "spot"])),
            interval_s=float(rng.choice([5.0, 7.5, 10.0])),
        )
        for i in range(n_gpus)
    ]
    models = ["m0", "m1", "m2"]
    alloc = allocations(
        [
            (
                models[i % 3],
                f"g{i % n_gpus}",
                f,
                T0 + timedelta(minutes=start_min * (i % 2)),
                None if i % 3 else T0 + timedelta(minutes=100),
            )
            for i, f in enumerate(fractions)
        ]
    )
    fleet = Fleet(gpus=gpus, processes=[(m, "g0", util) for m in models[:2]])
    use = usage(n_events, seed=seed, seconds=3 * 3600, models=models)
    window = Window(T0, T0 + 3 * HOUR)
    r = attribute(
        samples=fleet.samples(),
        processes=fleet.process_frame(),
        allocations=alloc,
        usage=use,
        prices=PRICES,
        window=window,
        weights=AttributionWeights(),
        idle_policy=policy,
    )
    per_hour = r.rows.groupby("hour")["cost_cents"].sum()
    metered = r.hours.set_index("hour")["metered_cost_cents"]
    assert per_hour.reindex(metered.index, fill_value=0).tolist() == metered.tolist()
    for keys in (["model"], ["customer"], ["model", "customer", "request_type"], ["kind"]):
        assert int(r.rows.groupby(keys)["cost_cents"].sum().sum()) == int(metered.sum())
    exact = r.hours["metered_cost_usd"].sum()
    assert abs(int(metered.sum()) / 100 - exact) <= 0.005 * len(r.hours) + 1e-9
    assert int(r.rows["requests"].sum()) == n_events
    assert (r.rows["gpu_seconds"] >= -1e-9).all()


def test_unknown_utilisation_is_billed_not_idled() -> None:
    """NULL sm_util (a pre-Hopper MIG instance) means unknown: billed like no process samples."""
    fleet = Fleet(gpus=[GpuSpec("g0"), GpuSpec("g1")])
    alloc = allocations([("m", "g0", 3 / 7, T0, None), ("m", "g1", 1.0, T0, None)])
    proc = pd.concat(
        [
            Fleet(gpus=[GpuSpec("g0")], processes=[("m", "g0", 0.0)])
            .process_frame()
            .assign(sm_util=np.nan),
            Fleet(gpus=[GpuSpec("g1")], processes=[("m", "g1", 25.0)]).process_frame(),
        ],
        ignore_index=True,
    )
    r = attribute(
        samples=fleet.samples(),
        processes=proc,
        allocations=alloc,
        usage=usage(50, models=("m",)),
        prices=PRICES,
        window=Window(T0, T0 + HOUR),
        weights=AttributionWeights(),
    )
    by = r.rows.groupby("kind")["gpu_seconds"].sum()
    # g0 slice: unknown -> 3/7 x 3600 billed in full; g1: 25% busy -> 900 s billed, 2700 idle
    assert by["attributed"] == pytest.approx(3600 * 3 / 7 + 900)
    assert by["idle"] == pytest.approx(2700)
    assert by["unallocated"] == pytest.approx(3600 * 4 / 7)


def test_partial_hour_keeps_the_allocation_fraction() -> None:
    """An open allocation in the current hour holds its fraction of the metered time only."""
    fleet = Fleet(gpus=[GpuSpec("g0", seconds=60)])  # the GPU has been metered for 60 s
    alloc = allocations([("m", "g0", 0.7, T0, None)])
    r = attribute(
        samples=fleet.samples(),
        processes=EMPTY_PROC,
        allocations=alloc,
        usage=usage(5, models=("m",), seconds=60),
        prices=PRICES,
        window=Window(T0, T0 + HOUR),
        weights=AttributionWeights(),
    )
    by = r.rows.groupby("kind")["gpu_seconds"].sum()
    # 0.7 x 60 s held by m, 0.3 x 60 s unallocated (not 60 s stretched over a whole hour)
    assert by["attributed"] == pytest.approx(42.0)
    assert by["unallocated"] == pytest.approx(18.0)
