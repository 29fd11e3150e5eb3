"""POST/GET /v1/allocations: idempotent on the natural key, 422 naming the field, roles."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing.models import Allocation, table_of
from tests.utils.api import make_api


def alloc(**over: Any) -> dict[str, Any]:
    """A valid observed allocation as JSON."""
    a: dict[str, Any] = {
        "device_uuid": "MIG-0001",
        "gpu_uuid": "GPU-aaaa",
        "node": "gpu-node-a",
        "namespace": "serving",
        "pod": "llama-7d9f-x2",
        "container": "server",
        "pod_uid": "0b7a1c2e-0000-4000-8000-000000000001",
        "model": "llama",
        "mode": "mig",
        "profile": "3g.40gb",
        "fraction": 3 / 7,
        "start": "2026-11-23T10:00:00Z",
        "end": None,
        "source": "observed",
        "observer": "agent/gpu-node-a",
    }
    a.update(over)
    return a


def stored(engine: Engine) -> list[dict[str, Any]]:
    t = table_of(Allocation)
    with engine.connect() as c:
        return [dict(r) for r in c.execute(select(t).order_by(t.c.id)).mappings()]


def test_post_is_idempotent_and_closes_once(engine: Engine) -> None:
    api = make_api(engine)
    h = api.h("ingest")
    r = api.client.post("/v1/allocations", json=[alloc(), alloc(pod="llama-7d9f-y3")], headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 2, "inserted": 2, "updated": 0, "unchanged": 0}
    # the same batch again: nothing new
    r = api.client.post("/v1/allocations", json={"allocations": [alloc()]}, headers=h)
    assert r.json() == {"received": 1, "inserted": 0, "updated": 0, "unchanged": 1}
    # closing: the same key with an end
    r = api.client.post("/v1/allocations", json=[alloc(end="2026-11-23T11:30:00Z")], headers=h)
    assert r.json()["updated"] == 1
    # a later post without an end never re-opens it
    r = api.client.post("/v1/allocations", json=[alloc()], headers=h)
    assert r.json()["unchanged"] == 1
    rows = stored(engine)
    assert len(rows) == 2
    first = rows[0]
    assert first["pod"] == "llama-7d9f-x2" and first["source"] == "observed"
    end = first["end"] if first["end"].tzinfo else first["end"].replace(tzinfo=UTC)
    assert end == datetime(2026, 11, 23, 11, 30, tzinfo=UTC)
    assert rows[1]["end"] is None


def test_offset_times_are_stored_as_utc(engine: Engine) -> None:
    api = make_api(engine)
    r = api.client.post(
        "/v1/allocations", json=[alloc(start="2026-11-23T15:30:00+05:30")], headers=api.h("ingest")
    )
    assert r.status_code == 200
    start = stored(engine)[0]["start"]
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    assert start == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    # and the same instant written with another offset is the same key
    r = api.client.post(
        "/v1/allocations", json=[alloc(start="2026-11-23T02:00:00-08:00")], headers=api.h("ingest")
    )
    assert r.json()["unchanged"] == 1


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"fraction": 0}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
        ({"mode": "shared"}, "mode"),
        ({"start": "2026-11-23T10:00:00"}, "start"),
        ({"model": "__idle__"}, "model"),
        ({"end": "2026-11-23T09:00:00Z"}, None),
        ({"pod": ""}, "pod"),
        ({"extra": 1}, "extra"),
    ],
    ids=[
        "zero-fraction",
        "over-one",
        "bad-mode",
        "naive-time",
        "reserved",
        "end<start",
        "no-pod",
        "unknown-field",
    ],
)
def test_bad_item_rejects_the_batch(
    engine: Engine, over: dict[str, Any], field: str | None
) -> None:
    api = make_api(engine)
    r = api.client.post(
        "/v1/allocations", json=[alloc(pod="ok-pod"), alloc(**over)], headers=api.h("ingest")
    )
    assert r.status_code == 422, r.text
    loc = r.json()["detail"][0]["loc"]
    assert loc[:3] == ["body", "allocations", 1]
    if field is not None:
        assert loc[3] == field
    assert stored(engine) == []


def test_get_filters_and_roles(engine: Engine) -> None:
    api = make_api(engine)
    h = api.h("ingest")
    api.client.post(
        "/v1/allocations",
        json=[
            alloc(),
            alloc(node="gpu-node-b", pod="b", end="2026-11-23T10:30:00Z"),
            alloc(pod="planned-1", source="planned", observer="apply/p1"),
        ],
        headers=h,
    )
    got = api.client.get("/v1/allocations", params={"node": "gpu-node-a", "open": True}, headers=h)
    assert got.status_code == 200
    assert sorted(a["pod"] for a in got.json()) == ["llama-7d9f-x2", "planned-1"]
    got = api.client.get("/v1/allocations", params={"source": "observed"}, headers=h).json()
    assert sorted(a["pod"] for a in got) == ["b", "llama-7d9f-x2"]
    got = api.client.get(
        "/v1/allocations", params={"since": "2026-11-23T10:45:00Z"}, headers=h
    ).json()
    assert "b" not in {a["pod"] for a in got}
    # a tenant's read key sees no fleet internals; no key at all is 401
    assert api.client.get("/v1/allocations", headers=api.h("acme")).status_code == 403
    assert api.client.get("/v1/allocations").status_code == 401
    assert (
        api.client.post("/v1/allocations", json=[alloc()], headers=api.h("read")).status_code == 403
    )


def test_a_late_allocation_marks_its_hours_for_the_rollup(engine: Engine) -> None:
    from billing.models import DirtyHour
    from billing.models import table_of as t_of

    api = make_api(engine)
    with engine.begin() as c:  # start clean: nothing else marked
        c.execute(t_of(DirtyHour).delete())
    late = alloc(start="2026-11-20T10:30:00Z", end="2026-11-20T12:10:00Z", pod="late-pod")
    assert (
        api.client.post("/v1/allocations", json=[late], headers=api.h("ingest")).status_code == 200
    )
    with engine.connect() as c:
        hours = sorted(
            (h if h.tzinfo else h.replace(tzinfo=UTC)).hour
            for h in c.execute(select(t_of(DirtyHour).c.hour)).scalars()
        )
    assert hours == [10, 11, 12]
