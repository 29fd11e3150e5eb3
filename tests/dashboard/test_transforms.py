"""Pure transforms of the dashboard: asserted numbers and the no-cost-created invariant."""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.models import IDLE, UNALLOCATED
from billing.windows import Window
from dashboard import transforms as tf

T0 = datetime(2026, 11, 23, tzinfo=UTC)
H = timedelta(hours=1)


def ledger(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    """(hour offset, model, customer, request_type, kind, gpu_s, in, out, requests, cents)."""
    df = pd.DataFrame(
        rows,
        columns=[
            "h",
            "model",
            "customer",
            "request_type",
            "kind",
            "gpu_seconds",
            "input_tokens",
            "output_tokens",
            "requests",
            "cost_cents",
        ],
    )
    df.insert(0, "hour", pd.Timestamp(T0) + pd.to_timedelta(df.pop("h"), "h"))
    return df


L = ledger(
    [
        (0, "llama", "acme", "chat", "attributed", 1800.0, 8000, 2000, 10, 500),
        (0, "llama", "globex", "chat", "attributed", 900.0, 3000, 2000, 5, 250),
        (0, "llama", IDLE, IDLE, "idle", 900.0, 0, 0, 0, 250),
        (0, "mistral", "acme", "summarize", "attributed", 360.0, 4000, 0, 2, 40),
        (0, UNALLOCATED, UNALLOCATED, UNALLOCATED, "unallocated", 3600.0, 0, 0, 0, 100),
        (1, "llama", "acme", "chat", "attributed", 3600.0, 20000, 0, 20, 1000),
    ]
)


def test_kpis() -> None:
    k = tf.kpis(L)
    assert k.cost_usd == pytest.approx(21.40)  # 500+250+250+40+100+1000 cents
    assert k.attributed_usd == pytest.approx(17.90)
    assert k.idle_usd == pytest.approx(2.50) and k.unallocated_usd == pytest.approx(1.00)
    assert k.tokens == 39000 and k.requests == 37
    # 17.90 USD / 39,000 tokens x 1e6 = 458.97 USD per 1M tokens; with 2.50 idle 523.08
    assert k.usd_per_1m_tokens == pytest.approx(17.90 / 39000 * 1e6)
    assert k.loaded_per_1m_tokens == pytest.approx(20.40 / 39000 * 1e6)
    assert k.idle_share == pytest.approx(3.50 / 21.40)
    assert k.gpu_hours == pytest.approx(11160 / 3600)


def test_filters_keep_idle_for_model_only() -> None:
    assert len(tf.filter_ledger(L)) == len(L)
    m = tf.filter_ledger(L, models=["llama"])
    assert set(m["kind"]) == {"attributed", "idle"} and len(m) == 4
    c = tf.filter_ledger(L, customers=["acme"])
    assert set(c["kind"]) == {"attributed"} and int(c["cost_cents"].sum()) == 1540
    r = tf.filter_ledger(L, request_types=["summarize"])
    assert r["cost_cents"].tolist() == [40]


def test_cost_per_1m_tokens_hourly() -> None:
    df = tf.cost_per_1m_tokens(L, "h").set_index(["bucket", "model"])
    h0 = pd.Timestamp(T0)
    # llama hour 0: 7.50 USD billed over 15,000 tokens = 500 / 1M; with 2.50 idle: 666.67
    assert df.loc[(h0, "llama"), "billed_per_1m"] == pytest.approx(500.0)
    assert df.loc[(h0, "llama"), "loaded_per_1m"] == pytest.approx(10.0 / 15000 * 1e6)
    assert df.loc[(h0, "mistral"), "billed_per_1m"] == pytest.approx(100.0)  # 0.40 / 4k
    assert df.loc[(h0 + H, "llama"), "billed_per_1m"] == pytest.approx(500.0)  # 10 / 20k
    assert UNALLOCATED not in df.index.get_level_values("model")


def test_cost_per_1m_daily_bucket_and_empty() -> None:
    df = tf.cost_per_1m_tokens(L, "D")
    llama = df[df["model"] == "llama"].iloc[0]
    assert llama["tokens"] == 35000 and llama["billed_per_1m"] == pytest.approx(17.5 / 0.035)
    assert tf.cost_per_1m_tokens(L.iloc[0:0], "h").empty


def test_series_by_model_includes_idle_by_customer_not() -> None:
    by_model = tf.series(L, "model", "D").set_index("model")
    # llama: 17.50 billed + 2.50 idle over 35,000 tokens
    assert by_model.loc["llama", "cost_usd"] == pytest.approx(20.0)
    assert by_model.loc["llama", "usd_per_1m"] == pytest.approx(20.0 / 35000 * 1e6)
    busy = L[(L["model"] == "llama") & (L["kind"] == "attributed")]["gpu_seconds"].sum()
    held = L[(L["model"] == "llama") & L["kind"].isin(["attributed", "idle"])]["gpu_seconds"].sum()
    assert by_model.loc["llama", "utilization"] == pytest.approx(busy / held * 100)
    by_customer = tf.series(L, "customer", "D")
    assert by_customer["cost_usd"].sum() == pytest.approx(17.90)  # attributed only
    att = L[L["kind"] == "attributed"]["gpu_seconds"].sum()
    assert by_customer["utilization"].sum() == pytest.approx(att / 3600)  # busy GPU-hours
    assert tf.series(L.iloc[0:0], "model", "D").empty


def test_table_rows_add_up_and_sort_by_cost() -> None:
    t = tf.table_rows(L, "h")
    assert t["cost_usd"].sum() == pytest.approx(21.40)
    assert t["cost_usd"].is_monotonic_decreasing
    assert list(t.columns[:5]) == ["bucket", "model", "customer", "request_type", "kind"]
    unalloc = t[t["kind"] == UNALLOCATED]
    assert unalloc["usd_per_1m"].isna().all()  # no tokens: NaN, shown blank (never "None")


def test_cost_stack_top_n_other_and_idle_labels() -> None:
    s = tf.cost_stack(L, "customer", 1, "D")
    by = s.groupby("label")["cost_usd"].sum()
    assert by["acme"] == pytest.approx(15.40)
    assert by[tf.OTHER] == pytest.approx(2.50)  # globex folded
    assert by[tf.IDLE_LABEL] == pytest.approx(2.50)
    assert by[tf.UNALLOCATED_LABEL] == pytest.approx(1.00)
    assert s["cost_usd"].sum() == pytest.approx(tf.kpis(L).cost_usd)  # the bar = metered
    assert s["label"].iloc[0] == "acme"  # largest first
    rt = tf.cost_stack(L, "request_type", 5, "h").groupby("label")["cost_usd"].sum()
    assert rt["chat"] == pytest.approx(17.50) and rt["summarize"] == pytest.approx(0.40)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcdefg"), st.integers(0, 3), st.integers(0, 10_000)),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, 8),
)
def test_top_n_with_other_conserves_cost(rows: list[tuple[str, int, int]], n: int) -> None:
    df = pd.DataFrame(rows, columns=["label", "bucket", "cost_usd"])
    out = tf.top_n_with_other(df, "label", n)
    assert out["cost_usd"].sum() == df["cost_usd"].sum()
    assert out["label"].nunique() <= n + 1
    assert not out.duplicated(["label", "bucket"]).any()


def test_idle_by_model() -> None:
    df = tf.idle_by_model(L).set_index("label")
    assert df.loc["llama", "cost_usd"] == pytest.approx(2.50)
    assert df.loc[tf.UNALLOCATED_LABEL, "gpu_hours"] == pytest.approx(1.0)


def test_device_utilization_gpu_and_mig_slices() -> None:
    first, last = pd.Timestamp(T0), pd.Timestamp(T0 + 2 * H) - pd.Timedelta(seconds=60)
    devices = pd.DataFrame(
        {
            "gpu_uuid": ["g0", "g0/mig3", "g1"],
            "parent_uuid": [None, "g0", None],
            "gpu_type": ["A100-80GB"] * 3,
            "mig_profile": [None, "3g.40gb", None],
            "sample_s": [7200.0] * 3,  # sampled every 60 s for 2 h
            "busy_s": [1440.0, 1400.0, 1800.0],
            "mem_used_mib": [1.0] * 3,
            "mem_total_mib": [2.0] * 3,
            "first": [first] * 3,
            "last": [last] * 3,
            "interval_s": [60.0] * 3,
        }
    )
    allocs = pd.DataFrame(
        {
            "model": ["llama", "mistral"],
            "node": ["n", "n"],
            "gpu_uuid": ["g0", "g1"],
            "device_uuid": ["g0/mig3", None],
            "mode": ["mig", "gpu"],
            "profile": ["3g.40gb", None],
            "fraction": [3 / 7, 1.0],
            "start": [pd.Timestamp(T0 - H), pd.Timestamp(T0 + H / 2)],
            "end": [pd.NaT, pd.NaT],
        }
    )
    u = tf.device_utilization(devices, allocs).set_index("device")
    assert u.index.tolist() == ["g0", "g0/mig3", "g1"]  # each GPU followed by its slices
    # g0: 3/7 of the GPU held over the whole sampled span -> 42.86 %; 1440 / 7200 s = 20 %
    assert u.loc["g0", "allocated_pct"] == pytest.approx(300 / 7)
    assert u.loc["g0", "used_pct"] == pytest.approx(20.0)
    assert u.loc["g0/mig3", "allocated_pct"] == pytest.approx(100.0)
    assert u.loc["g0/mig3", "models"] == "llama"
    # g1: held from 00:30 -> 5400 of 7200 s = 75 %; busy 1800 / 7200 s = 25 %
    assert u.loc["g1", "allocated_pct"] == pytest.approx(75.0)
    assert u.loc["g1", "used_pct"] == pytest.approx(25.0)
    assert tf.device_utilization(devices.iloc[0:0], allocs).empty
    none_alloc = tf.device_utilization(devices, allocs.iloc[0:0])
    assert none_alloc["allocated_pct"].tolist() == [0.0, 0.0, 0.0]
    ended = allocs.assign(end=[pd.Timestamp(T0 + H), pd.NaT])  # llama released at 01:00
    assert tf.device_utilization(devices, ended).set_index("device").loc[
        "g0/mig3", "allocated_pct"
    ] == pytest.approx(50.0)


def test_bucket_freq() -> None:
    assert tf.bucket_freq(Window(T0, T0 + 24 * H)) == "h"
    assert tf.bucket_freq(Window(T0, T0 + 7 * 24 * H)) == "D"


@pytest.mark.parametrize(
    ("usd", "text"),
    [
        (2.552e-06, "$0.00000255"),
        (0.000999, "$0.000999"),
        (0.0123, "$0.0123"),
        (1.5, "$1.50"),
        (2.2834, "$2.28"),
        (1234.5, "$1,234"),
        (0.0, "$0"),
    ],
)
def test_unit_cost_is_never_in_e_notation(usd: float, text: str) -> None:
    from dashboard.callbacks import usd_small

    assert usd_small(usd) == text


def test_unpriced_rows_get_their_own_label() -> None:
    extra = L.iloc[[0]].assign(
        model="__unpriced__",
        customer="__unpriced__",
        request_type="__unpriced__",
        kind="unpriced",
        cost_cents=0,
        gpu_seconds=3600.0,
    )
    s = tf.cost_stack(pd.concat([L, extra], ignore_index=True), "customer", 1, "D")
    assert tf.UNPRICED_LABEL in set(s["label"])
    assert s["label"].notna().all()
    assert s["label"].iloc[-1] == tf.UNPRICED_LABEL  # after other, idle and unallocated
