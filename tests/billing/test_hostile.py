# ruff: noqa: E501  (the table reads best one row per line)
"""Hostile input, one row per class, on both backends: a 4xx naming the field, never a 5xx,
and nothing stored by a rejected request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from billing.config import BillingConfig
from billing.models import GpuSample, UsageEvent, table_of
from tests.enforcement.conftest import make_enf_api
from tests.utils.api import event

TS = "2026-11-23T10:00:00Z"


def sample(**over: object) -> dict[str, object]:
    """A valid GPU sample as JSON."""
    s: dict[str, object] = {
        "ts": TS,
        "node": "n1",
        "gpu_uuid": "GPU-1",
        "gpu_type": "H100",
        "interval_s": 10,
    }
    s.update(over)
    return s


def raw(value: object) -> str:
    """JSON text; NaN/Infinity floats written as the literals an attacker would send."""
    return json.dumps(value)


@dataclass
class Row:
    """A request and what must come back: the status and the last element of the loc."""

    method: str
    path: str
    body: str | None = None
    status: int = 422
    loc: str | int | None = None
    role: str = "admin"
    headers: dict[str, str] = dc_field(default_factory=dict)


BIG = 2**63
ROWS: dict[str, Row] = {
    "nan-in-usage": Row("POST", "/v1/usage", raw([event(0, latency_ms=float("nan"))]), 422, "latency_ms"),
    "nan-in-model-body": Row("POST", "/v1/gpu-samples", raw({"samples": [sample(sm_util=float("nan"))]}), 422, "sm_util"),
    "nan-in-enforcement": Row("PUT", "/v1/budgets/b1", raw({"period": "month", "limit_usd": float("nan")}), 422, "limit_usd"),
    "infinity-literal": Row("POST", "/v1/gpu-samples", raw({"samples": [sample(power_w=float("inf"))]}), 422, "power_w"),
    "infinity-as-1e999": Row("POST", "/v1/gpu-samples", '{"samples": [' + raw(sample())[:-1] + ', "mem_used_mib": 1e999}]}', 422, "mem_used_mib"),
    "int-over-int64": Row("POST", "/v1/gpu-samples", raw({"samples": [sample(gpu_index=BIG)]}), 422, "gpu_index"),
    "int-over-int32-column": Row("POST", "/v1/gpu-samples", raw({"processes": [{"ts": TS, "device_uuid": "GPU-1", "gpu_uuid": "GPU-1", "pid": 2**31, "interval_s": 10}]}), 422, "pid"),
    "tokens-over-int64": Row("POST", "/v1/usage", raw([event(0, input_tokens=BIG)]), 422, "input_tokens"),
    "time-past-9999": Row("POST", "/v1/usage", raw([event(0, time="9999-12-31T23:00:00-05:00")]), 422, "time"),
    "time-before-year-1": Row("POST", "/v1/gpu-samples", raw({"samples": [sample(ts="0001-01-01T00:00:00+05:00")]}), 422, "ts"),
    "query-time-past-9999": Row("GET", "/v1/allocations?since=9999-12-31T23:00:00-05:00", None, 422, "since"),
    "window-duration-overflow": Row("GET", "/v1/costs?window=99999999999d", None, 422, "window"),
    "window-iso-week-overflow": Row("GET", "/v1/costs?window=9999-W52", None, 422, "window"),
    "window-pair-overflow": Row("GET", "/v1/costs?window=9999-12-31T23:00:00-05:00,9999-12-31T23:30:00Z", None, 422, "window"),
    "deep-json-usage": Row("POST", "/v1/usage", "[" * 5000 + "]" * 5000, 422, "body"),
    "deep-json-model-body": Row("POST", "/v1/keys", '{"name": ' + "[" * 5000 + "]" * 5000 + "}", 422, "body"),
    "nul-in-usage": Row("POST", "/v1/usage", raw([event(0, customer="a\x00b")]), 422, "customer"),
    "nul-in-key-name": Row("POST", "/v1/keys", raw({"name": "a\x00", "role": "read"}), 422, "name"),
    "nul-in-query": Row("GET", "/v1/costs?customer=a%00b", None, 422, "customer"),
    "request-type-over-column": Row("POST", "/v1/usage", raw([event(0, request_type="r" * 150)]), 422, "request_type"),
    "request-type-over-column-enforcement": Row("POST", "/v1/authorize", raw({"customer": "c", "model": "m", "request_type": "r" * 150, "estimated_tokens": 5}), 422, "request_type", role="ingest"),
    "tokens-as-string": Row("POST", "/v1/usage", raw([event(0, input_tokens="812")]), 422, "input_tokens"),
    "tokens-as-bool": Row("POST", "/v1/usage", raw([event(0, output_tokens=True)]), 422, "output_tokens"),
    "tokens-as-float": Row("POST", "/v1/usage", raw([event(0, output_tokens=2.0)]), 422, "output_tokens"),
    "estimate-as-string": Row("POST", "/v1/authorize", raw({"customer": "c", "model": "m", "request_type": "r", "estimated_tokens": "5"}), 422, "estimated_tokens", role="ingest"),
    "reserved-customer-scope": Row("POST", "/v1/keys", raw({"name": "k", "role": "read", "customer": "__idle__"}), 422, "customer"),
    "unknown-enum-filter": Row("GET", "/v1/costs?kind=bogus", None, 422, "kind"),
    "body-over-limit": Row("POST", "/v1/usage", raw([event(i) for i in range(200)]), 413),
}  # fmt: skip


def _count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table_of(model))).scalar_one())


@pytest.mark.parametrize("name", list(ROWS))
def test_hostile_input_gets_4xx_naming_the_field(engine: Engine, name: str) -> None:
    row = ROWS[name]
    a, _clock = make_enf_api(engine, billing=BillingConfig(max_body_bytes=16 * 1024))
    headers = {**a.h(row.role), "content-type": "application/json", **row.headers}
    r = a.client.request(row.method, row.path, content=row.body, headers=headers)
    assert r.status_code == row.status, r.text
    if row.loc is not None:
        locs = [d["loc"] for d in r.json()["detail"]]
        assert any(loc[-1] == row.loc for loc in locs), locs
    assert _count(engine, UsageEvent) == 0 and _count(engine, GpuSample) == 0


def test_streamed_body_over_limit_is_413_before_parsing(engine: Engine) -> None:
    a, _clock = make_enf_api(engine, billing=BillingConfig(max_body_bytes=4096))

    def chunks() -> Iterator[bytes]:
        yield b"["
        for i in range(100):
            yield (raw(event(i)) + ",").encode()
        yield raw(event(100)).encode() + b"]"

    r = a.client.post("/v1/usage", content=chunks(), headers=a.h("ingest"))
    assert r.status_code == 413 and "4096" in r.json()["detail"]
    assert _count(engine, UsageEvent) == 0


def test_last_admin_key_cannot_be_revoked(engine: Engine) -> None:
    a, _clock = make_enf_api(engine)
    admin_prefix = a.keys["admin"].split("_")[1]
    r = a.client.delete(f"/v1/keys/{admin_prefix}", headers=a.h("admin"))
    assert r.status_code == 409 and "last live admin key" in r.json()["detail"]
    r = a.client.post("/v1/keys", json={"name": "a2", "role": "admin"}, headers=a.h("admin"))
    assert r.status_code == 201
    assert a.client.delete(f"/v1/keys/{admin_prefix}", headers=a.h("admin")).status_code == 204
    assert a.client.get("/v1/keys", headers=a.h("admin")).status_code == 401


def test_listed_key_timestamps_carry_a_time_zone(engine: Engine) -> None:
    a, _clock = make_enf_api(engine)
    a.client.delete(f"/v1/keys/{a.keys['read'].split('_')[1]}", headers=a.h("admin"))
    keys = a.client.get("/v1/keys", headers=a.h("admin")).json()
    stamps = [k["created_at"] for k in keys] + [k["revoked_at"] for k in keys if k["revoked_at"]]
    assert len(stamps) == 5
    assert all(s.endswith(("Z", "+00:00")) for s in stamps), stamps


def test_unknown_filter_value_is_told_apart_from_no_spend(engine: Engine) -> None:
    a, _clock = make_enf_api(engine)
    assert a.client.post("/v1/usage", json=[event(0)], headers=a.h("ingest")).status_code == 200
    window = "2026-11-23T00:00:00Z,2026-11-24T00:00:00Z"
    seen = a.client.get(f"/v1/costs?window={window}&customer=acme", headers=a.h("read")).json()
    assert seen["rows"] == [] and seen["unknown"] == {}  # seen, but no ledger yet: no spend
    r = a.client.get(f"/v1/costs?window={window}&customer=nope&model=llama", headers=a.h("read"))
    assert r.status_code == 200 and r.json()["unknown"] == {"customer": ["nope"]}


def test_openapi_declares_keys_and_error_responses(engine: Engine) -> None:
    a, _clock = make_enf_api(engine)
    doc = a.client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert (schemes["APIKeyHeader"]["in"], schemes["APIKeyHeader"]["name"]) == (
        "header",
        "X-API-Key",
    )
    ops = {(m, p): op for p, item in doc["paths"].items() for m, op in item.items()}
    assert all(
        {"401", "403", "422"} <= set(op["responses"]) for op in ops.values() if op.get("security")
    )
    assert len([op for op in ops.values() if op.get("security")]) >= 20
    assert "409" in ops[("delete", "/v1/keys/{prefix}")]["responses"]
    assert "413" in ops[("post", "/v1/usage")]["responses"]
    assert "201" in ops[("put", "/v1/budgets/{name}")]["responses"]
    assert "201" in ops[("post", "/v1/keys")]["responses"]
    rows = doc["components"]["schemas"]["CostsResponse"]["properties"]["rows"]
    assert rows["items"] == {"$ref": "#/components/schemas/CostRow"}
    rejected = doc["components"]["schemas"]["IngestResult"]["properties"]["rejected"]
    assert rejected["items"] == {"$ref": "#/components/schemas/RejectedEvent"}


def test_revoked_key_stops_authorizing_at_once_in_the_revoking_worker(engine: Engine) -> None:
    a, _clock = make_enf_api(engine)
    body = {"customer": "c", "model": "m", "request_type": "r", "estimated_tokens": 5}
    r = a.client.post("/v1/authorize", json=body, headers=a.h("ingest"))
    assert r.status_code == 200  # the key is now in the hot path's cache (KEY_CACHE_S = 1 s)
    prefix = a.keys["ingest"].split("_")[1]
    assert a.client.delete(f"/v1/keys/{prefix}", headers=a.h("admin")).status_code == 204
    assert a.client.post("/v1/authorize", json=body, headers=a.h("ingest")).status_code == 401
