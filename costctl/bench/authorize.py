"""`costctl bench authorize`: uvicorn workers on loopback, open-loop load from another process.

Phase 1 (load): ``--rps`` authorize calls per second for ``--seconds`` against one customer
budget of ``--budget-usd`` that runs out about half-way, while a second connection posts the
usage events of the admitted requests (actual tokens <= estimate) in batches. Latency is
measured per request from send to full response on keep-alive connections; the generator's
own lateness against the schedule is reported as ``send_lag_p99_ms``. Afterwards the budget's
truth (usage events) plus what is still reserved is compared with the limit: ``overshoot_usd``.

Phase 2 (kill propagation): probes keep calling authorize on every connection, ``costctl kill``
runs as a subprocess, and the time from the kill's commit (its audit timestamp) to the moment
every worker answered "killed" is ``kill_propagation_ms``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.engine import Engine

from costctl.bench.common import emit

CUSTOMER = "bench"
MODEL = "bench-model"
KILL_MODEL = "bench-kill"
EST_TOKENS = 1000


def app_factory() -> Any:
    """The API as `costctl serve` would build it (uvicorn --factory), plus an x-worker header."""
    from billing.api.app import create_app
    from billing.db import make_engine
    from billing.enforcement.api import make_extension
    from costctl.settings import Settings

    s = Settings()
    app = create_app(
        engine=make_engine(s.database_url),
        config=s.billing,
        redis_url=s.redis_url,
        extensions=[make_extension()],
    )
    pid = str(os.getpid()).encode()
    inner = app.build_middleware_stack

    def stack() -> Any:
        asgi = inner()

        async def with_pid(scope: Any, receive: Any, send: Any) -> None:
            async def tagged(msg: Any) -> None:
                if msg["type"] == "http.response.start":
                    msg["headers"] = [*msg.get("headers", []), (b"x-worker", pid)]
                await send(msg)

            await asgi(scope, receive, tagged)

        return with_pid

    app.build_middleware_stack = stack  # type: ignore[method-assign]
    return app


# -- a minimal HTTP/1.1 keep-alive client (httpx costs more CPU than the server we measure) --
class Conn:
    """One keep-alive connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(self, path: str, body: bytes, key: str) -> tuple[int, dict[str, str], bytes]:
        """POST and read the whole response."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, data


async def connect(port: int) -> Conn:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    return Conn(r, w)


def _body(model: str, customer: str = CUSTOMER) -> bytes:
    return json.dumps(
        {
            "customer": customer,
            "model": model,
            "request_type": "chat",
            "estimated_tokens": EST_TOKENS,
            "priority": "normal",
            "request_id": uuid.uuid4().hex,
        }
    ).encode()


async def _load(port: int, key: str, rps: float, seconds: float, conns: int) -> dict[str, Any]:
    pool = [await connect(port) for _ in range(conns)]
    usage_conn = await connect(port)
    total = int(rps * seconds)
    lat: list[float] = []
    lag: list[float] = []
    stats = {"errors": 0, "allowed": 0, "denied": 0, "usage_errors": 0}
    admitted: list[str] = []
    nxt = 0
    t0 = time.perf_counter() + 0.2
    rng = random.Random(7)
    done = asyncio.Event()

    async def worker(c: Conn) -> None:
        nonlocal nxt
        while nxt < total:
            i = nxt
            nxt += 1
            target = t0 + i / rps
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            lag.append(sent - target)
            try:
                status, _, data = await c.post("/v1/authorize", _body(MODEL), key)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                stats["errors"] += 1
                c = await connect(port)
                continue
            lat.append(time.perf_counter() - sent)
            if status != 200:
                stats["errors"] += 1
                continue
            doc = json.loads(data)
            if doc["allowed"]:
                stats["allowed"] += 1
                admitted.append(doc["reservation_id"])
            else:
                stats["denied"] += 1

    async def reporter() -> None:
        n = 0
        while not (done.is_set() and not admitted):
            await asyncio.sleep(0.2)
            batch = admitted[:]
            del admitted[: len(batch)]
            if not batch:
                continue
            events = []
            now = datetime.now(UTC).isoformat()
            for rid in batch:
                out = rng.randint(EST_TOKENS // 4, EST_TOKENS // 2)
                inp = rng.randint(0, EST_TOKENS - out)  # in + out <= estimate
                events.append(
                    {
                        "id": rid,
                        "source": "bench",
                        "time": now,
                        "model": MODEL,
                        "customer": CUSTOMER,
                        "request_type": "chat",
                        "input_tokens": inp,
                        "output_tokens": out,
                    }
                )
            status, _, _ = await usage_conn.post("/v1/usage", json.dumps(events).encode(), key)
            if status != 200:
                stats["usage_errors"] += 1
            n += len(batch)
        stats["usage_events"] = n

    rep = asyncio.create_task(reporter())
    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in pool))
    wall = time.perf_counter() - start - 0.2
    done.set()
    await rep
    lat.sort()
    lag.sort()

    def pct(xs: list[float], q: float) -> float:
        return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 3) if xs else 0.0

    return {
        "requests": total,
        "rps": round(total / wall, 1),
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "p999_ms": pct(lat, 0.999),
        "max_ms": pct(lat, 1.0),
        "send_lag_p99_ms": pct(lag, 0.99),
        **stats,
    }


async def _propagation(
    port: int, key: str, conns: int, kill_cmd: list[str], env: dict[str, str]
) -> dict[str, Any]:
    pool = [await connect(port) for _ in range(conns)]
    workers_seen: set[str] = set()
    denied_by: dict[str, float] = {}
    stop = False

    async def probe(c: Conn) -> None:
        while not stop:
            _, h, data = await c.post("/v1/authorize", _body(KILL_MODEL, "probe"), key)
            w = h.get("x-worker", "?")
            workers_seen.add(w)
            killed = json.loads(data)["reason"].startswith("killed")
            if killed and w not in denied_by:
                denied_by[w] = time.time()
            await asyncio.sleep(0.002)

    tasks = [asyncio.create_task(probe(c)) for c in pool]
    await asyncio.sleep(1.0)
    before = set(workers_seen)
    spawned = time.time()
    proc = await asyncio.create_subprocess_exec(
        *kill_cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    await proc.communicate()
    deadline = time.time() + 10
    while time.time() < deadline and not before <= set(denied_by):
        await asyncio.sleep(0.01)
    stop = True
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "spawned": spawned,
        "workers": sorted(before),
        "denied_at": denied_by,
        "returncode": proc.returncode,
    }


def _load_process(port: int, key: str, rps: float, seconds: float, conns: int, out: Any) -> None:
    asyncio.run(_warmup(port, key, rps, conns))
    out.put(asyncio.run(_load(port, key, rps, seconds, conns)))


async def _warmup(port: int, key: str, rps: float, conns: int, seconds: float = 2.0) -> None:
    """Unrecorded traffic (another customer) so workers, pools and scripts are warm."""
    pool = [await connect(port) for _ in range(conns)]
    total = int(rps * seconds)
    nxt = 0
    t0 = time.perf_counter()

    async def worker(c: Conn) -> None:
        nonlocal nxt
        while nxt < total:
            i = nxt
            nxt += 1
            delay = t0 + i / rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await c.post("/v1/authorize", _body(MODEL, "warmup"), key)

    await asyncio.gather(*(worker(c) for c in pool))
    for c in pool:
        c.writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(port: int, workers: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`costctl serve`'s API app under uvicorn with ``workers`` processes (own session)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "costctl.bench.authorize:app_factory",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        start_new_session=True,
    )


def wait_ready(port: int, timeout: float = 60) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("uvicorn did not come up")


@dataclass(frozen=True)
class ServedBudget:
    """A bench store (an admin key, one customer budget) served by uvicorn on ``port``."""

    engine: Engine
    url: str
    key: str
    port: int
    env: dict[str, str]


@contextmanager
def served_budget(
    *,
    tag: str,
    workers: int,
    budget_usd: float,
    backend: str,
    database_url: str | None,
    redis_url: str | None,
) -> Iterator[ServedBudget]:
    """A fresh store (``database_url`` or a temp SQLite file; Redis keys of enforcement
    cleared) with one daily budget of ``budget_usd`` for CUSTOMER, served by ``workers``
    uvicorn workers with the ``backend`` reservations; stopped and removed on exit."""
    from billing.apikeys import create_key, new_key
    from billing.db import init_db, make_engine
    from billing.enforcement import models as _m  # noqa: F401
    from billing.enforcement.redis_backend import PREFIX
    from billing.enforcement.schemas import BudgetCreate
    from billing.enforcement.store import set_budget
    from billing.models import ApiRole

    tmp = Path(tempfile.mkdtemp(prefix=f"costctl-bench-{tag}-"))
    url = database_url or f"sqlite:///{tmp / 'bench.db'}"
    engine = make_engine(url)
    init_db(engine)
    if redis_url:
        import redis as redis_lib

        r = redis_lib.Redis.from_url(redis_url)
        for k in r.scan_iter(f"{PREFIX}*"):
            r.delete(k)
    now = datetime.now(UTC)
    key = new_key()
    create_key(engine, name="bench", role=ApiRole.admin, customer=None, now=now, key=key)
    spec = BudgetCreate(customer=CUSTOMER, period="daily", limit_usd=budget_usd)  # type: ignore[arg-type]
    set_budget(engine, name="bench", spec=spec, actor="bench", now=now)
    port = free_port()
    env = {
        **os.environ,
        "COSTCTL_DATABASE_URL": url,
        "COSTCTL_BILLING__ENFORCEMENT__BACKEND": backend,
        "COSTCTL_BILLING__REQUIRE_AUTH": "true",
    }
    env.pop("COSTCTL_REDIS_URL", None)
    if redis_url:
        env["COSTCTL_REDIS_URL"] = redis_url
    server = start_api(port, workers, env)
    try:
        wait_ready(port)
        time.sleep(1.0)  # let every worker start
        yield ServedBudget(engine, url, key, port, env)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def budget_outcome(
    served: ServedBudget, backend: str, redis_url: str | None, budget_usd: float
) -> dict[str, Any]:
    """The bench budget's spent (the database's truth) + still reserved, against its limit."""
    from billing.enforcement.backend import ReservationBackend
    from billing.enforcement.burn import budget_burn
    from billing.enforcement.config import EnforcementConfig
    from billing.enforcement.redis_backend import RedisReservations
    from billing.enforcement.sql_backend import SqlReservations

    res: ReservationBackend = (
        RedisReservations(redis_url)
        if backend == "redis" and redis_url
        else SqlReservations(served.engine)
    )
    burn = budget_burn(served.engine, EnforcementConfig(), datetime.now(UTC), reservations=res)
    spent, reserved = burn[0].spent_micros / 1e6, burn[0].reserved_micros / 1e6
    return {
        "database": served.url.split(":", 1)[0],
        "budget_usd": budget_usd,
        "spent_usd": round(spent, 6),
        "reserved_usd": round(reserved, 6),
        "overshoot_usd": round(max(0.0, spent + reserved - budget_usd), 6),
    }


def run(
    *,
    workers: int,
    rps: float,
    seconds: float,
    budget_usd: float,
    backend: str,
    redis_url: str,
    database_url: str | None,
    connections: int,
) -> dict[str, Any]:
    """The whole benchmark; returns the result row."""
    from billing.enforcement.config import EnforcementConfig
    from billing.enforcement.store import list_kill_switches

    with served_budget(
        tag="authorize",
        workers=workers,
        budget_usd=budget_usd,
        backend=backend,
        database_url=database_url,
        redis_url=redis_url,
    ) as served:
        port, key = served.port, served.key
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        loader = ctx.Process(target=_load_process, args=(port, key, rps, seconds, connections, q))
        loader.start()
        result = q.get(timeout=seconds * 10 + 120)
        loader.join(timeout=30)
        time.sleep(0.5)
        outcome = budget_outcome(served, backend, redis_url, budget_usd)
        costctl = str(Path(sys.executable).with_name("costctl"))
        kill_cmd = [
            costctl,
            "kill",
            "model",
            KILL_MODEL,
            "--reason",
            "bench propagation",
            "--no-scale",
        ]
        prop = asyncio.run(_propagation(port, key, max(connections // 2, 8), kill_cmd, served.env))
        ks = [k for k in list_kill_switches(served.engine) if k.target == KILL_MODEL]
        committed = ks[0].created_at.timestamp() if ks else float("nan")
        last = max(prop["denied_at"].values()) if prop["denied_at"] else float("nan")
        all_denied = set(prop["workers"]) <= set(prop["denied_at"])
    return {
        "bench": "authorize",
        **result,
        "workers": workers,
        "target_rps": rps,
        "seconds": seconds,
        "backend": backend,
        **outcome,
        "reservation_usd": EST_TOKENS * EnforcementConfig().default_price.output_usd_per_mtok / 1e6,
        "kill_workers_probed": len(prop["workers"]),
        "kill_all_workers_denied": all_denied,
        "kill_propagation_ms": round((last - committed) * 1000, 1) if all_denied else None,
        "kill_cli_total_s": round(last - prop["spawned"], 3) if all_denied else None,
    }


def register(bench_app: typer.Typer) -> None:
    """Add `bench authorize`."""

    @bench_app.command("authorize")
    def authorize(
        workers: Annotated[int, typer.Option(min=1, max=64)] = 4,
        rps: Annotated[float, typer.Option(min=1)] = 2000,
        seconds: Annotated[float, typer.Option(min=1)] = 20,
        budget_usd: Annotated[
            float | None, typer.Option(min=0, help="default: about half of what the load spends")
        ] = None,
        backend: Annotated[str, typer.Option(help="redis|sql")] = "redis",
        redis_url: Annotated[
            str, typer.Option(envvar="COSTCTL_REDIS_URL")
        ] = "redis://127.0.0.1:6379/14",
        database_url: Annotated[
            str | None, typer.Option(help="default: a temp SQLite file")
        ] = None,
        connections: Annotated[int, typer.Option(min=1, max=1024)] = 64,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Authorize latency and budget overshoot under load; kill-switch propagation."""
        if backend not in ("redis", "sql"):
            raise typer.BadParameter("redis or sql", param_hint="--backend")
        # the bench's usage averages ~0.0007 USD per request: the budget runs out half-way
        budget = budget_usd if budget_usd is not None else round(rps * seconds * 0.00035, 2)
        emit(
            run(
                workers=workers,
                rps=rps,
                seconds=seconds,
                budget_usd=budget,
                backend=backend,
                redis_url=redis_url,
                database_url=database_url,
                connections=connections,
            ),
            as_json,
        )
