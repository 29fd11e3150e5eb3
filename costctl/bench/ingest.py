"""`costctl bench ingest`: validated, de-duplicated usage ingestion throughput, in-process.

The events are the Azure conversation trace, looped and assigned by billing.replay, sent as
the JSON dicts a client posts. Each batch goes through the same path as POST /v1/usage
(validate_usage_batch -> usage_rows -> ingest_usage_rows). Baseline in the same run: the
ORM way (session.add per event, commit per batch).
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from queue import Queue
from threading import Thread
from typing import Annotated, Any

import pandas as pd
import typer
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from billing.db import init_db, make_engine
from billing.ingest import ingest_usage_rows, usage_rows, validate_usage_batch
from billing.models import UsageEvent
from billing.replay import assign, read_azure_trace
from costctl.bench.common import AZURE_CONV, emit, timer
from costctl.context import fail

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def make_payload(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` usage events as JSON-ready dicts (the Azure conv trace, looped)."""
    trace = assign(read_azure_trace(AZURE_CONV), seed=seed, code=False)
    loops = -(-n // len(trace))
    df = pd.concat([trace] * loops, ignore_index=True).iloc[:n]
    span = float(trace["offset_s"].max()) + 1.0
    loop = df.index // len(trace)
    t0 = datetime(2026, 11, 23, tzinfo=UTC)
    times = pd.Timestamp(t0) + pd.to_timedelta(df["offset_s"] + loop * span, "s")
    iso = times.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [
        {
            "id": f"conv:{i}",
            "source": "bench/azure-conv",
            "time": t,
            "model": m,
            "customer": c,
            "request_type": r,
            "input_tokens": int(a),
            "output_tokens": int(b),
        }
        for i, t, m, c, r, a, b in zip(
            df.index,
            iso,
            df["model"],
            df["customer"],
            df["request_type"],
            df["input_tokens"],
            df["output_tokens"],
            strict=True,
        )
    ]


def run_batches(
    engine: Engine, payload: list[dict[str, Any]], batch: int, *, pipeline: bool
) -> dict[str, float]:
    """Ingest ``payload`` batch by batch; returns wall seconds and per-stage busy seconds.

    With ``pipeline``, a writer thread stores batch k while the caller validates batch k+1
    (what concurrent POSTs get from the API's thread pool); the drivers release the GIL while
    the database works, so the two stages overlap on two cores.
    """
    t: dict[str, float] = {"inserted": 0}
    sqlite = engine.dialect.name == "sqlite"
    queue: Queue[list[tuple[Any, ...]] | None] = Queue(maxsize=2)

    def store(rows: list[tuple[Any, ...]]) -> None:
        with timer(t, "store_s"):
            t["inserted"] += ingest_usage_rows(engine, rows).inserted

    def writer() -> None:
        while (rows := queue.get()) is not None:
            store(rows)

    thread = Thread(target=writer, daemon=True) if pipeline else None
    with timer(t, "seconds"):
        if thread:
            thread.start()
        for i in range(0, len(payload), batch):
            with timer(t, "validate_s"):
                good, errors = validate_usage_batch(payload[i : i + batch])
                rows = usage_rows(good, sqlite_text=sqlite)
            assert not errors, errors[:3]
            if thread:
                queue.put(rows)
            else:
                store(rows)
        if thread:
            queue.put(None)
            thread.join()
    return t


def orm_baseline(engine: Engine, payload: list[dict[str, Any]], batch: int = 1000) -> float:
    """Events/s the ORM way: validate one by one, session.add each, commit per batch."""
    from billing.schemas import USAGE_EVENT

    t: dict[str, float] = {}
    with timer(t, "s"):
        for i in range(0, len(payload), batch):
            with Session(engine) as s:
                for d in payload[i : i + batch]:
                    e = USAGE_EVENT.validate_python({**d, "source": "bench/orm"})
                    s.add(
                        UsageEvent(
                            source=e["source"],
                            event_id=e["id"],
                            ts=e["time"],
                            model=e["model"],
                            customer=e["customer"],
                            request_type=e["request_type"],
                            input_tokens=e["input_tokens"],
                            output_tokens=e["output_tokens"],
                        )
                    )
                s.commit()
    return len(payload) / t["s"]


def _engine(backend: str, url: str | None, tmp: str) -> tuple[Engine, str | None]:
    if backend == "sqlite":
        return make_engine(url or f"sqlite:///{tmp}/bench-ingest.db"), None
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    base = make_engine(url or os.environ.get("COSTCTL_TEST_POSTGRES_URL", PG_DEFAULT))
    with base.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    base.dispose()
    return make_engine(
        url or os.environ.get("COSTCTL_TEST_POSTGRES_URL", PG_DEFAULT), schema=schema
    ), schema


def register(bench_app: typer.Typer) -> None:
    """Add `bench ingest`."""

    @bench_app.command("ingest")
    def ingest_cmd(
        events: Annotated[int, typer.Option(min=1000)] = 1_000_000,
        backend: Annotated[str, typer.Option(help="sqlite|postgres")] = "sqlite",
        batch: Annotated[int, typer.Option(min=1, max=100_000)] = 10_000,
        baseline_events: Annotated[int, typer.Option(min=0)] = 20_000,
        url: Annotated[str | None, typer.Option(help="database URL (default: temp)")] = None,
        pipeline: Annotated[bool, typer.Option(help="validate and store in 2 threads")] = True,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Ingest N events in batches; print throughput next to the ORM baseline."""
        import tempfile

        if backend not in ("sqlite", "postgres"):
            fail("--backend must be sqlite or postgres")
        if not AZURE_CONV.exists():
            fail(f"Azure trace not found at {AZURE_CONV} (set COSTCTL_SHARED_DIR)")
        payload = make_payload(events)
        with tempfile.TemporaryDirectory() as tmp:
            engine, schema = _engine(backend, url, tmp)
            try:
                init_db(engine)
                t = run_batches(engine, payload, batch, pipeline=pipeline)
                resend = ingest_usage_rows(
                    engine, usage_rows(validate_usage_batch(payload[:batch])[0])
                )
                base = orm_baseline(engine, payload[:baseline_events]) if baseline_events else 0
            finally:
                engine.dispose()
                if schema:
                    drop = make_engine(os.environ.get("COSTCTL_TEST_POSTGRES_URL", PG_DEFAULT))
                    with drop.begin() as c:
                        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
                    drop.dispose()
        seconds = t["seconds"]
        emit(
            {
                "bench": "ingest",
                "backend": backend,
                "events": events,
                "inserted": int(t["inserted"]),
                "seconds": round(seconds, 3),
                "events_per_s": round(events / seconds),
                "batch": batch,
                "pipeline": pipeline,
                "validate_s": round(t["validate_s"], 3),
                "store_s": round(t["store_s"], 3),
                "store_events_per_s": round(events / t["store_s"]),
                "resend_inserted": resend.inserted,
                "resend_duplicates": resend.duplicates,
                "baseline": "orm session.add per event, commit per 1000",
                "baseline_events": baseline_events,
                "baseline_events_per_s": round(base),
                "speedup_vs_baseline": round(events / seconds / base, 1) if base else None,
            },
            as_json,
        )
