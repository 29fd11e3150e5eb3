"""`costctl bench gateway`: the gateway's per-request sequence against a real `costctl api`.

Phase 1 (open loop): ``--rps`` arrivals per second on a fixed schedule for ``--seconds``; each
arrival takes a keep-alive connection from a pool, calls ``POST /v1/authorize`` and, when
admitted, ``POST /v1/usage`` with the one event ``id = reservation_id`` (actual tokens <=
estimate). Latency counts from the *scheduled* send time, so a slow server cannot hide
queueing by slowing the generator (no coordinated omission): ``authorize_*`` from schedule
to its response, ``usage_*`` from its own send, ``pair_*`` from schedule to the usage ack.
Afterwards the budget's spent + reserved is compared with its limit: ``overshoot_usd``.

Phase 2 (``--batcher-events N``): one client process feeds N single events through
costctl.client's AsyncUsageBatcher (as a gateway would, one ``add`` per request) and waits
for ``close``; ``batcher_events_per_s`` is end to end, and the stored row count must be N.
The server is the API as `costctl serve` builds it, under uvicorn with ``--workers``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from costctl.bench.authorize import (
    CUSTOMER,
    EST_TOKENS,
    MODEL,
    Conn,
    _body,
    _warmup,
    budget_outcome,
    connect,
    served_budget,
)
from costctl.bench.common import emit


def _event(rid: str, rng: random.Random, customer: str = CUSTOMER) -> dict[str, Any]:
    out = rng.randint(EST_TOKENS // 4, EST_TOKENS // 2)
    return {
        "id": rid,
        "source": "gateway",
        "time": datetime.now(UTC).isoformat(),
        "model": MODEL,
        "customer": customer,
        "request_type": "chat",
        "input_tokens": rng.randint(0, EST_TOKENS - out),  # in + out <= estimate
        "output_tokens": out,
    }


def pct(xs: list[float], q: float) -> float:
    """The q-quantile of seconds ``xs`` in ms (0 when empty)."""
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 3) if xs else 0.0


async def _pairs(port: int, key: str, rps: float, seconds: float, conns: int) -> dict[str, Any]:
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(await connect(port))
    total = int(rps * seconds)
    auth: list[float] = []
    usage: list[float] = []
    pair: list[float] = []
    lag: list[float] = []
    stats = {"errors": 0, "usage_errors": 0, "allowed": 0, "denied": 0}
    rng = random.Random(7)

    async def one(target: float) -> None:
        c = await pool.get()
        try:
            status, _, data = await c.post("/v1/authorize", _body(MODEL), key)
            sent = time.perf_counter()
            auth.append(sent - target)
            if status != 200:
                stats["errors"] += 1
                return
            doc = json.loads(data)
            if not doc["allowed"]:
                stats["denied"] += 1
                return
            stats["allowed"] += 1
            body = json.dumps([_event(doc["reservation_id"], rng)]).encode()
            status, _, _ = await c.post("/v1/usage", body, key)
            done = time.perf_counter()
            usage.append(done - sent)
            pair.append(done - target)
            if status != 200:
                stats["usage_errors"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            stats["errors"] += 1
            c = await connect(port)
        finally:
            pool.put_nowait(c)

    tasks = []
    t0 = time.perf_counter() + 0.2
    for i in range(total):
        target = t0 + i / rps
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lag.append(time.perf_counter() - target)
        tasks.append(asyncio.create_task(one(target)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    return {
        "requests": total,
        "achieved_rps": round(total / wall, 1),
        "authorize_p50_ms": pct(auth, 0.5),
        "authorize_p99_ms": pct(auth, 0.99),
        "usage_p50_ms": pct(usage, 0.5),
        "usage_p99_ms": pct(usage, 0.99),
        "pair_p50_ms": pct(pair, 0.5),
        "pair_p99_ms": pct(pair, 0.99),
        "pair_max_ms": pct(pair, 1.0),
        "send_lag_p99_ms": pct(lag, 0.99),
        **stats,
    }


async def _batched(port: int, key: str, n: int) -> dict[str, Any]:
    from costctl.client import AsyncCostctl

    rng = random.Random(11)
    run = uuid.uuid4().hex[:8]
    async with AsyncCostctl(f"http://127.0.0.1:{port}", key) as client:
        batcher = client.usage_batcher(max_events=5000, max_age_s=0.05)
        t = time.perf_counter()
        for i in range(n):
            await batcher.add(_event(f"b{run}:{i}", rng, customer="batched"))
        await batcher.close()
        wall = time.perf_counter() - t
    return {
        "batcher_events": n,
        "batcher_events_per_s": round(n / wall),
        "batcher_posts": batcher.stats.posts,
        "batcher_retries": batcher.stats.retries,
        "batcher_inserted": batcher.stats.inserted,
        "batcher_duplicates": batcher.stats.duplicates,
    }


def _client(port: int, key: str, rps: float, seconds: float, conns: int, n: int, out: Any) -> None:
    asyncio.run(_warmup(port, key, rps, conns))
    row = asyncio.run(_pairs(port, key, rps, seconds, conns))
    if n:
        row |= asyncio.run(_batched(port, key, n))
    out.put(row)


def run(
    *,
    workers: int,
    rps: float,
    seconds: float,
    budget_usd: float,
    database_url: str | None,
    redis_url: str | None,
    connections: int,
    batcher_events: int,
) -> dict[str, Any]:
    """The whole benchmark; returns the result row."""
    from sqlalchemy import func, select

    from billing.models import UsageEvent, table_of

    backend = "redis" if redis_url else "sql"
    with served_budget(
        tag="gateway",
        workers=workers,
        budget_usd=budget_usd,
        backend=backend,
        database_url=database_url,
        redis_url=redis_url,
    ) as served:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        args = (served.port, served.key, rps, seconds, connections, batcher_events, q)
        client = ctx.Process(target=_client, args=args)
        client.start()
        result = q.get(timeout=seconds * 20 + 300)
        client.join(timeout=30)
        time.sleep(0.5)
        outcome = budget_outcome(served, backend, redis_url, budget_usd)
        u = table_of(UsageEvent).c
        with served.engine.connect() as conn:
            stored = conn.execute(select(func.count()).where(u.customer == "batched")).scalar()
    return {
        "bench": "gateway",
        **result,
        "batcher_stored": stored if batcher_events else None,
        "workers": workers,
        "target_rps": rps,
        "seconds": seconds,
        "backend": backend,
        **outcome,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def register(bench_app: typer.Typer) -> None:
    """Add `bench gateway`."""

    @bench_app.command("gateway")
    def gateway(
        workers: Annotated[int, typer.Option(min=1, max=64)] = 1,
        rps: Annotated[float, typer.Option(min=1)] = 300,
        seconds: Annotated[float, typer.Option(min=1)] = 20,
        budget_usd: Annotated[
            float | None, typer.Option(min=0, help="default: twice what the load spends")
        ] = None,
        postgres: Annotated[
            str | None, typer.Option(help="PostgreSQL URL of an empty database")
        ] = None,
        redis: Annotated[str | None, typer.Option(help="Redis URL: the redis backend")] = None,
        connections: Annotated[int, typer.Option(min=1, max=1024)] = 64,
        batcher_events: Annotated[
            int, typer.Option(min=0, help="then N single events via the client's batcher")
        ] = 0,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Open-loop authorize + usage pairs: per-call p50/p99, errors, rate, overshoot."""
        # the bench's usage averages ~0.0007 USD per request
        budget = budget_usd if budget_usd is not None else round(rps * seconds * 0.0014, 2)
        emit(
            run(
                workers=workers,
                rps=rps,
                seconds=seconds,
                budget_usd=budget,
                database_url=postgres,
                redis_url=redis,
                connections=connections,
                batcher_events=batcher_events,
            ),
            as_json,
        )
