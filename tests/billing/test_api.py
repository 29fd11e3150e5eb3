"""The HTTP API over both backends: ingestion semantics, roles, tenant scoping, 422s."""

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from billing.api.deps import get_now
from billing.config import BillingConfig
from billing.ingest import ingest_gpu_samples
from billing.ledger import rollup
from billing.models import Allocation
from billing.pricebook import read_price_book, store_prices
from billing.windows import Window
from tests.utils.api import Api, event, make_api
from tests.utils.factories import T0, Fleet, GpuSpec


@pytest.fixture
def api(engine: Engine) -> Api:
    return make_api(engine)


def test_good_batch_then_resend(api: Api) -> None:
    batch = [event(i) for i in range(50)]
    r = api.client.post("/v1/usage", json=batch, headers=api.h("ingest"))
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 50, "inserted": 50, "duplicates": 0, "rejected": []}
    r = api.client.post("/v1/usage", json={"events": batch}, headers=api.h("ingest"))
    assert r.json()["inserted"] == 0 and r.json()["duplicates"] == 50


def test_partially_bad_batch_is_rejected_whole_with_fields(api: Api, engine: Engine) -> None:
    batch = [event(0), event(1, output_tokens="many"), event(2, model="")]
    r = api.client.post("/v1/usage", json=batch, headers=api.h("ingest"))
    assert r.status_code == 422
    locs = {tuple(d["loc"]) for d in r.json()["detail"]}
    assert ("body", "events", 1, "output_tokens") in locs
    assert ("body", "events", 2, "model") in locs
    # nothing was written: the good event goes in only when the batch is fixed or partial=true
    r = api.client.post("/v1/usage?partial=true", json=batch, headers=api.h("ingest"))
    assert r.status_code == 200
    body = r.json()
    assert (body["received"], body["inserted"]) == (3, 1)
    assert [x["index"] for x in body["rejected"]] == [1, 2]
    assert body["rejected"][0]["errors"][0]["loc"][-1] == "output_tokens"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ("not json", ["body"]),
        ({"events": "nope"}, ["body", "events"]),
        ([event(i) for i in range(11)], ["body", "events"]),  # max_batch=10 below
    ],
    ids=["invalid-json", "events-not-a-list", "too-large"],
)
def test_malformed_bodies_are_422(engine: Engine, body: object, loc: list[str]) -> None:
    api = make_api(engine, BillingConfig(max_batch=10))
    kw = {"content": body} if isinstance(body, str) else {"json": body}
    r = api.client.post("/v1/usage", headers=api.h("ingest"), **kw)  # type: ignore[arg-type]
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == loc


def test_roles(api: Api) -> None:
    assert api.client.post("/v1/usage", json=[event(0)]).status_code == 401
    bad = {"Authorization": "Bearer cc_00000000_notakeynotakeynotakey"}
    assert api.client.post("/v1/usage", json=[event(0)], headers=bad).status_code == 401
    assert api.client.post("/v1/usage", json=[event(0)], headers=api.h("read")).status_code == 403
    assert api.client.post("/v1/usage", json=[event(0)], headers=api.h("admin")).status_code == 200
    assert api.client.get("/v1/costs", headers=api.h("ingest")).status_code == 403
    assert api.client.get("/v1/keys", headers=api.h("read")).status_code == 403
    r = api.client.post(
        "/v1/keys", json={"name": "x", "role": "ingest", "customer": "acme"}, headers=api.h("admin")
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "customer"]


def test_revoked_key_stops_working(api: Api) -> None:
    r = api.client.post("/v1/keys", json={"name": "tmp", "role": "ingest"}, headers=api.h("admin"))
    assert r.status_code == 201
    key, prefix = r.json()["key"], r.json()["prefix"]
    h = {"Authorization": f"Bearer {key}"}
    assert api.client.post("/v1/usage", json=[event(0)], headers=h).status_code == 200
    assert api.client.delete(f"/v1/keys/{prefix}", headers=api.h("admin")).status_code == 204
    assert api.client.post("/v1/usage", json=[event(1)], headers=h).status_code == 401
    listed = api.client.get("/v1/keys", headers=api.h("admin")).json()
    assert all("key_hash" not in k for k in listed)


def _ledger(engine: Engine, api: Api) -> None:
    store_prices(engine, read_price_book(BillingConfig().price_book_path), T0 - timedelta(days=1))
    fleet = Fleet(gpus=[GpuSpec("g0"), GpuSpec("g1")], processes=[("llama", "g0", 60.0)])
    samples, procs = fleet.sample_rows()
    ingest_gpu_samples(engine, samples, procs)
    with Session(engine) as s:
        s.add(
            Allocation(
                model="llama",
                node="node-a",
                gpu_uuid="g0",
                device_uuid="g0",
                fraction=1.0,
                start=T0,
            )
        )
        s.commit()
    events = [
        event(i, customer=c, time=(T0 + timedelta(seconds=i)).isoformat())
        for i, c in enumerate(["acme", "globex", "acme", "initech"] * 25)
    ]
    assert api.client.post("/v1/usage", json=events, headers=api.h("ingest")).status_code == 200
    rollup(engine, Window(T0, T0 + timedelta(hours=1)), BillingConfig())
    api.client.app.dependency_overrides[get_now] = lambda: T0 + timedelta(hours=2)  # type: ignore[attr-defined]


def test_costs_grouped_and_conserved(api: Api, engine: Engine) -> None:
    _ledger(engine, api)
    r = api.client.get("/v1/costs?window=1d&group_by=kind", headers=api.h("read"))
    assert r.status_code == 200, r.text
    body = r.json()
    # 2 x A100-80GB on-demand x 1 h = 10.24 USD, all of it accounted for
    assert body["metered_cost_usd"] == pytest.approx(10.24)
    assert body["totals"]["cost_cents"] == 1024
    kinds = {row["kind"]: row["cost_cents"] for row in body["rows"]}
    # llama: 60% busy on g0 -> 3.072 USD billed, 2.048 idle; g1 unallocated 5.12
    assert kinds == {"attributed": 307, "idle": 205, "unallocated": 512}


def test_tenant_key_sees_only_its_customer(api: Api, engine: Engine) -> None:
    _ledger(engine, api)
    r = api.client.get("/v1/costs?window=1d&group_by=customer", headers=api.h("acme"))
    assert r.status_code == 200
    assert {row["customer"] for row in r.json()["rows"]} == {"acme"}
    assert r.json()["metered_cost_usd"] is None
    assert r.json()["totals"]["requests"] == 50
    r = api.client.get("/v1/costs?window=1d&customer=globex", headers=api.h("acme"))
    assert r.status_code == 403
    r = api.client.get("/v1/costs?window=1d&group_by=customer", headers=api.h("read"))
    assert {row["customer"] for row in r.json()["rows"]} >= {"acme", "globex", "initech"}


@pytest.mark.parametrize(
    ("query", "loc"),
    [("window=fortnight", ["query", "window"]), ("group_by=colour", ["query", "group_by"])],
)
def test_cost_query_errors_are_422(api: Api, query: str, loc: list[str]) -> None:
    r = api.client.get(f"/v1/costs?{query}", headers=api.h("read"))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc


def test_health(api: Api, engine: Engine) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/readyz").json()["database"] == engine.dialect.name
