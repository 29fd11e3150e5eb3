"""Ingestion edge: validated usage events and GPU samples into the store, exactly once.

Invariants: one transaction per call; (source, event_id) for usage, (gpu_uuid, ts) for GPU
samples and (device_uuid, ts, pid) for processes are idempotency keys, so re-sending a batch
inserts nothing twice. received = inserted + duplicates. A call that inserts anything also
marks the hours its rows touch (billing.dirty) in the same transaction, so the rollup job
recomputes them however late they arrive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Float,
    Integer,
    Table,
    UniqueConstraint,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from billing.dirty import hours_of_instants, hours_of_intervals, mark_hours
from billing.models import GpuProcessSample, GpuSample, UsageEvent, table_of, utcnow
from billing.schemas import (
    USAGE_BATCH,
    USAGE_EVENT,
    GpuProcessSampleIn,
    GpuSampleIn,
    IngestResult,
    UsageEventIn,
    flatten_cloudevent,
    utc_text,
)
from billing.utc import is_timestamp

USAGE_COLUMNS = (
    "source",
    "event_id",
    "ts",
    "model",
    "customer",
    "request_type",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "status",
    "device_id",
)
SAMPLE_COLUMNS = (
    "ts",
    "node",
    "gpu_uuid",
    "parent_uuid",
    "gpu_index",
    "gpu_type",
    "pricing_class",
    "mig_profile",
    "sm_util",
    "mem_used_mib",
    "mem_total_mib",
    "power_w",
    "energy_j",
    "interval_s",
    "fault",
)
PROCESS_COLUMNS = (
    "ts",
    "device_uuid",
    "gpu_uuid",
    "pid",
    "pod_uid",
    "namespace",
    "pod",
    "model",
    "sm_util",
    "mem_used_mib",
    "interval_s",
)


def _sqlite_times(
    table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> Sequence[tuple[Any, ...]]:
    """DateTime values as the UTC text SQLAlchemy's SQLite dialect reads back."""
    at = [
        i
        for i, c in enumerate(columns)
        if is_timestamp(table.c[c].type)
        and not all(isinstance(r[i], str) for r in rows)  # rendered already (usage_rows)
    ]
    if not at:
        return rows
    if len(at) == 1:
        i = at[0]
        return [(*r[:i], None if r[i] is None else utc_text(r[i]), *r[i + 1 :]) for r in rows]
    return [
        tuple(utc_text(v) if i in at and v is not None else v for i, v in enumerate(r))
        for r in rows
    ]


def _pg_type(sa_type: Any) -> str:
    """The PostgreSQL type name for binary COPY of a column of this SQLAlchemy type."""
    if is_timestamp(sa_type):
        return "timestamptz"
    if isinstance(sa_type, BigInteger):
        return "int8"
    if isinstance(sa_type, Integer):
        return "int4"
    if isinstance(sa_type, Float):
        return "float8"
    if isinstance(sa_type, Boolean):
        return "bool"
    return "text"


def _conflict_key(table: Table) -> list[str]:
    """The columns of the table's idempotency key: its unique constraint, else its primary key."""
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            return [c.name for c in constraint.columns]
    return [c.name for c in table.primary_key.columns]


def bulk_insert_ignore(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> int:
    """Insert rows, skipping those whose unique key exists; returns how many were inserted.

    Details: SQLite uses ``INSERT ... ON CONFLICT DO NOTHING`` through executemany;
    PostgreSQL binary-COPYs into a temporary staging table, then ``INSERT ... SELECT ...
    ON CONFLICT DO NOTHING``. DateTime values must be aware UTC datetimes.
    Raises: sqlalchemy.exc.IntegrityError for a row that breaks NOT NULL or CHECK (only key
    conflicts are skipped).
    """
    try:
        return _bulk_insert_ignore(conn, table, columns, rows)
    except conn.dialect.loaded_dbapi.IntegrityError as exc:
        raise IntegrityError(f"INSERT INTO {table.name}", None, exc) from exc


def _bulk_insert_ignore(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> int:
    if not rows:
        return 0
    cols = ", ".join(columns)
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cur = raw.cursor()
    try:
        if conn.dialect.name == "sqlite":
            rows = _sqlite_times(table, columns, rows)
            marks = ", ".join("?" * len(columns))
            # ON CONFLICT DO NOTHING skips only key conflicts; INSERT OR IGNORE would also
            # drop rows that break NOT NULL or CHECK without a word.
            cur.executemany(
                f"INSERT INTO {table.name} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING", rows
            )
            return int(cur.rowcount)
        stage = f"_stage_{table.name}"
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} AS "
            f"SELECT {cols} FROM {table.name} WITH NO DATA"
        )
        cur.execute(f"TRUNCATE {stage}")
        with cur.copy(f"COPY {stage} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([_pg_type(table.c[c].type) for c in columns])
            for row in rows:
                copy.write_row(row)
        # Inserting in key order means two overlapping batches take their row locks in the
        # same order, so concurrent re-sends wait for each other instead of deadlocking.
        order = ", ".join(_conflict_key(table))
        cur.execute(
            f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {stage} "
            f"ORDER BY {order} ON CONFLICT DO NOTHING"
        )
        return int(cur.rowcount)
    finally:
        cur.close()


def usage_rows(
    events: Iterable[UsageEventIn], *, sqlite_text: bool = False
) -> list[tuple[Any, ...]]:
    """Validated events as rows in USAGE_COLUMNS order.

    ``sqlite_text`` renders the time as SQLite's UTC text here, so a caller that validates
    in one thread and stores in another moves that per-row cost off the store stage.
    """
    return [
        (
            e["source"],
            e["id"],
            utc_text(e["time"]) if sqlite_text else e["time"],
            e["model"],
            e["customer"],
            e["request_type"],
            e["input_tokens"],
            e["output_tokens"],
            e.get("latency_ms"),
            e.get("status", "ok"),
            e.get("device_id"),
        )
        for e in events
    ]


def ingest_usage_rows(engine: Engine, rows: Sequence[tuple[Any, ...]]) -> IngestResult:
    """Store usage rows (USAGE_COLUMNS order) in one transaction, skipping known keys."""
    return ingest_usage_row_groups(engine, [rows])[0]


def ingest_usage_row_groups(
    engine: Engine, groups: Sequence[Sequence[tuple[Any, ...]]]
) -> list[IngestResult]:
    """Store several callers' usage rows in one transaction (one commit for all of them).

    Each group gets its own IngestResult (a key seen in an earlier group counts as a
    duplicate of the later one); either every group is stored or none is.
    """
    table = table_of(UsageEvent)
    results = []
    touched: list[Any] = []
    with engine.begin() as conn:
        for rows in groups:
            inserted = bulk_insert_ignore(conn, table, USAGE_COLUMNS, rows)
            if inserted:
                touched.extend(r[2] for r in rows)
            results.append(
                IngestResult(received=len(rows), inserted=inserted, duplicates=len(rows) - inserted)
            )
        if touched:
            mark_hours(conn, hours_of_instants(touched), marked_at=utcnow())
    return results


def ingest_usage(engine: Engine, events: Sequence[UsageEventIn]) -> IngestResult:
    """Store validated usage events in one transaction, exactly once per (source, id)."""
    return ingest_usage_groups(engine, [events])[0]


def ingest_usage_groups(
    engine: Engine, groups: Sequence[Sequence[UsageEventIn]]
) -> list[IngestResult]:
    """Several batches of validated events in one transaction (see ingest_usage_row_groups)."""
    sqlite = engine.dialect.name == "sqlite"
    return ingest_usage_row_groups(engine, [usage_rows(g, sqlite_text=sqlite) for g in groups])


RESERVED_MSG = "names starting with '__' are reserved for idle and unallocated ledger rows"


def validate_usage_batch(
    payload: Sequence[Any],
) -> tuple[list[UsageEventIn], list[dict[str, Any]]]:
    """Split a raw batch into valid events and errors ``{index, loc, msg, type}``.

    Details: CloudEvents are flattened first; then the whole batch is validated in one pass,
    and only when that fails are the good events re-validated one by one, so the common
    all-good batch costs a single TypeAdapter call.
    """
    errors: list[dict[str, Any]] = []
    items: list[Any] = []
    for i, item in enumerate(payload):
        try:
            items.append(flatten_cloudevent(item))
        except ValueError as exc:
            errors.append({"index": i, "loc": ["events", i], "msg": str(exc), "type": "cloudevent"})
            items.append(None)
    if not errors:
        try:
            return USAGE_BATCH.validate_python(items), []
        except ValidationError as exc:
            errors = _errors(exc)
    else:
        ok = [(i, x) for i, x in enumerate(items) if x is not None]
        try:
            USAGE_BATCH.validate_python([x for _, x in ok])
        except ValidationError as exc:
            errors += [
                {
                    **e,
                    "index": ok[e["index"]][0],
                    "loc": ["events", ok[e["index"]][0], *e["loc"][2:]],
                }
                for e in _errors(exc)
            ]
    bad = {e["index"] for e in errors}
    good = [USAGE_EVENT.validate_python(x) for i, x in enumerate(items) if i not in bad]
    return good, sorted(errors, key=lambda e: int(e["index"]))


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = err["loc"]
        index = int(loc[0]) if loc and isinstance(loc[0], int) else -1
        msg = RESERVED_MSG if err["type"] == "string_pattern_mismatch" else err["msg"]
        out.append({"index": index, "loc": ["events", *loc], "msg": msg, "type": err["type"]})
    return out


def ingest_gpu_samples(
    engine: Engine,
    samples: Sequence[GpuSampleIn],
    processes: Sequence[GpuProcessSampleIn] = (),
) -> IngestResult:
    """Store GPU and process samples in one transaction, exactly once per key."""
    sample_rows = [tuple(getattr(s, c) for c in SAMPLE_COLUMNS) for s in samples]
    process_rows = [tuple(getattr(p, c) for c in PROCESS_COLUMNS) for p in processes]
    with engine.begin() as conn:
        inserted = bulk_insert_ignore(conn, table_of(GpuSample), SAMPLE_COLUMNS, sample_rows)
        inserted += bulk_insert_ignore(
            conn, table_of(GpuProcessSample), PROCESS_COLUMNS, process_rows
        )
        if inserted:
            starts = [x.ts for x in samples] + [x.ts for x in processes]
            secs = [x.interval_s for x in samples] + [x.interval_s for x in processes]
            hours = hours_of_intervals(starts, secs)
            mark_hours(conn, hours, marked_at=utcnow())
    received = len(sample_rows) + len(process_rows)
    return IngestResult(received=received, inserted=inserted, duplicates=received - inserted)
