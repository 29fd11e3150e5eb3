"""SQLModel tables of the metering store, and their API families (Base/Create/Public).

Every timestamp column is ``billing.utc.UTCDateTime``: any offset is converted to UTC on write,
and reads return aware UTC (SQLite keeps UTC text, PostgreSQL timestamptz).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Integer, Table, UniqueConstraint
from sqlmodel import Field, SQLModel

from billing import limits as L
from billing.kinds import IDLE as IDLE  # re-exported
from billing.kinds import UNALLOCATED as UNALLOCATED
from billing.kinds import UNPRICED as UNPRICED
from billing.kinds import LedgerKind as LedgerKind
from billing.utc import UTCDateTime

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for billions of rows.
ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")


def table_of(model: type[SQLModel]) -> Table:
    """The SQLAlchemy Table behind a SQLModel table class (typed access for Core queries)."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


def utcnow() -> datetime:
    """Current UTC time (edge helper for default factories)."""
    return datetime.now(UTC)


def _id() -> Any:
    return Field(default=None, sa_column=Column(ID_TYPE, primary_key=True, autoincrement=True))


def _ts(*, index: bool = True, nullable: bool = False) -> Any:
    return Field(sa_column=Column(UTCDateTime(), index=index, nullable=nullable))


class EventStatus(StrEnum):
    ok = "ok"
    error = "error"
    timeout = "timeout"
    cancelled = "cancelled"


class UsageEvent(SQLModel, table=True):
    """One inference request. (source, event_id) is the idempotency key and the primary key.

    Two indexes only, the key and ``ts``: a surrogate id or any other index costs ingest
    throughput on both backends (see BENCHMARKS.md).
    """

    __tablename__ = "usage_event"

    source: str = Field(max_length=L.NAME_LEN, primary_key=True)
    event_id: str = Field(max_length=L.NAME_LEN, primary_key=True)
    ts: datetime = _ts()
    model: str = Field(max_length=L.NAME_LEN)
    customer: str = Field(max_length=L.NAME_LEN)
    request_type: str = Field(max_length=L.REQUEST_TYPE_LEN)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    latency_ms: float | None = None
    status: str = Field(default=EventStatus.ok.value, max_length=L.STATUS_LEN)
    device_id: str | None = Field(default=None, max_length=L.NAME_LEN)


class GpuSample(SQLModel, table=True):
    """One NVML reading of a physical GPU (parent_uuid is None) or a MIG instance."""

    __tablename__ = "gpu_sample"
    __table_args__ = (UniqueConstraint("gpu_uuid", "ts", name="uq_gpu_sample_uuid_ts"),)

    id: int | None = _id()
    ts: datetime = _ts()
    node: str = Field(max_length=L.NAME_LEN)
    gpu_uuid: str = Field(max_length=L.NAME_LEN)
    parent_uuid: str | None = Field(default=None, max_length=L.NAME_LEN)
    gpu_index: int = 0
    gpu_type: str = Field(max_length=L.GPU_TYPE_LEN)
    pricing_class: str = Field(default="on-demand", max_length=L.PRICING_CLASS_LEN)
    mig_profile: str | None = Field(default=None, max_length=L.MIG_PROFILE_LEN)
    sm_util: float | None = Field(default=None, ge=0, le=100)
    mem_used_mib: float | None = Field(default=None, ge=0)
    mem_total_mib: float | None = Field(default=None, ge=0)
    power_w: float | None = Field(default=None, ge=0)
    energy_j: float | None = Field(default=None, ge=0)
    interval_s: float = Field(gt=0, description="Seconds of GPU time this sample stands for.")
    fault: str | None = Field(default=None, max_length=L.NAME_LEN)


class GpuProcessSample(SQLModel, table=True):
    """A compute process seen on a GPU or MIG instance at a sample, mapped to its model."""

    __tablename__ = "gpu_process_sample"
    __table_args__ = (
        UniqueConstraint("device_uuid", "ts", "pid", name="uq_gpu_process_sample"),
        Index("ix_gpu_process_sample_model_ts", "model", "ts"),
    )

    id: int | None = _id()
    ts: datetime = _ts(index=False)
    device_uuid: str = Field(max_length=L.NAME_LEN)
    gpu_uuid: str = Field(max_length=L.NAME_LEN, description="The physical GPU.")
    pid: int
    pod_uid: str | None = Field(default=None, max_length=L.POD_UID_LEN)
    namespace: str | None = Field(default=None, max_length=L.NAME_LEN)
    pod: str | None = Field(default=None, max_length=L.K8S_NAME_LEN)
    model: str | None = Field(default=None, max_length=L.NAME_LEN)
    sm_util: float | None = Field(default=None, ge=0, le=100, description="% of the whole GPU.")
    mem_used_mib: float | None = Field(default=None, ge=0)
    interval_s: float = Field(gt=0)


class AllocationMode(StrEnum):
    gpu = "gpu"
    mig = "mig"
    mps = "mps"
    timeslice = "timeslice"


class AllocationSource(StrEnum):
    """Who says a device was held: the cluster's telemetry, or the plan costctl applied."""

    observed = "observed"
    planned = "planned"


class Allocation(SQLModel, table=True):
    """A pod's container holding a whole GPU, a MIG instance, an MPS share or a time-slice.

    The natural key is (source, device_uuid, namespace, pod, container, start): re-posting it
    only sets ``end``. Observed holdings (node agent, DCGM) win over planned ones (``costctl
    apply``) for the same physical GPU and time.
    """

    __tablename__ = "allocation"
    __table_args__ = (
        UniqueConstraint(
            "source",
            "device_uuid",
            "namespace",
            "pod",
            "container",
            "start",
            name="uq_allocation_natural",
        ),
    )

    id: int | None = _id()
    model: str = Field(max_length=L.NAME_LEN, index=True)
    node: str = Field(max_length=L.NAME_LEN)
    gpu_uuid: str = Field(max_length=L.NAME_LEN, index=True, description="The physical GPU.")
    device_uuid: str = Field(
        max_length=L.NAME_LEN, description="The device held (GPU or MIG UUID)."
    )
    namespace: str = Field(default="", max_length=L.K8S_NAME_LEN)
    pod: str = Field(default="", max_length=L.K8S_NAME_LEN)
    container: str = Field(default="", max_length=L.K8S_NAME_LEN)
    pod_uid: str | None = Field(default=None, max_length=L.POD_UID_LEN)
    mode: str = Field(default=AllocationMode.gpu.value, max_length=L.SHORT_ENUM_LEN)
    profile: str | None = Field(default=None, max_length=L.MIG_PROFILE_LEN)
    fraction: float = Field(gt=0, le=1, description="Share of the GPU's price this holds.")
    start: datetime = _ts()
    end: datetime | None = _ts(nullable=True)
    source: str = Field(default=AllocationSource.planned.value, max_length=L.SHORT_ENUM_LEN)
    observer: str = Field(default="", max_length=L.NAME_LEN)
    plan_id: str | None = Field(default=None, max_length=L.PLAN_ID_LEN)


class Price(SQLModel, table=True):
    """USD per GPU-hour for a GPU type and pricing class, from a date on."""

    __tablename__ = "price"
    __table_args__ = (
        UniqueConstraint("gpu_type", "pricing_class", "effective_from", name="uq_price"),
    )

    id: int | None = _id()
    gpu_type: str = Field(max_length=64)
    pricing_class: str = Field(max_length=32)
    usd_per_hour: float = Field(ge=0)
    effective_from: datetime = _ts(index=False)


class LedgerEntry(SQLModel, table=True):
    """Cost and usage of one hour x model x customer x request_type.

    Idle rows have customer = request_type = IDLE; unallocated rows have model = customer =
    request_type = UNALLOCATED, unpriced rows (GPU-seconds, 0 cents) the same with UNPRICED.
    ``hour`` is the start of the row's bucket (``ledger_resolution_s``, an hour by default).
    ``cost_cents`` is the official figure; ``gpu_cost_usd`` the exact share before rounding and
    ``cost_adjustment_usd`` what largest-remainder rounding added, so that the cents of an hour
    add up to that hour's metered cents.
    """

    __tablename__ = "ledger_entry"
    __table_args__ = (
        UniqueConstraint("hour", "model", "customer", "request_type", "kind", name="uq_ledger"),
        Index("ix_ledger_customer_hour", "customer", "hour"),
    )

    id: int | None = _id()
    hour: datetime = _ts()
    model: str = Field(max_length=L.NAME_LEN)
    customer: str = Field(max_length=L.NAME_LEN)
    request_type: str = Field(max_length=L.REQUEST_TYPE_LEN)
    kind: str = Field(max_length=L.SHORT_ENUM_LEN)
    gpu_seconds: float = 0.0
    input_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    output_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    requests: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    gpu_cost_usd: float = 0.0
    cost_adjustment_usd: float = 0.0
    cost_cents: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))

    @property
    def total_cost_usd(self) -> float:
        """The billed cost in USD (cents / 100)."""
        return self.cost_cents / 100


class LedgerHour(SQLModel, table=True):
    """What was metered in one hour: the total the ledger rows of that hour must add up to."""

    __tablename__ = "ledger_hour"

    hour: datetime = Field(sa_column=Column(UTCDateTime(), primary_key=True))
    metered_gpu_seconds: float = 0.0
    metered_cost_usd: float = 0.0
    metered_cost_cents: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    computed_at: datetime = _ts(index=False)


class DeviceHour(SQLModel, table=True):
    """GPU or MIG-instance samples summed per hour (written by the rollup with the ledger).

    What dashboards read instead of raw samples: a 30-day window is hours x devices rows.
    busy_s = Σ sm_util/100 x interval_s (a sample without sm_util counts as not busy).
    """

    __tablename__ = "device_hour"

    hour: datetime = Field(sa_column=Column(UTCDateTime(), primary_key=True))
    gpu_uuid: str = Field(max_length=200, primary_key=True)
    parent_uuid: str | None = Field(default=None, max_length=200)
    gpu_type: str = Field(max_length=64)
    mig_profile: str | None = Field(default=None, max_length=32)
    sample_s: float = 0.0
    busy_s: float = 0.0
    first: datetime = _ts(index=False)
    last: datetime = _ts(index=False)
    interval_s: float = 0.0


class DirtyHour(SQLModel, table=True):
    """An hour whose inputs changed since a rollup last computed it (written by ingest).

    Ingest upserts the hours its rows touch in the same transaction as the rows, setting
    ``marked_at`` to the time of the write; the rollup job recomputes every marked hour and
    deletes a mark only if ``marked_at`` is still the value it read.
    """

    __tablename__ = "dirty_hour"

    hour: datetime = Field(sa_column=Column(UTCDateTime(), primary_key=True))
    marked_at: datetime = _ts(index=False)


class ApiRole(StrEnum):
    admin = "admin"
    ingest = "ingest"
    read = "read"


class ApiKey(SQLModel, table=True):
    """An API key: only its SHA-256 is stored; ``customer`` scopes a read key to one tenant."""

    __tablename__ = "api_key"

    id: int | None = _id()
    name: str = Field(max_length=L.NAME_LEN)
    prefix: str = Field(max_length=L.KEY_PREFIX_LEN, index=True, unique=True)
    key_hash: str = Field(max_length=L.KEY_HASH_LEN)
    role: str = Field(max_length=L.SHORT_ENUM_LEN)
    customer: str | None = Field(default=None, max_length=L.NAME_LEN)
    created_at: datetime = _ts(index=False)
    revoked_at: datetime | None = _ts(index=False, nullable=True)


class JobOutcome(StrEnum):
    running = "running"
    ok = "ok"
    error = "error"
    abandoned = "abandoned"


class JobRun(SQLModel, table=True):
    """One run of a scheduled job by one worker, for one slot of the job's schedule.

    ``abandoned``: the run's worker died mid-run (the next worker holding the job's lock found
    it still ``running``) and the slot was run again.
    """

    __tablename__ = "job_run"
    __table_args__ = (Index("ix_job_run_job_slot", "job", "slot"),)

    id: int | None = _id()
    job: str = Field(max_length=100)
    slot: datetime = _ts(index=False)
    worker_id: str = Field(max_length=200)
    started_at: datetime = _ts()
    finished_at: datetime | None = _ts(index=False, nullable=True)
    outcome: str = Field(default=JobOutcome.running.value, max_length=16)
    error: str | None = Field(default=None, max_length=1000)
    detail: str | None = Field(default=None, max_length=1000)


class PullCursor(SQLModel, table=True):
    """How far a pull job has read an outside source: everything before ``until`` is stored.

    One row per source (``dcgm``: the DCGM pull through Prometheus). Re-reading before
    ``until`` is harmless (every pulled row has an idempotency key); the cursor only saves
    the work.
    """

    __tablename__ = "pull_cursor"

    source: str = Field(max_length=100, primary_key=True)
    until: datetime = _ts(index=False)
    updated_at: datetime = _ts(index=False)
