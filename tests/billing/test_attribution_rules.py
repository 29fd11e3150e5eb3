"""The written attribution rules (billing.attribution docstring), one physical case each, and
a property test against a second-by-second oracle (tests/billing/oracle.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.attribution import attribute, half_up_cents
from billing.config import AttributionWeights
from billing.gputime import gpu_time
from billing.models import UNALLOCATED, UNPRICED
from billing.windows import Window
from tests.billing.oracle import expected
from tests.utils.factories import PRICES, T0

HOUR = timedelta(hours=1)
W1 = Window(T0, T0 + HOUR)


def at(seconds: float) -> pd.Timestamp:
    return pd.Timestamp(T0) + pd.Timedelta(seconds=seconds)


def samples(
    gpu: str,
    start: int,
    end: int,
    every: int,
    *,
    gpu_type: str = "A100-80GB",
    cls: str = "on-demand",
) -> pd.DataFrame:
    """Readings of ``gpu`` at start, start+every, ... < end, each standing for ``every`` s."""
    ts = [at(t) for t in range(start, end, every)]
    return pd.DataFrame(
        {"ts": ts, "gpu_uuid": gpu, "gpu_type": gpu_type, "pricing_class": cls, "interval_s": every}
    )


def procs(
    gpu: str, model: str, start: int, end: int, every: int, util: float | None, pid: int = 1
) -> pd.DataFrame:
    ts = [at(t) for t in range(start, end, every)]
    return pd.DataFrame(
        {
            "ts": pd.Series(ts, dtype="datetime64[ns, UTC]"),
            "gpu_uuid": gpu,
            "model": model,
            "sm_util": np.nan if util is None else util,
            "interval_s": float(every),
            "device_uuid": gpu,
            "pid": pid,
        }
    )


def allocs(rows: Sequence[tuple[str, str, float, int, int | None, str]]) -> pd.DataFrame:
    """(model, gpu, fraction, start s, end s or None, source)."""
    return pd.DataFrame(
        {
            "model": [r[0] for r in rows],
            "gpu_uuid": [r[1] for r in rows],
            "fraction": [r[2] for r in rows],
            "start": pd.Series([at(r[3]) for r in rows], dtype="datetime64[ns, UTC]"),
            "end": pd.Series(
                [pd.NaT if r[4] is None else at(r[4]) for r in rows], dtype="datetime64[ns, UTC]"
            ),
            "source": [r[5] for r in rows],
        }
    )


def requests(models: Sequence[str], n: int = 4, seconds: int = 3600) -> pd.DataFrame:
    """``n`` identical requests per model spread over the first ``seconds`` of the window."""
    rows = [(at(i * seconds // n), m, "acme", "chat", 100, 25) for m in models for i in range(n)]
    cols = ["ts", "model", "customer", "request_type", "input_tokens", "output_tokens"]
    return pd.DataFrame(rows, columns=cols)


NO_PROC = procs("g0", "x", 0, 0, 1, None)


def run(
    s: pd.DataFrame,
    a: pd.DataFrame,
    p: pd.DataFrame = NO_PROC,
    *,
    models: Sequence[str] = ("a", "b"),
    prices: pd.DataFrame = PRICES,
    window: Window = W1,
    resolution_s: int = 3600,
) -> pd.DataFrame:
    r = attribute(
        samples=s,
        processes=p,
        allocations=a,
        usage=requests(models, seconds=int(window.seconds)),
        prices=prices,
        window=window,
        weights=AttributionWeights(),
        resolution_s=resolution_s,
    )
    per_hour = r.rows.groupby("hour")["cost_cents"].sum()
    assert per_hour.to_dict() == r.hours.set_index("hour")["metered_cost_cents"].to_dict()
    secs = r.rows.groupby("hour")["gpu_seconds"].sum()
    assert secs.to_dict() == pytest.approx(
        r.hours.set_index("hour")["metered_gpu_seconds"].to_dict()
    )
    return r.rows


def table(rows: pd.DataFrame) -> dict[tuple[str, str], tuple[float, int]]:
    """(kind, model) -> (GPU-seconds, cents), summed over customers and request types; rows
    that carry only requests (0 s, 0 cents) are left out."""
    g = rows.groupby(["kind", "model"])[["gpu_seconds", "cost_cents"]].sum()
    out = {k: (round(float(v.gpu_seconds), 6), int(v.cost_cents)) for k, v in g.iterrows()}
    return {k: v for k, v in out.items() if v != (0.0, 0)}


def test_two_collectors_meter_one_gpu_once() -> None:
    """Rule 1: streams offset by half an interval meter each GPU-hour exactly 3600 s; rule 7:
    two readings of one process are averaged, two processes of a model are added."""
    window = Window(T0, T0 + 2 * HOUR)
    s = pd.concat([samples("g0", 0, 7200, 10), samples("g0", 5, 7200, 10)], ignore_index=True)
    p = pd.concat(
        [
            procs("g0", "a", 0, 7200, 10, 20.0, pid=7),  # collector 1 reads pid 7 at 20 %
            procs("g0", "a", 5, 7200, 10, 40.0, pid=7),  # collector 2 reads pid 7 at 40 %
            procs("g0", "a", 0, 7200, 10, 10.0, pid=8),  # a second process of the model
        ],
        ignore_index=True,
    )
    rows = run(s, allocs([("a", "g0", 1.0, 0, None, "observed")]), p, models=["a"], window=window)
    assert rows.groupby("hour")["gpu_seconds"].sum().tolist() == [3600.0, 3600.0]
    got = {h: table(rows[rows["hour"] == pd.Timestamp(h)]) for h in (T0, T0 + HOUR)}
    # 01:00-02:00: u = mean(20, 40) + 10 = 40 % of 3600 s; 5.12 USD/h -> 204.8 + 307.2 cents
    assert got[T0 + HOUR] == {("attributed", "a"): (1440.0, 205), ("idle", "a"): (2160.0, 307)}
    # 00:00-00:00:05 only collector 1 reads pid 7: u = 20 + 10 = 30 % for those 5 s
    assert got[T0] == {("attributed", "a"): (1439.5, 205), ("idle", "a"): (2160.5, 307)}


def test_part_known_utilisation_never_bills_less_than_unknown() -> None:
    """Rule 7: readings for the first half only bill that half by SM% and the rest in full."""
    s = samples("g0", 0, 3600, 10)
    a = allocs([("a", "g0", 1.0, 0, None, "observed")])
    half = procs("g0", "a", 0, 1800, 10, 50.0)
    # 0.5 x 1800 + 1800 = 2700 s billed (the old per-hour ratio billed 900 / 3600 = 25 %)
    assert table(run(s, a, half, models=["a"])) == {
        ("attributed", "a"): (2700.0, 384),
        ("idle", "a"): (900.0, 128),
    }
    assert table(run(s, a, NO_PROC, models=["a"])) == {("attributed", "a"): (3600.0, 512)}


def test_placement_change_with_a_metering_gap_bills_the_holder() -> None:
    """Rule 4: metered 00:00-00:10 and 00:40-01:00; a holds to 00:30, b from 00:30."""
    s = pd.concat([samples("g0", 0, 600, 10), samples("g0", 2400, 3600, 10)], ignore_index=True)
    a = allocs([("a", "g0", 1.0, 0, 1800, "observed"), ("b", "g0", 1.0, 1800, None, "observed")])
    # 1800 metered s = 256 cents: a held 600 s (85.33), b 1200 s (170.67); not 900 / 900
    assert table(run(s, a)) == {
        ("attributed", "a"): (600.0, 85),
        ("attributed", "b"): (1200.0, 171),
    }


def test_allocation_after_metering_stopped_holds_nothing() -> None:
    """Rule 4: metering stops at 00:30, the allocation starts at 00:40."""
    s = samples("g0", 0, 1800, 10)
    a = allocs([("a", "g0", 1.0, 2400, None, "observed")])
    assert table(run(s, a)) == {("unallocated", UNALLOCATED): (1800.0, 256)}


def test_observed_allocations_win_over_planned_ones() -> None:
    """Rule 5: planned a holds the hour; observed b holds half the GPU from 00:30."""
    s = samples("g0", 0, 3600, 10)
    a = allocs([("a", "g0", 1.0, 0, None, "planned"), ("b", "g0", 0.5, 1800, None, "observed")])
    # a: 1800 s; b: 0.5 x 1800 = 900 s; the other half after 00:30 is unallocated, not a's
    assert table(run(s, a)) == {
        ("attributed", "a"): (1800.0, 256),
        ("attributed", "b"): (900.0, 128),
        ("unallocated", UNALLOCATED): (900.0, 128),
    }


def test_a_sample_straddling_the_hour_is_split() -> None:
    """Rule 1: a reading at 00:59:55 for 10 s meters 5 s of each hour."""
    s = samples("g0", 3595, 3600, 10)
    got = gpu_time(
        samples=s,
        processes=NO_PROC,
        allocations=allocs([]),
        prices=PRICES,
        window=Window(T0, T0 + 2 * HOUR),
        resolution_s=3600,
    ).metered
    assert got["metered_s"].tolist() == [5.0, 5.0]


def test_each_bucket_is_priced_by_the_version_in_force_at_its_start() -> None:
    """Rule 2: 5.12 from the start, 6.00 from 00:30, 7.20 from 01:00."""
    prices = pd.DataFrame(
        {
            "gpu_type": ["A100-80GB"] * 3,
            "pricing_class": ["on-demand"] * 3,
            "usd_per_hour": [5.12, 6.00, 7.20],
            "effective_from": [pd.NaT, at(1800), at(3600)],
        }
    )
    s = samples("g0", 0, 7200, 10)
    w = Window(T0, T0 + 2 * HOUR)
    hourly = gpu_time(
        samples=s,
        processes=NO_PROC,
        allocations=allocs([]),
        prices=prices,
        window=w,
        resolution_s=3600,
    ).metered
    assert hourly["metered_cost"].round(6).tolist() == [5.12, 7.20]  # 00:30 is mid-hour
    halves = gpu_time(
        samples=s,
        processes=NO_PROC,
        allocations=allocs([]),
        prices=prices,
        window=w,
        resolution_s=1800,
    ).metered
    assert halves["metered_cost"].round(6).tolist() == [2.56, 3.00, 3.60, 3.60]


def test_unpriced_time_is_its_own_row_beside_priced_gpus() -> None:
    """Rule 3: a B200 without a price is __unpriced__; the A100 beside it is billed."""
    s = pd.concat([samples("g0", 0, 3600, 10, gpu_type="B200"), samples("g1", 0, 3600, 10)])
    a = allocs([("a", "g0", 1.0, 0, None, "observed"), ("a", "g1", 1.0, 0, None, "observed")])
    assert table(run(s.reset_index(drop=True), a, models=["a"])) == {
        ("attributed", "a"): (3600.0, 512),
        ("unpriced", UNPRICED): (3600.0, 0),
    }


def test_five_minute_buckets_bill_each_request_its_own_bucket() -> None:
    """A 300 s ledger: 12 buckets of 42.67 cents; the model served only in 00:00-00:15."""
    s = samples("g0", 0, 3600, 10)
    a = allocs([("a", "g0", 1.0, 0, None, "observed")])
    r = attribute(
        samples=s,
        processes=NO_PROC,
        allocations=a,
        usage=requests(["a"], n=3, seconds=900),  # at 00:00, 00:05, 00:10
        prices=PRICES,
        window=W1,
        weights=AttributionWeights(),
        resolution_s=300,
    )
    assert r.hours["metered_cost_cents"].sum() == 512 and len(r.hours) == 12
    att = r.rows[r.rows["kind"] == "attributed"].groupby("hour")["gpu_seconds"].sum()
    assert att.to_dict() == {at(0): 300.0, at(300): 300.0, at(600): 300.0}
    assert r.rows[r.rows["kind"] == "idle"]["gpu_seconds"].sum() == pytest.approx(2700.0)


# -- property: gputime == the second-by-second oracle on whole-second inputs ----------------

stream = st.tuples(
    st.sampled_from(["g0", "g1"]),
    st.sampled_from([30, 60, 90]),  # interval
    st.integers(-300, 3600),  # first reading (may start before the window)
    st.integers(300, 7500),  # length
    st.sampled_from(["A100-80GB", "B200"]),
    st.sampled_from(["on-demand", "spot"]),
)
alloc = st.tuples(
    st.sampled_from(["m0", "m1", "m2"]),
    st.sampled_from(["g0", "g1"]),
    st.sampled_from([1 / 7, 3 / 7, 0.5, 1.0]),
    st.integers(-10, 120).map(lambda m: m * 60),
    st.one_of(st.none(), st.integers(1, 120).map(lambda m: m * 60)),
    st.sampled_from(["observed", "planned"]),
)
proc = st.tuples(
    st.sampled_from(["m0", "m1", "m2"]),
    st.sampled_from(["g0", "g1"]),
    st.integers(0, 7000),
    st.integers(60, 3600),
    st.one_of(st.none(), st.floats(0, 100).map(lambda f: round(f, 1))),
    st.sampled_from([1, 2]),
)


def _frames(streams, al, pr):  # type: ignore[no-untyped-def]
    s = pd.concat(
        [samples(g, t0, t0 + n, iv, gpu_type=ty, cls=c) for g, iv, t0, n, ty, c in streams],
        ignore_index=True,
    ).drop_duplicates(["gpu_uuid", "ts"], ignore_index=True)
    a = allocs([(m, g, f, t0, None if d is None else t0 + d, src) for m, g, f, t0, d, src in al])
    p = pd.concat(
        [NO_PROC, *(procs(g, m, t0, t0 + n, 60, u, pid) for m, g, t0, n, u, pid in pr)],
        ignore_index=True,
    )
    return s, a, p


@settings(max_examples=25, deadline=None)
@given(
    streams=st.lists(stream, min_size=1, max_size=4),
    al=st.lists(alloc, max_size=5),
    pr=st.lists(proc, max_size=4),
    change_at=st.one_of(st.none(), st.integers(0, 119).map(lambda m: m * 60)),
    resolution_s=st.sampled_from([3600, 1800, 900]),
)
def test_gpu_time_matches_the_second_by_second_oracle(  # type: ignore[no-untyped-def]
    streams, al, pr, change_at, resolution_s
):
    s, a, p = _frames(streams, al, pr)
    prices = PRICES.assign(effective_from=pd.NaT)
    if change_at is not None:
        extra = {"gpu_type": "A100-80GB", "pricing_class": "on-demand", "usd_per_hour": 7.0}
        prices = pd.concat(
            [prices, pd.DataFrame([{**extra, "effective_from": at(change_at)}])],
            ignore_index=True,
        )
    window = Window(T0, T0 + 2 * HOUR)
    got = gpu_time(
        samples=s,
        processes=p,
        allocations=a,
        prices=prices,
        window=window,
        resolution_s=resolution_s,
    )
    want = expected(s, p, a, prices, window, resolution_s)

    def secs(ts: pd.Timestamp) -> int:
        return int(ts.value // 1_000_000_000)

    m = got.metered.set_index(got.metered["hour"].map(secs))
    assert m["metered_s"].to_dict() == pytest.approx(dict(want.metered_s))
    cost = {k: v for k, v in m["metered_cost"].items() if v}
    assert cost == pytest.approx({k: v for k, v in want.metered_usd.items() if v}, abs=1e-9)
    up = got.unpriced.groupby(got.unpriced["hour"].map(secs))["gpu_seconds"].sum()
    assert up.to_dict() == pytest.approx({k: v for k, v in want.unpriced_s.items() if v})
    un = got.unallocated.set_index(got.unallocated["hour"].map(secs))["gpu_seconds"]
    assert {k: v for k, v in un.items() if v > 1e-9} == pytest.approx(
        {k: v for k, v in want.unallocated_s.items() if v > 1e-9}
    )
    gm = got.models.assign(h=got.models["hour"].map(secs)).set_index(["h", "model"])
    for col, ref in (
        ("alloc_s", want.alloc_s),
        ("busy_s", want.busy_s),
        ("alloc_cost", want.alloc_usd),
    ):
        have = {k: v for k, v in gm[col].items() if abs(v) > 1e-9}
        assert have == pytest.approx({k: v for k, v in ref.items() if abs(v) > 1e-9}, abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    streams=st.lists(stream, min_size=1, max_size=4),
    al=st.lists(alloc, max_size=5),
    pr=st.lists(proc, max_size=4),
    n_events=st.integers(0, 300),
    seed=st.integers(0, 1000),
    resolution_s=st.sampled_from([3600, 900, 300]),
    policy=st.sampled_from(["utilization", "allocation"]),
)
def test_every_bucket_conserves_cents_and_seconds(  # type: ignore[no-untyped-def]
    streams, al, pr, n_events, seed, resolution_s, policy
):
    """attributed + idle + unallocated + unpriced = metered, per bucket, to the cent and the
    GPU-second; an hour's cents do not depend on the resolution."""
    s, a, p = _frames(streams, al, pr)
    rng = np.random.default_rng(seed)
    use = pd.DataFrame(
        {
            "ts": pd.Series(
                [at(float(x)) for x in rng.uniform(0, 7200, n_events)],
                dtype="datetime64[ns, UTC]",
            ),
            "model": rng.choice(["m0", "m1", "m2"], n_events),
            "customer": rng.choice(["acme", "globex"], n_events),
            "request_type": "chat",
            "input_tokens": rng.integers(0, 1000, n_events),
            "output_tokens": rng.integers(0, 100, n_events),
        }
    )
    kw = dict(samples=s, processes=p, allocations=a, usage=use, prices=PRICES)
    w = Window(T0, T0 + 2 * HOUR)
    r = attribute(
        **kw,
        window=w,
        weights=AttributionWeights(),
        idle_policy=policy,  # type: ignore[arg-type]
        resolution_s=resolution_s,
    )
    h = r.hours.set_index("hour")
    cents = r.rows.groupby("hour")["cost_cents"].sum()
    assert cents.reindex(h.index, fill_value=0).to_dict() == h["metered_cost_cents"].to_dict()
    assert cents.drop(h.index).eq(0).all()  # a bucket nothing metered costs nothing
    secs = r.rows.groupby("hour")["gpu_seconds"].sum()
    assert secs.reindex(h.index, fill_value=0).to_dict() == pytest.approx(
        h["metered_gpu_seconds"].to_dict()
    )
    assert int(r.rows["requests"].sum()) == n_events
    assert (r.rows["gpu_seconds"] >= -1e-9).all()
    hourly = attribute(**kw, window=w, weights=AttributionWeights(), idle_policy=policy)  # type: ignore[arg-type]
    by_hour = r.hours.groupby(r.hours["hour"].dt.floor("h"))["metered_cost_cents"].sum()
    assert by_hour.to_dict() == hourly.hours.set_index("hour")["metered_cost_cents"].to_dict()


def test_rank_keys_give_the_same_answer_as_offset_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fleets x spans too large for offset keys use rank keys: same result."""
    import billing.intervals

    s = pd.concat([samples("g0", 0, 3600, 10), samples("g1", 5, 3000, 7)], ignore_index=True)
    a = allocs([("a", "g0", 0.5, 100, 2000, "observed"), ("b", "g1", 1.0, 0, None, "planned")])
    p = procs("g0", "a", 0, 3600, 30, 25.0)
    kw = dict(samples=s, processes=p, allocations=a, prices=PRICES, window=W1, resolution_s=900)
    offset = gpu_time(**kw)  # type: ignore[arg-type]
    monkeypatch.setattr(billing.intervals, "OFFSET_KEY_LIMIT", 0)
    ranked = gpu_time(**kw)  # type: ignore[arg-type]
    for name in ("models", "unallocated", "metered"):
        pd.testing.assert_frame_equal(getattr(offset, name), getattr(ranked, name))


def test_an_hours_cents_do_not_depend_on_how_its_float_sum_was_added() -> None:
    """0.325 USD summed two ways lands on either side of 32.5 cents in float; both are 33."""
    one = 0.0
    for x in (0.015, 0.045, 0.055, 0.21):
        one += x
    other = 0.0
    for x in (0.015, 0.205, 0.035, 0.07):
        other += x
    assert one * 100 < 32.5 <= other * 100  # old half-up: 32 and 33
    assert half_up_cents(pd.Series([one, other, 0.324999, 0.0])).tolist() == [33, 33, 32, 0]
