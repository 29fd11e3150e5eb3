"""Validated input shapes for ingestion: usage events (plain or CloudEvents) and GPU samples."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from billing.models import EventStatus

MAX_TOKENS = 10_000_000


# Names must not start with "__" (reserved for idle/unallocated rows). Written as a pattern
# without look-ahead so pydantic-core checks it in Rust, not in a Python callback per field.
NOT_RESERVED = r"^(?s:[^_].*|_|_[^_].*)$"
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NOT_RESERVED),
]
Key = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# Aware datetimes only (naive ones are refused in Rust); storage converts to UTC.
UtcDatetime = AwareDatetime
Tokens = Annotated[int, Field(ge=0, le=MAX_TOKENS)]


class UsageEventIn(BaseModel):
    """A usage event as a client sends it.

    Accepts the plain form ``{"id", "source", "time", "model", ...}`` and a CloudEvents 1.0
    structured event ``{"specversion": "1.0", "id", "source", "type", "time", "data": {...}}``
    whose ``data`` carries the usage fields.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: Key
    source: Key
    time: UtcDatetime
    model: Name
    customer: Name
    request_type: Name
    input_tokens: Tokens
    output_tokens: Tokens
    latency_ms: Annotated[float, Field(ge=0, le=86_400_000)] | None = None
    status: EventStatus = EventStatus.ok
    device_id: Annotated[str, StringConstraints(max_length=200)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten_cloudevent(cls, value: Any) -> Any:
        if isinstance(value, dict) and "specversion" in value:
            if value.get("specversion") != "1.0":
                raise ValueError("only CloudEvents specversion 1.0 is supported")
            data = value.get("data")
            if not isinstance(data, dict):
                raise ValueError("a CloudEvent's data must be an object with the usage fields")
            flat = {k: v for k, v in value.items() if k in ("id", "source", "time")}
            flat.update(data)
            return flat
        return value


USAGE_BATCH = TypeAdapter(list[UsageEventIn])


class GpuSampleIn(BaseModel):
    """One GPU or MIG-instance reading (see billing.models.GpuSample)."""

    model_config = ConfigDict(extra="forbid")

    ts: UtcDatetime
    node: Key
    gpu_uuid: Key
    parent_uuid: Key | None = None
    gpu_index: Annotated[int, Field(ge=0)] = 0
    gpu_type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    pricing_class: Annotated[str, StringConstraints(min_length=1, max_length=32)] = "on-demand"
    mig_profile: Annotated[str, StringConstraints(max_length=32)] | None = None
    sm_util: Annotated[float, Field(ge=0, le=100)] | None = None
    mem_used_mib: Annotated[float, Field(ge=0)] | None = None
    mem_total_mib: Annotated[float, Field(ge=0)] | None = None
    power_w: Annotated[float, Field(ge=0)] | None = None
    energy_j: Annotated[float, Field(ge=0)] | None = None
    interval_s: Annotated[float, Field(gt=0, le=3600)]
    fault: Annotated[str, StringConstraints(max_length=200)] | None = None


class GpuProcessSampleIn(BaseModel):
    """One compute process on a GPU or MIG instance (see billing.models.GpuProcessSample)."""

    model_config = ConfigDict(extra="forbid")

    ts: UtcDatetime
    device_uuid: Key
    gpu_uuid: Key
    pid: Annotated[int, Field(ge=0)]
    pod_uid: Annotated[str, StringConstraints(max_length=64)] | None = None
    namespace: Annotated[str, StringConstraints(max_length=200)] | None = None
    pod: Annotated[str, StringConstraints(max_length=253)] | None = None
    model: Annotated[str, StringConstraints(max_length=200)] | None = None
    sm_util: Annotated[float, Field(ge=0, le=100)] | None = None
    mem_used_mib: Annotated[float, Field(ge=0)] | None = None
    interval_s: Annotated[float, Field(gt=0, le=3600)]


class GpuSampleBatch(BaseModel):
    """What a collector posts: GPU readings and the processes seen at them."""

    model_config = ConfigDict(extra="forbid")

    samples: list[GpuSampleIn] = Field(default_factory=list, max_length=100_000)
    processes: list[GpuProcessSampleIn] = Field(default_factory=list, max_length=100_000)


class IngestResult(BaseModel):
    """What an ingestion call did. received = inserted + duplicates + len(rejected)."""

    received: int
    inserted: int
    duplicates: int
    rejected: list[dict[str, Any]] = Field(default_factory=list)


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
    "USAGE_BATCH",
    "GpuProcessSampleIn",
    "GpuSampleBatch",
    "GpuSampleIn",
    "IngestResult",
    "UsageEventIn",
    "utc_text",
]
