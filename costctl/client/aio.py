"""The asyncio client: AsyncCostctl and its AsyncUsageBatcher (see costctl.client)."""

from __future__ import annotations

import asyncio
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


class AsyncCostctl:
    """One API base URL and key over a pooled httpx.AsyncClient; use ``async with``."""

    def __init__(
        self,
        base_url: str,
        key: str | None = None,
        *,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.http = httpx.AsyncClient(
            base_url=base_url, headers=headers(key), timeout=timeout_s, transport=transport
        )

    async def __aenter__(self) -> AsyncCostctl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (close batchers first)."""
        await self.http.aclose()

    async def authorize(self, customer: str, model: str, estimated_tokens: int, **kw: Any) -> Any:
        """POST /v1/authorize; the AuthorizeOut body (``allowed``, ``reservation_id``, ...)."""
        body = authorize_body(customer, model, estimated_tokens, **kw)
        return checked(await self.http.post("/v1/authorize", json=body))

    async def release(self, reservation_id: str) -> bool:
        """Give back a reservation whose request never ran; False if none was held."""
        r = await self.http.post(f"/v1/reservations/{reservation_id}/release")
        if r.status_code == 404:
            return False
        r.raise_for_status()
        return True

    async def settle(self, reservation_id: str, **event: Any) -> Any:
        """Post the request's usage event (``id = reservation_id``) now; the IngestResult."""
        return await self.post_usage([usage_event(reservation_id, **event)])

    async def post_usage(
        self, events: list[dict[str, Any]], stats: UsageStats | None = None
    ) -> Any:
        """POST /v1/usage?partial=true, retried with backoff on connection errors and 5xx.

        Every try sends the same event ids, so the server stores each event once.
        """
        stats = stats if stats is not None else UsageStats()
        for attempt in range(self.retry.attempts):
            exc: BaseException | None = None
            r: httpx.Response | None = None
            stats.posts += 1
            try:
                r = await self.http.post("/v1/usage", params={"partial": "true"}, json=events)
            except httpx.TransportError as e:
                exc = e
            if exc is None and r is not None and r.is_success:
                doc = r.json()
                stats.add(doc)
                return doc
            if not retryable(exc, r) or attempt + 1 == self.retry.attempts:
                give_up(exc, r)
            stats.retries += 1
            await asyncio.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable")

    def usage_batcher(
        self,
        *,
        max_events: int = 1000,
        max_age_s: float = 0.2,
        max_queue: int = 100_000,
        concurrency: int = 2,
    ) -> AsyncUsageBatcher:
        """A batcher posting through this client (create it inside the running loop)."""
        return AsyncUsageBatcher(self, BatchPolicy(max_events, max_age_s, max_queue), concurrency)


class AsyncUsageBatcher:
    """Queue usage events, post them in batches; ``await close()`` flushes the rest.

    Details: a batch leaves when ``max_events`` are queued or the oldest has waited
    ``max_age_s``; up to ``concurrency`` posts are in flight; ``add`` waits while
    ``max_queue`` events are queued or in flight. A batch that still fails after the
    client's retries is kept and reported by ``close`` (DeliveryError) with its events.
    """

    def __init__(self, client: AsyncCostctl, policy: BatchPolicy, concurrency: int = 2) -> None:
        self.client, self.policy = client, policy
        self.stats = UsageStats()
        self.failed: list[dict[str, Any]] = []
        self._buf: list[dict[str, Any]] = []
        self._held = 0
        self._gen = 0
        self._closed = False
        self._room = asyncio.Condition()
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()

    async def add(self, event: dict[str, Any]) -> None:
        """Queue one event (waits while the queue is full)."""
        if self._closed:
            raise RuntimeError("batcher is closed")
        if self._held >= self.policy.max_queue:
            async with self._room:
                await self._room.wait_for(lambda: self._held < self.policy.max_queue)
        if not self._buf:
            self._loop.call_later(self.policy.max_age_s, self._aged, self._gen)
        self._buf.append(event)
        self._held += 1
        if len(self._buf) >= self.policy.max_events:
            self._launch()

    def _aged(self, gen: int) -> None:
        if gen == self._gen and self._buf:
            self._launch()

    def _launch(self) -> None:
        batch, self._buf = self._buf, []
        self._gen += 1
        task = self._loop.create_task(self._send(batch))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        try:
            async with self._slots:
                await self.client.post_usage(batch, self.stats)
        except (httpx.HTTPError, ValueError) as exc:
            self.stats.errors.append(repr(exc))
            self.failed.extend(batch)
        finally:
            self._held -= len(batch)
            async with self._room:
                self._room.notify_all()

    async def flush(self) -> None:
        """Post what is queued now and wait for every post in flight."""
        if self._buf:
            self._launch()
        while self._inflight:
            await asyncio.gather(*list(self._inflight))

    async def close(self) -> None:
        """Flush, then refuse further events; DeliveryError if any event was not delivered."""
        await self.flush()
        self._closed = True
        if self.failed:
            raise DeliveryError(f"{len(self.failed)} usage events not delivered", self.failed)

    async def __aenter__(self) -> AsyncUsageBatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
