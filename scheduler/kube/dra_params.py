"""A typed model of the NVIDIA DRA driver's ``GpuConfig`` opaque parameters.

Written from the driver's documented API (NVIDIA/k8s-dra-driver-gpu,
``api/nvidia.com/resource/v1beta1``: gpuconfig.go, sharing.go, validate.go), so a claim
costctl renders is refused here for the same reasons the driver would refuse it:

- ``apiVersion: resource.nvidia.com/v1beta1``, ``kind: GpuConfig``; unknown fields are
  errors (the driver decodes claim parameters with its StrictDecoder);
- ``sharing.strategy`` is ``TimeSlicing`` or ``MPS``; ``timeSlicingConfig`` is refused with
  MPS and ``mpsConfig`` with TimeSlicing (``GetMpsConfig`` / ``GetTimeSlicingConfig``);
- ``timeSlicingConfig.interval`` is one of Default, Short, Medium, Long;
- ``mpsConfig.defaultActiveThreadPercentage`` is in [0, 100];
  ``defaultPinnedDeviceMemoryLimit`` (and each ``defaultPerDevicePinnedMemoryLimit`` value,
  keyed by device index or UUID) is a Kubernetes quantity of at least 1 MiB (the driver
  turns it into whole megabytes and refuses 0).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

API_VERSION: Literal["resource.nvidia.com/v1beta1"] = "resource.nvidia.com/v1beta1"
DRIVER = "gpu.nvidia.com"
TimeSliceInterval = Literal["Default", "Short", "Medium", "Long"]

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_FACTOR = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def quantity_bytes(text: str) -> int:
    """Bytes of a Kubernetes quantity ("10Gi", "512Mi", "1.5G"). Raises: ValueError."""
    m = _QUANTITY.match(text)
    if m is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return int(Decimal(m.group(1)) * _FACTOR[m.group(2)])


def _pinned_limit(text: str) -> str:
    if quantity_bytes(text) // 2**20 <= 0:
        raise ValueError(f"pinned memory limit {text!r} is below 1Mi (the driver refuses it)")
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class TimeSlicingConfig(_Strict):
    """CUDA time-slicing settings of a claim's GPUs."""

    interval: TimeSliceInterval | None = None


class MpsConfig(_Strict):
    """Settings of the MPS control daemon the driver starts for one claim."""

    default_active_thread_percentage: int | None = Field(
        default=None, ge=0, le=100, alias="defaultActiveThreadPercentage"
    )
    default_pinned_device_memory_limit: str | None = Field(
        default=None, alias="defaultPinnedDeviceMemoryLimit"
    )
    default_per_device_pinned_memory_limit: dict[str, str] | None = Field(
        default=None, alias="defaultPerDevicePinnedMemoryLimit"
    )

    @field_validator("default_pinned_device_memory_limit")
    @classmethod
    def _limit(cls, v: str | None) -> str | None:
        return None if v is None else _pinned_limit(v)

    @field_validator("default_per_device_pinned_memory_limit")
    @classmethod
    def _per_device(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return None if v is None else {k: _pinned_limit(q) for k, q in v.items()}

    def pinned_mib(self) -> int | None:
        """The default pinned memory limit in whole MiB, as the driver passes it (None: unset)."""
        q = self.default_pinned_device_memory_limit
        return None if q is None else quantity_bytes(q) // 2**20


class GpuSharing(_Strict):
    """How the GPUs of one claim are shared among its consumers."""

    strategy: Literal["TimeSlicing", "MPS"]
    time_slicing_config: TimeSlicingConfig | None = Field(default=None, alias="timeSlicingConfig")
    mps_config: MpsConfig | None = Field(default=None, alias="mpsConfig")

    @model_validator(mode="after")
    def _one_config(self) -> GpuSharing:
        if self.strategy == "MPS" and self.time_slicing_config is not None:
            raise ValueError("cannot use TimeSlicingConfig with the 'MPS' strategy")
        if self.strategy == "TimeSlicing" and self.mps_config is not None:
            raise ValueError("cannot use MpsConfig with the 'TimeSlicing' strategy")
        return self


class GpuConfig(_Strict):
    """``resource.nvidia.com/v1beta1`` GpuConfig: the opaque parameters of a GPU request."""

    api_version: Literal["resource.nvidia.com/v1beta1"] = Field(
        default=API_VERSION, alias="apiVersion"
    )
    kind: Literal["GpuConfig"] = "GpuConfig"
    sharing: GpuSharing | None = None

    def to_json(self) -> dict[str, object]:
        """The parameters as the claim carries them (camelCase, unset fields left out)."""
        out: dict[str, object] = self.model_dump(by_alias=True, exclude_none=True)
        return out


def mps_config(thread_pct: int, pinned_mib: int) -> GpuConfig:
    """GpuConfig for an MPS-shared GPU with these daemon defaults."""
    return GpuConfig(
        sharing=GpuSharing(
            strategy="MPS",
            mps_config=MpsConfig(
                default_active_thread_percentage=thread_pct,
                default_pinned_device_memory_limit=f"{pinned_mib}Mi",
            ),
        )
    )


def time_slicing_config(interval: TimeSliceInterval = "Default") -> GpuConfig:
    """GpuConfig for a time-sliced GPU."""
    return GpuConfig(
        sharing=GpuSharing(
            strategy="TimeSlicing", time_slicing_config=TimeSlicingConfig(interval=interval)
        )
    )
