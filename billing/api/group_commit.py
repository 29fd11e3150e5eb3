"""Group commit for POST /v1/usage: concurrent posts of one worker share one transaction.

While one group is being stored (in the thread pool), the posts that arrive queue up; when
it finishes, everything queued (up to ``max_events``) goes as the next group: one ingest
transaction, then one call of the usage hooks (enforcement's settle) for all its events.
Each post is answered only after its group's commit and hooks, with its own
received/inserted/duplicates, so an ack still means "durable" and re-sends stay idempotent.
A post that arrives while nothing is running is stored at once (no added wait).
If a group's transaction fails, its posts are retried one by one so only the bad one fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine

from billing.ingest import ingest_usage_groups
from billing.schemas import IngestResult, UsageEventIn

log = logging.getLogger(__name__)

Hook = Callable[[list[UsageEventIn]], None]


class GroupCommit:
    """One per worker (event loop): ``await submit(events)`` -> that post's IngestResult."""

    def __init__(self, engine: Engine, hooks: Sequence[Hook], max_events: int) -> None:
        self.engine, self.hooks, self.max_events = engine, hooks, max_events
        self._queue: list[tuple[list[UsageEventIn], asyncio.Future[IngestResult]]] = []
        self._draining = False
        self.groups = 0  # groups stored (a test and /metrics-free diagnostic)

    async def submit(self, events: list[UsageEventIn]) -> IngestResult:
        """Store ``events`` with whatever else is queued; returns after commit and hooks."""
        fut: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queue.append((events, fut))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    def _take(self) -> list[tuple[list[UsageEventIn], asyncio.Future[IngestResult]]]:
        n, size = 0, 0
        for events, _ in self._queue:
            if n and size + len(events) > self.max_events:
                break
            n, size = n + 1, size + len(events)
        group, self._queue = self._queue[:n], self._queue[n:]
        return group

    async def _drain(self) -> None:
        try:
            while self._queue:
                group = self._take()
                try:
                    results: list[Any] = await run_in_threadpool(
                        self._store, [events for events, _ in group]
                    )
                except Exception as exc:
                    results = [exc] * len(group)
                for (_, fut), res in zip(group, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(res, BaseException):
                        fut.set_exception(res)
                    else:
                        fut.set_result(res)
        finally:
            self._draining = False

    def _store(self, batches: list[list[UsageEventIn]]) -> list[IngestResult | Exception]:
        """One transaction for all; if it fails, each batch alone. Then the hooks, once."""
        results: list[IngestResult | Exception]
        try:
            results = list(ingest_usage_groups(self.engine, batches))
        except Exception:
            if len(batches) == 1:
                raise
            results = []
            for b in batches:
                try:
                    results.append(ingest_usage_groups(self.engine, [b])[0])
                except Exception as exc:
                    results.append(exc)
        self.groups += 1
        stored = [
            e
            for b, r in zip(batches, results, strict=True)
            if not isinstance(r, Exception)
            for e in b
        ]
        for hook in self.hooks:
            try:
                hook(stored)
            except Exception:
                log.exception("usage hook %r failed", hook)
        return results
