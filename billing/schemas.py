"""Validated input shapes for ingestion: usage events (plain or CloudEvents) and GPU samples."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
    with_config,
)
from typing_extensions import TypedDict

from billing import limits as L

MAX_TOKENS = 10_000_000


# Names must not start with "__" (reserved for idle/unallocated rows). Written as a pattern
# without look-ahead so pydantic-core checks it in Rust, not in a Python callback per field.
NOT_RESERVED = r"^(?s:[^_].*|_|_[^_].*)$"
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=L.NAME_LEN, pattern=NOT_RESERVED
    ),
]
RequestType = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=L.REQUEST_TYPE_LEN, pattern=NOT_RESERVED
    ),
]
Key = Annotated[str, StringConstraints(min_length=1, max_length=L.NAME_LEN)]
# Aware datetimes only (naive ones are refused in Rust), bounded so that converting to UTC
# cannot overflow; storage converts to UTC.
UtcDatetime = Annotated[AwareDatetime, Field(ge=L.MIN_TIME, le=L.MAX_TIME)]
# Strict: "812", true and 2.0 are not token counts.
Tokens = Annotated[int, Field(ge=0, le=MAX_TOKENS, strict=True)]
# Finite, non-negative floats (NaN/Infinity refused).
Amount = Annotated[float, Field(ge=0, le=1e15, allow_inf_nan=False)]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
IntervalS = Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]

GpuType = Annotated[str, StringConstraints(min_length=1, max_length=L.GPU_TYPE_LEN)]
PricingClass = Annotated[str, StringConstraints(min_length=1, max_length=L.PRICING_CLASS_LEN)]
MigProfile = Annotated[str, StringConstraints(max_length=L.MIG_PROFILE_LEN)]
Fault = Annotated[str, StringConstraints(max_length=L.FAULT_LEN)]
PodUid = Annotated[str, StringConstraints(max_length=L.POD_UID_LEN)]
PlanId = Annotated[str, StringConstraints(max_length=L.PLAN_ID_LEN)]
Observer = Annotated[str, StringConstraints(min_length=1, max_length=L.OBSERVER_LEN)]
OptText = Annotated[str, StringConstraints(max_length=L.NAME_LEN)]
PodName = Annotated[str, StringConstraints(max_length=L.K8S_NAME_LEN)]
Int32 = Annotated[int, Field(ge=0, le=L.INT32_MAX, strict=True)]


Status = Literal["ok", "error", "timeout", "cancelled"]


@with_config(ConfigDict(extra="forbid"))
class UsageEventIn(TypedDict):
    """A usage event as a client sends it (validated into a plain dict).

    A TypedDict, not a BaseModel: pydantic-core validates a batch of them 3-5x faster, which
    is most of the ingest path's CPU (see BENCHMARKS.md). CloudEvents 1.0 structured events
    are flattened by ``flatten_cloudevent`` before validation.
    """

    id: Key
    source: Key
    time: UtcDatetime
    model: Name
    customer: Name
    request_type: RequestType
    input_tokens: Tokens
    output_tokens: Tokens
    latency_ms: NotRequired[
        Annotated[float, Field(ge=0, le=86_400_000, allow_inf_nan=False)] | None
    ]
    status: NotRequired[Status]
    device_id: NotRequired[OptText | None]


def flatten_cloudevent(value: Any) -> Any:
    """A CloudEvents 1.0 structured event as a plain usage event; anything else unchanged.

    Raises: ValueError for another specversion or a ``data`` that is not an object.
    """
    if not (isinstance(value, dict) and "specversion" in value):
        return value
    if value.get("specversion") != "1.0":
        raise ValueError("only CloudEvents specversion 1.0 is supported")
    data = value.get("data")
    if not isinstance(data, dict):
        raise ValueError("a CloudEvent's data must be an object with the usage fields")
    flat = {k: v for k, v in value.items() if k in ("id", "source", "time")}
    flat.update(data)
    return flat


USAGE_BATCH = TypeAdapter(list[UsageEventIn])
USAGE_EVENT = TypeAdapter(UsageEventIn)


class GpuSampleIn(BaseModel):
    """One GPU or MIG-instance reading (see billing.models.GpuSample)."""

    model_config = ConfigDict(extra="forbid")

    ts: UtcDatetime
    node: Key
    gpu_uuid: Key
    parent_uuid: Key | None = None
    gpu_index: Int32 = 0
    gpu_type: GpuType
    pricing_class: PricingClass = "on-demand"
    mig_profile: MigProfile | None = None
    sm_util: Percent | None = None
    mem_used_mib: Amount | None = None
    mem_total_mib: Amount | None = None
    power_w: Amount | None = None
    energy_j: Amount | None = None
    interval_s: IntervalS
    fault: Fault | None = None


class GpuProcessSampleIn(BaseModel):
    """One compute process on a GPU or MIG instance (see billing.models.GpuProcessSample)."""

    model_config = ConfigDict(extra="forbid")

    ts: UtcDatetime
    device_uuid: Key
    gpu_uuid: Key
    pid: Int32
    pod_uid: PodUid | None = None
    namespace: OptText | None = None
    pod: PodName | None = None
    model: OptText | None = None
    sm_util: Percent | None = None
    mem_used_mib: Amount | None = None
    interval_s: IntervalS


class GpuSampleBatch(BaseModel):
    """What a collector posts: GPU readings and the processes seen at them."""

    model_config = ConfigDict(extra="forbid")

    samples: list[GpuSampleIn] = Field(default_factory=list, max_length=100_000)
    processes: list[GpuProcessSampleIn] = Field(default_factory=list, max_length=100_000)


AllocationModeIn = Literal["gpu", "mig", "mps", "timeslice"]
K8sName = Annotated[str, StringConstraints(min_length=1, max_length=L.K8S_NAME_LEN)]


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


class AllocationIn(BaseModel):
    """One observed (or planned) holding of a device by a pod's container.

    The natural key is (source, device_uuid, namespace, pod, container, start); re-posting it
    sets ``end`` when given and never clears a stored one. ``fraction`` is the share of the
    PHYSICAL GPU's price the holding carries: whole GPU 1, MIG SM slices/7 (A30: /4),
    MPS/time-slicing 1/replicas of that GPU.
    """

    model_config = ConfigDict(extra="forbid")

    device_uuid: Key
    gpu_uuid: Key
    node: Key
    namespace: K8sName
    pod: K8sName
    container: K8sName
    pod_uid: PodUid | None = None
    model: Name
    mode: AllocationModeIn
    profile: MigProfile | None = None
    fraction: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    start: Annotated[UtcDatetime, AfterValidator(_utc)]
    end: Annotated[UtcDatetime, AfterValidator(_utc)] | None = None
    source: Literal["observed", "planned"] = "observed"
    observer: Observer
    plan_id: PlanId | None = None

    @model_validator(mode="after")
    def _end_after_start(self) -> AllocationIn:
        if self.end is not None and self.end < self.start:
            raise ValueError("end must not be before start")
        return self


ALLOCATION_BATCH = TypeAdapter(list[AllocationIn])


class AllocationResult(BaseModel):
    """What an allocations post did: received = inserted + updated + unchanged."""

    received: int
    inserted: int
    updated: int
    unchanged: int


class AllocationPublic(BaseModel):
    """An allocation as ``GET /v1/allocations`` returns it."""

    id: int
    device_uuid: str
    gpu_uuid: str
    node: str
    namespace: str
    pod: str
    container: str
    pod_uid: str | None
    model: str
    mode: str
    profile: str | None
    fraction: float
    start: datetime
    end: datetime | None
    source: str
    observer: str
    plan_id: str | None


class EventError(BaseModel):
    """One invalid field of one event of a batch."""

    index: int
    loc: list[str | int]
    msg: str
    type: str


class RejectedEvent(BaseModel):
    """An event a ``partial=true`` batch did not store, and why."""

    index: int
    errors: list[EventError]


class IngestResult(BaseModel):
    """What an ingestion call did. received = inserted + duplicates + len(rejected)."""

    received: int
    inserted: int
    duplicates: int
    rejected: list[RejectedEvent] = Field(default_factory=list)


def utc_text(ts: datetime) -> str:
    """An aware datetime as the UTC text SQLAlchemy's SQLite DateTime reads back.

    Details: shift by the UTC offset and cut the offset off the C-level isoformat: about twice
    as fast as astimezone + strftime, which matters at 10^6 events.
    """
    off = ts.utcoffset()
    if off:
        ts = ts - off
    return ts.isoformat(" ", "microseconds")[:26]


__all__ = [
    "ALLOCATION_BATCH",
    "USAGE_BATCH",
    "USAGE_EVENT",
    "AllocationIn",
    "AllocationPublic",
    "AllocationResult",
    "GpuProcessSampleIn",
    "GpuSampleBatch",
    "GpuSampleIn",
    "IngestResult",
    "UsageEventIn",
    "utc_text",
]
