"""Done-when of the telemetry issue: fixture nodes -> real agents -> API -> rollup -> ledger.

The fixture nodes (fake pynvml with MIG, MPS and time-sliced GPUs; a kubelet PodResources
gRPC server each; a fixture /proc) are read by real NodeAgents whose pod labels come from the
fake Kubernetes API server through the real kubernetes client. They post to the real API
(uvicorn). An hour of the Azure trace is replayed through POST /v1/usage, then rolled up.
No simulator code writes an allocation.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing.attribution import attribute
from billing.config import BillingConfig
from billing.kinds import UNALLOCATED
from billing.ledger import load_inputs, rollup
from billing.models import LedgerEntry, table_of
from billing.pricebook import prices_at, read_price_book, store_prices
from billing.replay import load_events
from billing.windows import Window
from scheduler.agent.simnode import start_sim_nodes
from scheduler.kube.pods import KubePodLister
from tests.agent.apiserver import ApiServer, ingest_key
from tests.agent.fixture_node import NODE_LABELS, Expected, fixture_fleet
from tests.scheduler.conftest import T0, Clock
from tests.utils.kube_server import KubeServer

pytestmark = pytest.mark.slow
CONV = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "azure-llm-2023"
    / "AzureLLMInferenceTrace_conv.csv"
)
HOUR = Window(T0, T0 + timedelta(hours=1))
PRICE = {"gpu-mix": 9.80, "gpu-ts": 2.05}  # H100-80GB on-demand, A100-80GB spot ($/h)


def _kube(expected: list[Expected]) -> KubeServer:
    kube = KubeServer()
    for node, labels in NODE_LABELS.items():
        kube.state.add_node(node, labels)
    for e in expected:
        # mistral's pods carry only app.kubernetes.io/name: the model label's fallback
        key = "app.kubernetes.io/name" if e.model == "mistral-7b" else "costctl.io/model"
        kube.state.add_pod(
            e.namespace, e.pod, node=e.node, uid=e.pod_uid,
            labels={key: e.model, "pod-template-hash": "5d8f7c"},
            owner=("ReplicaSet", f"{e.model}-5d8f7c"),
        )  # fmt: skip
    kube.state.add_pod(
        "serving", "web-0", node="gpu-mix", uid="00000000-0000-0000-0000-0000000000ff"
    )
    return kube


def _replay(api: ApiServer, key: str) -> int:
    events = [e for e in load_events(CONV, seed=7, start=T0, speed=1.0) if e["time"] < HOUR.end]
    body = [{**e, "time": e["time"].isoformat()} for e in events]
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}) as c:
        for i in range(0, len(body), 5000):
            r = c.post("/v1/usage", json=body[i : i + 5000], timeout=120)
            assert r.status_code == 200, r.text
    return len(events)


@pytest.fixture
def ledger(engine: Engine, short_dir: Path) -> Iterator[tuple[Engine, list[Expected]]]:
    if not CONV.exists():
        pytest.skip(f"shared data missing: {CONV}")
    store_prices(engine, read_price_book(BillingConfig().price_book_path), T0 - timedelta(days=1))
    clock = Clock()
    fleet, expected = fixture_fleet(clock)
    with _kube(expected) as kube, ApiServer(engine) as api:
        key = ingest_key(engine)
        listers = {n: KubePodLister(kube.api_client(), n) for n in NODE_LABELS}
        nodes = start_sim_nodes(fleet, api.url, key, short_dir, interval_s=60, clock=clock,
                                pod_listers=listers)  # fmt: skip
        try:
            for _ in range(60):  # one sample a minute for the hour, each stands for 60 s
                nodes.tick(clock())
                clock.tick(60)
        finally:
            nodes.stop()
        assert _replay(api, key) > 10_000
    rollup(engine, HOUR, BillingConfig())
    yield engine, expected


def _rows(engine: Engine) -> pd.DataFrame:
    t = table_of(LedgerEntry).c
    cols = [t.model, t.customer, t.request_type, t.kind, t.cost_cents]
    with engine.connect() as c:
        return pd.read_sql(select(*cols).where(t.hour >= HOUR.start, t.hour < HOUR.end), c)


def test_metered_cost_goes_to_the_models_that_held_the_devices(
    ledger: tuple[Engine, list[Expected]],
) -> None:
    engine, expected = ledger
    rows = _rows(engine)
    metered = round(3600 * (3 * PRICE["gpu-mix"] + PRICE["gpu-ts"]) / 36)  # 3145 cents
    assert rows["cost_cents"].sum() == metered
    held = rows[rows["model"].isin({e.model for e in expected})]["cost_cents"].sum()
    assert held / metered >= 0.999
    assert rows[rows["model"] == UNALLOCATED]["cost_cents"].sum() <= metered * 0.001
    # each model (billed + idle) = Σ fraction x its GPU's price for the hour, to rounding
    by_model = rows.groupby("model")["cost_cents"].sum()
    n_rows = rows.groupby("model").size()
    for model in {e.model for e in expected}:
        exact = sum(e.fraction * PRICE[e.node] * 100 for e in expected if e.model == model)
        assert abs(by_model[model] - exact) <= n_rows[model], model


def test_per_customer_cents_equal_the_documented_split_of_the_true_holdings(
    ledger: tuple[Engine, list[Expected]],
) -> None:
    engine, expected = ledger
    config = BillingConfig()
    with engine.connect() as c:
        inputs = load_inputs(c, HOUR)
    truth = pd.DataFrame(
        {
            "model": [e.model for e in expected],
            "gpu_uuid": [e.gpu_uuid for e in expected],
            "fraction": [e.fraction for e in expected],
            "start": pd.Timestamp(T0),
            "end": pd.NaT,
        }
    )
    want = attribute(
        **{**inputs, "allocations": truth},
        prices=prices_at(engine, HOUR.end),
        window=HOUR,
        weights=config.weights,
        idle_policy=config.idle_policy,
    ).rows
    keys = ["model", "customer", "request_type", "kind"]
    got = _rows(engine).set_index(keys)["cost_cents"].sort_index()
    assert got.to_dict() == want.set_index(keys)["cost_cents"].sort_index().to_dict()
    billed = got.xs("attributed", level="kind")
    assert billed.groupby(level="customer").sum().gt(0).sum() >= 5  # many tenants billed
