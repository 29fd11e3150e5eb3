"""Budgets, authorize and reconcile through the API on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.enforcement.conftest import Clock, authorize, usage
from tests.utils.api import Api


def test_budget_authorize_reconcile(api_clock: tuple[Api, Clock]) -> None:
    api, _ = api_clock
    # default price: 1.5 USD/Mtok output -> 1000 tokens = 0.0015 USD
    r = api.client.put(
        "/v1/budgets/acme-daily",
        json={"customer": "acme", "period": "daily", "limit_usd": 0.004},
        headers=api.h("admin"),
    )
    assert r.status_code == 201, r.text
    a = authorize(api)
    assert a["allowed"] is True and a["reserved_usd"] == 0.0015
    b = authorize(api)
    assert b["allowed"] is True
    c = authorize(api)  # 3 x 0.0015 = 0.0045 > 0.004
    assert c["allowed"] is False and c["reason"] == "budget_usd" and c["budget"] == "acme-daily"
    assert int(c["_headers"]["retry-after"]) == 12 * 3600  # noon -> midnight
    # settle the first with its real usage: 500 in (0.5/Mtok) + 100 out (1.5/Mtok) = 400 µUSD
    r = api.client.post(
        "/v1/usage", json=[usage(str(a["reservation_id"]), 500, 100)], headers=api.h("ingest")
    )
    assert r.status_code == 200, r.text
    burn = api.client.get("/v1/budgets/burn", headers=api.h("read")).json()
    assert burn[0]["spent_usd"] == 0.0004 and burn[0]["reserved_usd"] == 0.0015
    d = authorize(api)  # 0.0004 + 0.0015 + 0.0015 = 0.0034 <= 0.004
    assert d["allowed"] is True
