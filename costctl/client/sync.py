"""The blocking client: Costctl and its UsageBatcher (a sender thread; see costctl.client)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from costctl.client.policy import (
    BatchPolicy,
    DeliveryError,
    RetryPolicy,
    UsageStats,
    authorize_body,
    checked,
    give_up,
    headers,
    retryable,
    usage_event,
)


class Costctl:
    """One API base URL and key over a pooled httpx.Client; use ``with``."""

    def __init__(
        self,
        base_url: str,
        key: str | None = None,
        *,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.http = httpx.Client(
            base_url=base_url, headers=headers(key), timeout=timeout_s, transport=transport
        )

    def __enter__(self) -> Costctl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (close batchers first)."""
        self.http.close()

    def authorize(self, customer: str, model: str, estimated_tokens: int, **kw: Any) -> Any:
        """POST /v1/authorize; the AuthorizeOut body (``allowed``, ``reservation_id``, ...)."""
        body = authorize_body(customer, model, estimated_tokens, **kw)
        return checked(self.http.post("/v1/authorize", json=body))

    def release(self, reservation_id: str) -> bool:
        """Give back a reservation whose request never ran; False if none was held."""
        r = self.http.post(f"/v1/reservations/{reservation_id}/release")
        if r.status_code == 404:
            return False
        r.raise_for_status()
        return True

    def settle(self, reservation_id: str, **event: Any) -> Any:
        """Post the request's usage event (``id = reservation_id``) now; the IngestResult."""
        return self.post_usage([usage_event(reservation_id, **event)])

    def post_usage(self, events: list[dict[str, Any]], stats: UsageStats | None = None) -> Any:
        """POST /v1/usage?partial=true, retried with backoff on connection errors and 5xx.

        Every try sends the same event ids, so the server stores each event once.
        """
        stats = stats if stats is not None else UsageStats()
        for attempt in range(self.retry.attempts):
            exc: BaseException | None = None
            r: httpx.Response | None = None
            stats.posts += 1
            try:
                r = self.http.post("/v1/usage", params={"partial": "true"}, json=events)
            except httpx.TransportError as e:
                exc = e
            if exc is None and r is not None and r.is_success:
                doc = r.json()
                stats.add(doc)
                return doc
            if not retryable(exc, r) or attempt + 1 == self.retry.attempts:
                give_up(exc, r)
            stats.retries += 1
            time.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable")

    def usage_batcher(
        self, *, max_events: int = 1000, max_age_s: float = 0.2, max_queue: int = 100_000
    ) -> UsageBatcher:
        """A batcher posting through this client from one sender thread."""
        return UsageBatcher(self, BatchPolicy(max_events, max_age_s, max_queue))


class UsageBatcher:
    """Queue usage events, post them in batches from a sender thread; ``close()`` flushes.

    Details: a batch leaves when ``max_events`` are queued or the oldest has waited
    ``max_age_s``; ``add`` blocks while ``max_queue`` events are queued or in flight. A batch
    that still fails after the client's retries is kept and reported by ``close``
    (DeliveryError) with its events.
    """

    def __init__(self, client: Costctl, policy: BatchPolicy) -> None:
        self.client, self.policy = client, policy
        self.stats = UsageStats()
        self.failed: list[dict[str, Any]] = []
        self._buf: list[dict[str, Any]] = []
        self._oldest = 0.0
        self._held = 0
        self._force = False
        self._closed = False
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="costctl-usage", daemon=True)
        self._thread.start()

    def add(self, event: dict[str, Any]) -> None:
        """Queue one event (blocks while the queue is full)."""
        with self._cv:
            if self._closed:
                raise RuntimeError("batcher is closed")
            self._cv.wait_for(lambda: self._held < self.policy.max_queue)
            if not self._buf:
                self._oldest = time.monotonic()
            self._buf.append(event)
            self._held += 1
            if len(self._buf) == 1 or len(self._buf) >= self.policy.max_events:
                self._cv.notify_all()

    def _due(self) -> bool:
        if not self._buf:
            return False
        return (
            self._force
            or self._closed
            or len(self._buf) >= self.policy.max_events
            or time.monotonic() >= self._oldest + self.policy.max_age_s
        )

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._due():
                    if self._closed and not self._buf:
                        return
                    wait = self._oldest + self.policy.max_age_s - time.monotonic()
                    self._cv.wait(wait if self._buf else None)
                n = self.policy.max_events
                batch, self._buf = self._buf[:n], self._buf[n:]
                self._force = self._force and bool(self._buf)
            try:
                self.client.post_usage(batch, self.stats)
            except (httpx.HTTPError, ValueError) as exc:
                self.stats.errors.append(repr(exc))
                self.failed.extend(batch)
            with self._cv:
                self._held -= len(batch)
                self._cv.notify_all()

    def flush(self) -> None:
        """Post what is queued now and wait until nothing is queued or in flight."""
        with self._cv:
            self._force = True
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._held == 0)

    def close(self) -> None:
        """Flush, stop the sender; DeliveryError if any event was not delivered."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()
        if self.failed:
            raise DeliveryError(f"{len(self.failed)} usage events not delivered", self.failed)

    def __enter__(self) -> UsageBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
