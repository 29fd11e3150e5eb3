"""Scheduler settings: the part of costctl's Settings that scheduler/ reads."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class SchedulerConfig(BaseModel):
    """Settings for NVML sampling, planning and applying."""

    nvml_backend: Literal["pynvml", "simulated"] = Field(
        default="simulated",
        description="pynvml: the real driver library; simulated: scheduler's fake pynvml fleet.",
    )
    sample_interval_s: float = Field(default=5.0, gt=0)
    headroom: float = Field(default=0.2, ge=0, le=2)
    node_name: str = "local"
    kube_namespace: str = "default"
