"""Peer for `costctl bench gateway`: the same open-loop schedule against a LiteLLM proxy.

Run with costctl's venv while `litellm --config C --port P --num_workers 1` serves a
``mock_response`` model (LiteLLM is not a costctl dependency; see BENCHMARKS.md):
    .venv/bin/python bench/litellm_peer.py --port P --rps 300 --seconds 20
Prints one JSON object: achieved rate, p50/p99 from the scheduled send time, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from costctl.bench.authorize import Conn, connect
from costctl.bench.gateway import pct


async def load(port: int, rps: float, seconds: float, conns: int) -> dict[str, object]:
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(await connect(port))
    body = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "hi"}]})
    lat: list[float] = []
    errors = 0

    async def one(target: float) -> None:
        nonlocal errors
        c = await pool.get()
        try:
            status, _, _ = await c.post("/chat/completions", body.encode(), "sk-bench")
            lat.append(time.perf_counter() - target)
            errors += status != 200
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            c = await connect(port)
        finally:
            pool.put_nowait(c)

    total = int(rps * seconds)
    t0 = time.perf_counter() + 0.2
    tasks = []
    for i in range(total):
        target = t0 + i / rps
        if (d := target - time.perf_counter()) > 0:
            await asyncio.sleep(d)
        tasks.append(asyncio.create_task(one(target)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    return {
        "bench": "litellm-peer",
        "requests": total,
        "achieved_rps": round(total / wall, 1),
        "p50_ms": pct(lat, 0.5),
        "p99_ms": pct(lat, 0.99),
        "max_ms": pct(lat, 1.0),
        "errors": errors,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rps", type=float, default=300)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--connections", type=int, default=64)
    a = ap.parse_args()
    print(json.dumps(asyncio.run(load(a.port, a.rps, a.seconds, a.connections))))
