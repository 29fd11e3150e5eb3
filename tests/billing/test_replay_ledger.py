"""The Azure trace replayed into each backend, attributed, and checked to the cent."""

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from billing.config import BillingConfig
from billing.ingest import ingest_gpu_samples, ingest_usage
from billing.ledger import metered_cents, query_costs, rollup
from billing.models import Allocation, UsageEvent, table_of
from billing.pricebook import read_price_book, store_prices
from billing.replay import MODEL_MIX, assign, load_events, read_azure_trace
from billing.windows import Window
from tests.utils.factories import T0, replay_fleet

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "azure-llm-2023"
CONV = DATA / "AzureLLMInferenceTrace_conv.csv"
CODE = DATA / "AzureLLMInferenceTrace_code.csv"
START = T0 + timedelta(minutes=20)  # the hour-long trace spans two clock hours

pytestmark = pytest.mark.skipif(not CONV.exists(), reason=f"shared data missing: {CONV}")


def test_assignment_is_deterministic_and_documented() -> None:
    trace = read_azure_trace(CONV)
    assert len(trace) == 19366
    a, b = assign(trace, seed=7, code=False), assign(trace, seed=7, code=False)
    assert a["model"].tolist() == b["model"].tolist()
    assert a["customer"].tolist() == b["customer"].tolist()
    c = assign(trace, seed=8, code=False)
    assert a["model"].tolist() != c["model"].tolist()
    share = a["model"].value_counts(normalize=True)
    for model, p in MODEL_MIX.items():
        assert share[model] == pytest.approx(p, abs=0.02)
    assert set(a["request_type"]) == {"chat", "summarize"}
    code = assign(read_azure_trace(CODE), seed=7, code=True)
    assert set(code["request_type"]) == {"code-completion", "code-gen"}
    # Zipf: the first customer is the largest
    assert a["customer"].value_counts().idxmax() == "acme"


def test_replay_attribution_conserves_cost_to_the_cent(engine: Engine) -> None:
    config = BillingConfig()
    store_prices(engine, read_price_book(config.price_book_path), T0 - timedelta(days=1))
    events = load_events(CONV, seed=7, start=START, speed=1.0)
    assert ingest_usage(engine, events).inserted == 19366
    assert ingest_usage(engine, events[:1000]).duplicates == 1000

    fleet = replay_fleet(interval_s=10)
    samples, procs = fleet.sample_rows()
    ingest_gpu_samples(engine, samples, procs)
    with Session(engine) as s:
        for model, gpu, frac in [
            ("llama-3-70b", "g2", 1.0),
            ("llama-3-8b", "g0", 3 / 7),
            ("mistral-7b", "g0", 2 / 7),
            ("mixtral-8x7b", "g3", 0.5),
        ]:
            s.add(
                Allocation(
                    model=model,
                    node="n",
                    gpu_uuid=gpu,
                    device_uuid=gpu,
                    pod=model,
                    fraction=frac,
                    start=T0,
                    mode="mig" if gpu == "g0" else "gpu",
                )
            )
        s.commit()

    whole = Window(T0, T0 + timedelta(hours=3))
    first = rollup(engine, whole, config)
    second = rollup(engine, whole, config)  # idempotent: replaces, never adds
    assert first.metered_cost_cents == second.metered_cost_cents == second.ledger_cost_cents
    # 3 h x (5.12 + 2.05 + 9.80 + 6.12) USD = 69.27 USD
    assert first.metered_cost_cents == 6927

    for window in (
        whole,
        Window(T0, T0 + timedelta(hours=1)),
        Window(T0 + timedelta(hours=1), T0 + timedelta(hours=3)),
    ):
        metered = metered_cents(engine, window)
        for keys in (
            [],
            ["model"],
            ["customer"],
            ["model", "customer", "request_type"],
            ["kind", "hour"],
            ["day"],
        ):
            df = query_costs(engine, window, group_by=keys)
            assert int(df["cost_cents"].sum()) == metered, (window, keys)

    att = query_costs(engine, whole, group_by=["kind"]).set_index("kind")
    with engine.connect() as c:
        u = table_of(UsageEvent).c
        tokens_in, tokens_out = c.execute(
            select(func.sum(u.input_tokens), func.sum(u.output_tokens))
        ).one()
    assert att.loc["attributed", "requests"] == 19366
    assert att.loc["attributed", "input_tokens"] == tokens_in
    assert att.loc["attributed", "output_tokens"] == tokens_out
    assert att.loc["unallocated", "cost_cents"] > 0 and att.loc["idle", "cost_cents"] > 0
    by_customer = query_costs(engine, whole, group_by=["customer"], filters={"kind": "attributed"})
    assert by_customer.iloc[0]["customer"] == "acme"  # the Zipf head pays most
