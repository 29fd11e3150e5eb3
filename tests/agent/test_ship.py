"""Shipping the spool: batching, retries with jittered backoff, 422 splitting."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest

from scheduler.agent.ship import Backoff, ShipError, Shipper
from scheduler.agent.spool import Spool


def alloc(pod: str, end: str | None = None) -> dict[str, object]:
    return {"source": "observed", "device_uuid": "GPU-1", "namespace": "s", "pod": pod,
            "container": "c", "start": "2026-11-23T10:00:00+00:00", "end": end}  # fmt: skip


class Api:
    """A scripted API: answers per call, records every request body."""

    def __init__(self, codes: list[int] | None = None, bad: set[int] | None = None) -> None:
        self.codes = codes or []
        self.bad = bad or set()
        self.calls: list[tuple[str, dict[str, object]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append((request.url.path, body))
        if self.codes:
            return httpx.Response(self.codes.pop(0), json={})
        if any(s.get("i") in self.bad for s in body.get("samples", [])):
            return httpx.Response(422, json={"detail": [{"loc": ["body", "samples", 0]}]})
        return httpx.Response(200, json={})


def shipper(tmp_path: Path, api: Api, max_samples: int = 5000) -> Shipper:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    client = httpx.Client(base_url="http://api", transport=httpx.MockTransport(api))
    return Shipper(client, spool, max_items={"samples": max_samples, "allocations": 500})


def test_consecutive_records_of_a_kind_go_in_one_request(tmp_path: Path) -> None:
    api = Api()
    s = shipper(tmp_path, api, max_samples=4)
    for i in range(3):
        s.spool.append("samples", {"samples": [{"i": i}, {"i": i}], "processes": []})
    s.spool.append("allocations", {"allocations": [alloc("a")]})
    s.spool.append("allocations", {"allocations": [alloc("a", end="2026-11-23T11:00:00+00:00")]})
    assert s.drain() == 5
    paths = [p for p, _ in api.calls]
    assert paths == ["/v1/gpu-samples", "/v1/gpu-samples", "/v1/allocations"]
    assert [len(b["samples"]) for _, b in api.calls[:2]] == [4, 2]  # 4 items per request
    (a,) = api.calls[2][1]["allocations"]  # type: ignore[misc]
    assert a["end"] == "2026-11-23T11:00:00+00:00"  # one row per key: the close wins
    assert s.spool.depth() == (0, 0)


@pytest.mark.parametrize("code", [500, 503, 429, 401, 404])
def test_a_failed_request_keeps_the_records(tmp_path: Path, code: int) -> None:
    api = Api(codes=[code])
    s = shipper(tmp_path, api)
    s.spool.append("samples", {"samples": [{"i": 1}], "processes": []})
    with pytest.raises(ShipError, match=f"HTTP {code}"):
        s.drain()
    assert s.spool.depth()[0] == 1 and s.last_error
    assert s.drain() == 1 and s.spool.depth()[0] == 0 and s.last_error is None


def test_connection_errors_keep_the_records(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    s = Shipper.create(spool, "http://127.0.0.1:9", "k", timeout_s=2)  # discard port: refused
    spool.append("samples", {"samples": [], "processes": []})
    with pytest.raises(ShipError, match="ConnectError"):
        s.drain()
    assert spool.depth()[0] == 1


def test_a_refused_record_is_split_out_dropped_and_counted(tmp_path: Path) -> None:
    api = Api(bad={2})
    s = shipper(tmp_path, api)
    for i in range(4):
        s.spool.append("samples", {"samples": [{"i": i}], "processes": []})
    assert s.drain() == 4
    stored = [b["samples"][0]["i"] for _, b in api.calls[1:] if b["samples"]]  # type: ignore[index]
    assert stored == [0, 1, 2, 3] and s.spool.dropped == 1  # 2 was refused alone
    assert s.spool.depth() == (0, 0)


def test_backoff_is_jittered_exponential_and_capped() -> None:
    b = Backoff(base_s=1.0, max_s=8.0, rng=random.Random(1))
    caps = [1, 2, 4, 8, 8, 8]
    delays = [b.next_delay() for _ in caps]
    assert all(0 <= d <= c for d, c in zip(delays, caps, strict=True))
    assert len(set(delays)) == len(delays)  # jitter: no two alike
    b.reset()
    assert b.next_delay() <= 1.0
