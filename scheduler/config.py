"""Scheduler settings: the part of costctl's Settings that scheduler/ reads."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

KNOWN_MODES = ("gpu", "mig", "mps", "timeslice")
KNOWN_SCORES = (
    "Price",
    "MostAllocated",
    "Efficiency",
    "IsolationMatch",
    "Stability",
    "HostBalance",
    "NodePack",
)


# The score plugins' default weights (also Policy's defaults, in this order).
DEFAULT_SCORE_WEIGHTS: dict[str, int] = {
    "Price": 4,
    "MostAllocated": 2,
    "Efficiency": 2,
    "IsolationMatch": 1,
    "Stability": 1,
    "HostBalance": 13,
    "NodePack": 6,
}


class SchedulerConfig(BaseModel):
    """Settings for NVML sampling, planning and applying."""

    nvml_backend: Literal["pynvml", "simulated"] = Field(
        default="simulated",
        description="pynvml: the real driver library; simulated: scheduler's fake pynvml fleet.",
    )
    sample_interval_s: float = Field(default=5.0, gt=0)
    headroom: float = Field(default=0.2, ge=0, le=2)
    mem_headroom: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="memory margin on the measured peak (weights are static)",
    )
    node_name: str = "local"
    kube_namespace: str = "default"
    modes: list[str] = Field(default_factory=lambda: list(KNOWN_MODES))
    score_weights: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_SCORE_WEIGHTS))
    max_mps_clients: int = Field(default=48, ge=1, le=48)
    max_timeslice_replicas: int = Field(default=16, ge=1)
    mps_shares: Literal["equal", "per-claim"] = Field(
        default="equal",
        description="equal: MPS clients of a GPU get equal shares (the device plugin's MPS); "
        "per-claim: each client its own share (DRA claims carry them; `--target dra`)",
    )
    demand_window_h: float = Field(default=24.0, gt=0)
    device_plugin_configmap: str = "costctl-device-plugin"
    mig_parted_configmap: str = "costctl-mig-parted"
    gpu_operator_namespace: str = Field(
        default="gpu-operator",
        description="namespace of the NVIDIA GPU Operator (OpenShift: nvidia-gpu-operator); "
        "costctl's mig-parted and device-plugin ConfigMaps are written there",
    )
    drain_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="how long apply waits for a repartitioned node's GPU pods to leave",
    )
    apply_timeout_s: float = Field(default=600.0, gt=0)
    api_retries: int = Field(default=5, ge=0)
    model_isolation: dict[str, Literal["strict", "shared", "best-effort"]] = Field(
        default_factory=dict, description="isolation class per model (default shared)"
    )
    model_latency: dict[str, Literal["interactive", "batch"]] = Field(
        default_factory=dict, description="latency class per model (default interactive)"
    )
    model_cpu_milli: dict[str, int] = Field(
        default_factory=dict, description="CPU request (milli) of one replica's pod per model"
    )
    model_memory_mib: dict[str, int] = Field(
        default_factory=dict, description="memory request (MiB) of one replica's pod per model"
    )
    node_cpu_milli: dict[str, int] = Field(
        default_factory=dict,
        description="allocatable CPU (milli) per node for the planner (unset: not limited)",
    )
    node_memory_mib: dict[str, int] = Field(
        default_factory=dict,
        description="allocatable memory (MiB) per node for the planner (unset: not limited)",
    )

    prometheus_url: str | None = Field(
        default=None,
        description="Prometheus that scrapes dcgm-exporter (unset: the DCGM pull is off). "
        "Nodes it covers must not also run `costctl agent` (GPU time would be sampled twice).",
    )
    prometheus_step_s: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="sampling grid of the DCGM pull: one sample per device per step "
        "(keep it >= the dcgm-exporter scrape interval)",
    )
    prometheus_timeout_s: float = Field(default=10.0, gt=0)
    prometheus_lag_s: float = Field(
        default=10.0,
        ge=0,
        description="the pull stops this far before now, so scrapes in flight have landed",
    )
    prometheus_selector: str = Field(
        default="",
        description='PromQL label matchers added to every DCGM query, e.g. job="dcgm-exporter"',
    )
    dcgm_pull_interval_s: float = Field(default=60.0, gt=0)
    dcgm_backfill_s: float = Field(
        default=3600.0, ge=0, description="how far back the first DCGM pull starts"
    )
    dcgm_gpu_types: dict[str, str] = Field(
        default_factory=dict,
        description="extra dcgm-exporter modelName -> price-book GPU type entries",
    )
    dcgm_pricing_class: dict[str, str] = Field(
        default_factory=dict, description="pricing class per node (Hostname); default on-demand"
    )
    dcgm_workload_labels: Literal["auto", "exported"] = Field(
        default="auto",
        description="auto: exported_pod/... when present, else pod/namespace/container; "
        "exported: only exported_* (the scrape adds the exporter's own pod labels)",
    )

    @field_validator("modes")
    @classmethod
    def _known_modes(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in KNOWN_MODES]
        if bad:
            raise ValueError(f"unknown sharing mode(s) {bad}; known: {list(KNOWN_MODES)}")
        return v

    @field_validator("score_weights")
    @classmethod
    def _known_scores(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [k for k in v if k not in KNOWN_SCORES]
        if bad:
            raise ValueError(f"unknown score plugin(s) {bad}; known: {list(KNOWN_SCORES)}")
        if any(w < 0 for w in v.values()):
            raise ValueError("score weights must be >= 0")
        return v
