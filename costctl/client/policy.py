"""What the sync and async clients share: request bodies, retry and batching rules, counters.

No I/O here: the clients in costctl.client.sync and costctl.client.aio do the sending.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

import httpx

# 5xx, 429 (rate limited) and 408 are worth retrying; other 4xx mean the batch itself is bad
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class DeliveryError(RuntimeError):
    """Usage events that could not be delivered (``events``: still unsent, in order)."""

    def __init__(self, msg: str, events: list[dict[str, Any]]) -> None:
        super().__init__(msg)
        self.events = events


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``base_s * 2**attempt``, capped at ``max_s``, ``attempts`` tries."""

    attempts: int = 6
    base_s: float = 0.05
    max_s: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt + 1`` (attempt counts from 0)."""
        return float(min(self.max_s, self.base_s * 2**attempt))


@dataclass(frozen=True)
class BatchPolicy:
    """Flush when ``max_events`` are queued or the oldest waited ``max_age_s``; at most
    ``max_queue`` events held (``add`` waits when full)."""

    max_events: int = 1000
    max_age_s: float = 0.2
    max_queue: int = 100_000

    def __post_init__(self) -> None:
        if not 1 <= self.max_events <= self.max_queue:
            raise ValueError("need 1 <= max_events <= max_queue")
        if self.max_age_s <= 0:
            raise ValueError("max_age_s must be > 0")


@dataclass
class UsageStats:
    """What a batcher did: posts (tries included), retries, server counts."""

    posts: int = 0
    retries: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, doc: dict[str, Any]) -> None:
        """Count one acknowledged batch (an IngestResult body)."""
        self.inserted += int(doc.get("inserted", 0))
        self.duplicates += int(doc.get("duplicates", 0))
        self.rejected += len(doc.get("rejected", ()))


def authorize_body(
    customer: str,
    model: str,
    estimated_tokens: int,
    *,
    request_type: str = "chat",
    priority: str = "normal",
    estimated_input_tokens: int = 0,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The POST /v1/authorize body."""
    return {
        "customer": customer,
        "model": model,
        "request_type": request_type,
        "estimated_tokens": estimated_tokens,
        "estimated_input_tokens": estimated_input_tokens,
        "priority": priority,
        "request_id": request_id or uuid.uuid4().hex,
    }


def retryable(exc: BaseException | None, response: httpx.Response | None) -> bool:
    """A connection error, a timeout, or a status in RETRY_STATUS."""
    if exc is not None:
        return isinstance(exc, httpx.TransportError)
    return response is not None and response.status_code in RETRY_STATUS


def give_up(exc: BaseException | None, response: httpx.Response | None) -> NoReturn:
    """Raise the connection error, or the response's HTTPStatusError."""
    if exc is not None:
        raise exc
    assert response is not None
    response.raise_for_status()
    raise httpx.HTTPStatusError("unexpected status", request=response.request, response=response)


def checked(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a 2xx; httpx.HTTPStatusError otherwise."""
    response.raise_for_status()
    doc: dict[str, Any] = response.json()
    return doc


def headers(key: str | None) -> dict[str, str]:
    """Bearer auth when a key is given."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def usage_event(
    event_id: str,
    *,
    customer: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    request_type: str = "chat",
    source: str = "gateway",
    time: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One usage event; ``event_id`` is the reservation id when the request was authorized."""
    return {
        "id": event_id,
        "source": source,
        "time": (time or datetime.now(UTC)).isoformat(),
        "model": model,
        "customer": customer,
        "request_type": request_type,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        **extra,
    }
