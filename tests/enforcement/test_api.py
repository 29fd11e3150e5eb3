"""The enforcement API on SQLite and PostgreSQL: CRUD, roles, tenant scope, 422s, kill/revive,
reconcile through the usage hook, rate limits, audit and metrics."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from billing.enforcement.api import ENFORCER
from billing.enforcement.config import EnforcementConfig
from billing.enforcement.jobs import evaluate_budgets
from billing.enforcement.service import Enforcer
from tests.enforcement.conftest import Clock, FakeScaler, authorize, make_enf_api, usage
from tests.utils.api import Api

ApiClock = tuple[Api, Clock]


def _put(api: Api, name: str, **body: object) -> int:
    r = api.client.put(f"/v1/budgets/{name}", json=body, headers=api.h("admin"))
    assert r.status_code in (200, 201), r.text
    return r.status_code


def _enf(api: Api) -> Enforcer:
    enf: Enforcer = api.client.app.state.costctl.extras[ENFORCER]  # type: ignore[attr-defined]
    return enf


def test_budget_crud_and_roles(api_clock: ApiClock) -> None:
    api, _ = api_clock
    body = {"customer": "acme", "period": "monthly", "limit_usd": 100, "action": "throttle"}
    r = api.client.put("/v1/budgets/acme", json=body, headers=api.h("ingest"))
    assert r.status_code == 403
    assert _put(api, "acme", **body) == 201
    assert _put(api, "acme", **{**body, "limit_usd": 120}) == 200
    _put(api, "globex", customer="globex", period="daily", limit_tokens=10_000)
    listed = api.client.get("/v1/budgets", headers=api.h("read")).json()
    assert [(b["name"], b["limit_usd"]) for b in listed] == [("acme", 120.0), ("globex", None)]
    # a tenant read key sees only its own customer's budgets and burn
    mine = api.client.get("/v1/budgets", headers=api.h("acme")).json()
    assert [b["name"] for b in mine] == ["acme"]
    burn = api.client.get("/v1/budgets/burn", headers=api.h("acme")).json()
    assert [b["name"] for b in burn] == ["acme"]
    assert api.client.delete("/v1/budgets/acme", headers=api.h("read")).status_code == 403
    assert api.client.delete("/v1/budgets/acme", headers=api.h("admin")).status_code == 204
    assert api.client.delete("/v1/budgets/acme", headers=api.h("admin")).status_code == 404
    actions = [a["action"] for a in api.client.get("/v1/audit", headers=api.h("admin")).json()]
    assert actions[:4] == ["budget.delete", "budget.create", "budget.update", "budget.create"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"period": "daily"}, ["body"]),  # no limit at all
        ({"period": "hourly", "limit_usd": 1}, ["body", "period"]),
        ({"period": "daily", "limit_usd": -1}, ["body", "limit_usd"]),
        ({"period": "daily", "limit_usd": 1, "soft_ratio": 1.5}, ["body", "soft_ratio"]),
        ({"period": "daily", "limit_usd": 1, "action": "explode"}, ["body", "action"]),
        (
            {"period": "daily", "limit_usd": 1, "action": "kill", "customer": "a", "model": "m"},
            ["body"],
        ),
        ({"period": "daily", "limit_usd": 1, "customer": "__idle__"}, ["body", "customer"]),
        ({"period": "daily", "limit_usd": 1, "colour": "red"}, ["body", "colour"]),
    ],
    ids=[
        "no-limit",
        "bad-period",
        "negative",
        "soft>1",
        "bad-action",
        "kill-2-dims",
        "reserved-name",
        "unknown-field",
    ],
)
def test_bad_budgets_are_422(api_clock: ApiClock, body: dict[str, object], loc: list[str]) -> None:
    api, _ = api_clock
    r = api.client.put("/v1/budgets/x", json=body, headers=api.h("admin"))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][: len(loc)] == loc


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"estimated_tokens": 0}, ["body", "estimated_tokens"]),
        ({"estimated_tokens": "lots"}, ["body", "estimated_tokens"]),
        ({"priority": "urgent"}, ["body", "priority"]),
        ({"customer": ""}, ["body", "customer"]),
        ({"estimated_input_tokens": 5000}, ["body"]),  # more input than total
    ],
    ids=["zero", "not-int", "priority", "empty-customer", "input>total"],
)
def test_bad_authorize_is_422(api_clock: ApiClock, body: dict[str, object], loc: list[str]) -> None:
    api, _ = api_clock
    req = {"customer": "acme", "model": "m", "request_type": "chat", "estimated_tokens": 1000}
    r = api.client.post("/v1/authorize", json={**req, **body}, headers=api.h("ingest"))
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][: len(loc)] == loc


def test_authorize_needs_ingest_role(api_clock: ApiClock) -> None:
    api, _ = api_clock
    req = {"customer": "acme", "model": "m", "request_type": "chat", "estimated_tokens": 1}
    assert api.client.post("/v1/authorize", json=req).status_code == 401
    assert api.client.post("/v1/authorize", json=req, headers=api.h("read")).status_code == 403


def test_resent_usage_is_counted_once_and_unreserved_usage_counts(api_clock: ApiClock) -> None:
    api, _ = api_clock
    _put(api, "acme", customer="acme", period="daily", limit_usd=1)
    a = authorize(api, request_id="req-1")
    assert a["reservation_id"] == "req-1"
    # the same request_id again does not reserve twice
    assert authorize(api, request_id="req-1")["allowed"] is True
    ev = [usage("req-1", 1000, 1000), usage("no-reservation", 2000, 0)]
    for _ in range(2):
        assert api.client.post("/v1/usage", json=ev, headers=api.h("ingest")).status_code == 200
    burn = api.client.get("/v1/budgets/burn", headers=api.h("admin")).json()[0]
    # 1000 * 0.5 + 1000 * 1.5 = 2000 µUSD; 2000 * 0.5 = 1000 µUSD
    assert burn["spent_usd"] == pytest.approx(0.003)
    assert burn["reserved_usd"] == 0
    assert (
        _enf(api).reservations.levels(_enf(api).policy().budgets, Clock()())[1].spent_micros == 3000
    )


def test_release_and_expiry_give_reservations_back(api_clock: ApiClock) -> None:
    api, clock = api_clock
    _put(api, "acme", customer="acme", period="daily", limit_usd=0.003)
    a, b = authorize(api), authorize(api)  # 2 x 1500 µUSD: full
    assert authorize(api)["allowed"] is False
    r = api.client.post(f"/v1/reservations/{a['reservation_id']}/release", headers=api.h("ingest"))
    assert r.status_code == 204
    r = api.client.post(f"/v1/reservations/{a['reservation_id']}/release", headers=api.h("ingest"))
    assert r.status_code == 404
    assert authorize(api)["allowed"] is True
    assert b["expires_at"] is not None
    clock.now += timedelta(seconds=301)  # past reservation_ttl_s: the job releases both
    report = evaluate_budgets(_enf(api), clock.now)
    assert report.expired == 2
    assert authorize(api)["allowed"] is True


def test_kill_switch_denies_at_once_and_scales_to_zero(
    api_clock: ApiClock, scaler: FakeScaler
) -> None:
    api, _ = api_clock
    assert authorize(api)["allowed"] is True
    body = {"scope": "model", "target": "llama-70b", "reason": "runaway loop"}
    assert (
        api.client.post("/v1/killswitches", json=body, headers=api.h("ingest")).status_code == 403
    )
    r = api.client.post("/v1/killswitches", json=body, headers=api.h("admin"))
    assert r.status_code == 201, r.text
    assert r.json()["previous_replicas"] == 3
    assert scaler.replicas["llama-70b"] == 0
    d = authorize(api)
    assert (d["allowed"], d["reason"], d["retry_after_s"]) == (
        False,
        "killed:model:llama-70b",
        None,
    )
    assert authorize(api, model="mistral")["allowed"] is True
    # a second kill is a no-op (200) and does not overwrite the remembered replicas
    assert api.client.post("/v1/killswitches", json=body, headers=api.h("admin")).status_code == 200
    assert scaler.calls == [("llama-70b", 0)]
    r = api.client.post(
        "/v1/killswitches/model/llama-70b/revive", json={"reason": "fixed"}, headers=api.h("admin")
    )
    assert r.status_code == 200 and r.json()["active"] is False
    assert scaler.replicas["llama-70b"] == 3
    assert authorize(api)["allowed"] is True
    audit = api.client.get("/v1/audit", headers=api.h("admin")).json()
    assert [(a["action"], a["actor"]) for a in audit[:4]] == [
        ("scale", "ops"),
        ("revive", "ops"),
        ("scale", "ops"),
        ("kill", "ops"),
    ]
    assert audit[3]["reason"] == "runaway loop" and audit[3]["subject"] == "model:llama-70b"
    r = api.client.post(
        "/v1/killswitches/model/llama-70b/revive", json={"reason": "x"}, headers=api.h("admin")
    )
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("scope", "target", "req"),
    [
        ("customer", "acme", {}),
        ("request_type", "chat", {}),
        ("global", "*", {"customer": "globex", "model": "m", "request_type": "embed"}),
    ],
)
def test_kill_scopes(api_clock: ApiClock, scope: str, target: str, req: dict[str, object]) -> None:
    api, _ = api_clock
    body = {"scope": scope, "target": target, "reason": "test"}
    assert api.client.post("/v1/killswitches", json=body, headers=api.h("admin")).status_code == 201
    assert authorize(api, **req)["reason"] == f"killed:{scope}:{target}"


def test_bad_kill_is_422(api_clock: ApiClock) -> None:
    api, _ = api_clock
    for body, loc in [
        ({"scope": "model", "target": "x"}, ["body", "reason"]),
        ({"scope": "planet", "target": "x", "reason": "r"}, ["body", "scope"]),
        ({"scope": "customer", "reason": "r"}, ["body"]),
    ]:
        r = api.client.post("/v1/killswitches", json=body, headers=api.h("admin"))
        assert r.status_code == 422, body
        assert r.json()["detail"][0]["loc"][: len(loc)] == loc


def test_kill_action_budget_trips_the_switch(api_clock: ApiClock, scaler: FakeScaler) -> None:
    api, _ = api_clock
    _put(api, "llama-cap", model="llama-70b", period="daily", limit_usd=0.002, action="kill")
    assert authorize(api)["allowed"] is True
    d = authorize(api)
    assert (d["allowed"], d["reason"]) == (False, "budget_usd")
    assert scaler.replicas["llama-70b"] == 0
    assert authorize(api)["reason"] == "killed:model:llama-70b"
    ks = api.client.get("/v1/killswitches", headers=api.h("admin")).json()
    assert ks[0]["actor"] == "budget:llama-cap"


def test_rate_limit_and_shedding(api_clock: ApiClock) -> None:
    api, _ = api_clock
    r = api.client.put(
        "/v1/rate-limits/per-customer",
        json={"rpm": 10, "per": ["customer"]},
        headers=api.h("admin"),
    )
    assert r.status_code == 201, r.text
    # frozen clock: no refill. low keeps 50% (5) back: 5 low requests pass, the 6th is shed
    lows = [authorize(api, priority="low")["allowed"] for _ in range(6)]
    assert lows == [True] * 5 + [False]
    # normal keeps 20% (2) back: 3 more pass; high then takes the last 2
    normals = [authorize(api, priority="normal")["allowed"] for _ in range(4)]
    assert normals == [True, True, True, False]
    highs = [authorize(api, priority="high") for _ in range(3)]
    assert [h["allowed"] for h in highs] == [True, True, False]
    assert highs[2]["reason"].startswith("rate_limited_requests")
    assert int(highs[2]["_headers"]["retry-after"]) == 6  # 1 token at 10/60 per s
    # another customer has its own bucket
    assert authorize(api, customer="globex", priority="low")["allowed"] is True
    r = api.client.put("/v1/rate-limits/x", json={"per": ["colour"]}, headers=api.h("admin"))
    assert r.status_code == 422


def test_throttle_budget(api_clock: ApiClock, engine: Engine) -> None:
    api, _ = api_clock
    cfg = _enf(api).config
    assert cfg.throttle_rpm == 60
    _put(api, "t", customer="acme", period="daily", limit_usd=1, soft_ratio=0.5, action="throttle")
    ev = [usage("big", 0, 400_000)]  # 400000 * 1.5 = 0.6 USD > 50% of 1 USD
    assert api.client.post("/v1/usage", json=ev, headers=api.h("ingest")).status_code == 200
    results = [authorize(api, estimated_tokens=10)["allowed"] for _ in range(61)]
    assert results == [True] * 60 + [False]  # the throttle bucket holds 60 at a frozen clock


def test_metrics(api_clock: ApiClock) -> None:
    api, _ = api_clock
    _put(api, "acme", customer="acme", period="daily", limit_usd=0.0015)
    authorize(api)
    authorize(api)
    api.client.post(
        "/v1/killswitches",
        json={"scope": "customer", "target": "globex", "reason": "r"},
        headers=api.h("admin"),
    )
    text = api.client.get("/metrics").text
    assert 'costctl_authorize_decisions_total{outcome="allow",reason="ok"} 1.0' in text
    assert 'costctl_authorize_decisions_total{outcome="deny",reason="budget_usd"} 1.0' in text
    assert "costctl_reservations_in_flight 1.0" in text
    assert "costctl_kill_switches_active 1.0" in text


@pytest.mark.parametrize("named", [False, True], ids=["default-no-customers", "opt-in"])
def test_metrics_name_no_customer_unless_asked(engine: Engine, named: bool) -> None:
    api, _ = make_enf_api(engine, config=EnforcementConfig(metrics_customer_labels=named))
    r = api.client.put(
        "/v1/rate-limits/per-tenant",
        json={"rpm": 100, "per": ["customer"]},
        headers=api.h("admin"),
    )
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    authorize(api, customer="acme")
    authorize(api, customer="acme")
    authorize(api, customer="globex")
    text = api.client.get("/metrics").text
    levels = [ln for ln in text.splitlines() if ln.startswith("costctl_bucket_level{")]
    if named:
        assert any(f'bucket="rl:{rid}:req:customer=acme"' in ln for ln in levels)
        assert any("customer=globex" in ln for ln in levels)
    else:
        assert "acme" not in text and "globex" not in text
        # one series per rule: the lowest level among its customers (acme spent 2 of 100)
        (req,) = [ln for ln in levels if f'"rl:{rid}:req:customer=*"' in ln]
        assert float(req.rsplit(" ", 1)[1]) == pytest.approx(98.0, abs=0.1)
