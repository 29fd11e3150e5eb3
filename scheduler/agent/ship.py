"""Shipping the spool to the API: batches, exponential backoff with jitter, 4xx handling.

Consecutive records of one kind go in one POST (``/v1/gpu-samples`` for samples,
``/v1/allocations`` for allocations) up to the batch limits; a 2xx acknowledges them in the
spool. Connection errors, timeouts, 408/429/5xx, 401/403/404: keep the records, back off
(delay = uniform(0, min(max, base x 2^failures)), "full jitter"). 413/422: the batch is split
and re-sent record by record; a single record the API refuses is dropped, logged and counted.
Re-sending is safe: the API keys samples by (gpu_uuid, ts) / (device_uuid, ts, pid) and
allocations by their natural key.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from scheduler.agent.spool import Record, Spool

log = logging.getLogger(__name__)
PATHS = {"samples": "/v1/gpu-samples", "allocations": "/v1/allocations"}
SPLIT = {413, 422}


class ShipError(RuntimeError):
    """The API could not be reached or refused the request."""


@dataclass
class Backoff:
    """Full-jitter exponential backoff: uniform(0, min(max_s, base_s x 2^failures))."""

    base_s: float = 0.5
    max_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        """Record a failure; the seconds to wait before the next try."""
        cap = min(self.max_s, self.base_s * 2**self.failures)
        self.failures = min(self.failures + 1, 32)
        return self.rng.uniform(0, cap)

    def reset(self) -> None:
        """A success: start from ``base_s`` again."""
        self.failures = 0


def _merge(kind: str, bodies: Sequence[Any]) -> dict[str, Any]:
    if kind == "samples":
        return {
            "samples": [s for b in bodies for s in b.get("samples", [])],
            "processes": [p for b in bodies for p in b.get("processes", [])],
        }
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for b in bodies:
        for a in b["allocations"]:
            k = (
                a["source"],
                a["device_uuid"],
                a["namespace"],
                a["pod"],
                a["container"],
                a["start"],
            )
            if k not in latest or a.get("end") is not None:
                latest[k] = a  # one row per natural key per request; a close wins
    return {"allocations": list(latest.values())}


def _size(kind: str, body: Any) -> int:
    if kind == "samples":
        return len(body.get("samples", [])) + len(body.get("processes", []))
    return len(body.get("allocations", []))


@dataclass
class Shipper:
    """Drains a Spool to the API through one httpx client."""

    client: httpx.Client
    spool: Spool
    max_items: dict[str, int] = field(default_factory=lambda: {"samples": 5000, "allocations": 500})
    backoff: Backoff = field(default_factory=Backoff)
    on_success: Callable[[], None] | None = None
    last_error: str | None = None

    @classmethod
    def create(cls, spool: Spool, api_url: str, api_key: str, timeout_s: float) -> Shipper:
        """A shipper with an ``Authorization: Bearer`` client on ``api_url``."""
        client = httpx.Client(
            base_url=api_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
        )
        return cls(client, spool)

    def _group(self, records: list[Record]) -> list[Record]:
        first = records[0]
        group = [first]
        total = _size(first.kind, first.body)
        for r in records[1:]:
            n = _size(r.kind, r.body)
            if r.kind != first.kind or total + n > self.max_items.get(r.kind, 1000):
                break
            group.append(r)
            total += n
        return group

    def _post(self, kind: str, body: dict[str, Any]) -> int:
        try:
            resp = self.client.post(PATHS[kind], json=body)
        except httpx.HTTPError as exc:
            raise ShipError(f"POST {PATHS[kind]}: {type(exc).__name__}: {exc}") from exc
        if resp.is_success or resp.status_code in SPLIT:
            return resp.status_code
        raise ShipError(f"POST {PATHS[kind]}: HTTP {resp.status_code} {resp.text[:200]}")

    def _send(self, group: list[Record]) -> None:
        """Post one group; split on 413/422. Raises: ShipError (records stay spooled)."""
        if group[0].kind not in PATHS:
            self.spool.count_dropped(len(group))
            self.spool.ack(group[-1])
            return
        code = self._post(group[0].kind, _merge(group[0].kind, [r.body for r in group]))
        if code not in SPLIT:
            self.spool.ack(group[-1])
            return
        if len(group) > 1:
            for r in group:
                self._send([r])
            return
        log.error("API refused a spooled %s record (HTTP %d): dropped", group[0].kind, code)
        self.spool.count_dropped(1)
        self.spool.ack(group[0])

    def drain(self, max_requests: int = 1000) -> int:
        """Ship until the spool is empty; returns records acknowledged. Raises: ShipError."""
        acked = 0
        for _ in range(max_requests):
            records = self.spool.peek(256)
            if not records:
                break
            group = self._group(records)
            try:
                self._send(group)
            except ShipError as exc:
                self.last_error = str(exc)
                raise
            acked += len(group)
            self.backoff.reset()
            self.last_error = None
            if self.on_success is not None:
                self.on_success()
        return acked

    def open_allocations(self, node: str, observer: str) -> list[dict[str, Any]]:
        """This agent's open observed allocations from ``GET /v1/allocations``.

        Raises: ShipError when the API cannot answer.
        """
        try:
            resp = self.client.get(
                "/v1/allocations",
                params={"node": node, "open": "true", "source": "observed", "limit": 10_000},
            )
        except httpx.HTTPError as exc:
            raise ShipError(f"GET /v1/allocations: {type(exc).__name__}: {exc}") from exc
        if not resp.is_success:
            raise ShipError(f"GET /v1/allocations: HTTP {resp.status_code} {resp.text[:200]}")
        body: Any = resp.json()
        items: list[dict[str, Any]] = (
            body.get("allocations") or body.get("items") or [] if isinstance(body, dict) else body
        )
        return [
            a
            for a in items
            if a.get("source") == "observed" and a.get("observer") == observer and not a.get("end")
        ]
