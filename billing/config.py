"""Billing settings: the part of costctl's Settings that billing reads.

Plain pydantic models, filled by ``costctl.settings.Settings`` and passed in explicitly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from billing.enforcement.config import EnforcementConfig

DEFAULT_PRICE_BOOK = Path(__file__).with_name("price_book.yaml")


class AttributionWeights(BaseModel):
    """How a model's GPU cost is split among its customers and request types.

    Details: weight(row) = input_tokens * input + output_tokens * output + requests * request.
    Output tokens default to 4x input tokens: decode steps hold the GPU far longer per token
    than prefill does.
    """

    input: float = Field(default=1.0, ge=0)
    output: float = Field(default=4.0, ge=0)
    request: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _not_all_zero(self) -> AttributionWeights:
        if self.input == 0 and self.output == 0 and self.request == 0:
            raise ValueError("at least one attribution weight must be > 0")
        return self


IdlePolicy = Literal["utilization", "allocation"]


ExportFormat = Literal["csv", "parquet", "xlsx", "html"]


class WeeklyExportConfig(BaseModel):
    """The weekly cost-review export job (dashboard.jobs): cron in UTC, where, which formats."""

    enabled: bool = True
    day_of_week: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "mon"
    hour: int = Field(default=6, ge=0, le=23)
    minute: int = Field(default=0, ge=0, le=59)
    dir: Path = Path.home() / ".local" / "share" / "costctl" / "exports"
    formats: list[ExportFormat] = Field(default=["html", "xlsx"], min_length=1)
    top_n: int = Field(default=10, ge=1, le=1000)


class BillingConfig(BaseModel):
    """Settings for metering, attribution and the API."""

    price_book_path: Path = DEFAULT_PRICE_BOOK
    weights: AttributionWeights = AttributionWeights()
    idle_policy: IdlePolicy = Field(
        default="utilization",
        description=(
            "utilization: a model's allocated cost is billed in proportion to its measured SM "
            "busy fraction, the rest is that model's idle row (showback). allocation: tenants pay "
            "the whole allocation whenever the model served requests in the hour (chargeback)."
        ),
    )
    rollup_interval_s: int = Field(default=60, ge=1)
    rollup_lookback_h: int = Field(
        default=2,
        ge=1,
        description="Hours the rollup job recomputes every run, besides every hour ingest marked.",
    )
    rollup_max_window_h: int = Field(
        default=24, ge=1, description="Longest window one rollup call computes (dirty hours)."
    )
    ledger_resolution_s: int = Field(
        default=3600,
        description=(
            "Length of a ledger bucket in seconds (epoch-aligned; divides 3600, >= 60). "
            "GET /v1/costs is exact for windows of whole buckets and refuses shorter ones."
        ),
    )
    max_batch: int = Field(default=10_000, ge=1, le=100_000)
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Larger request bodies get 413."
    )
    max_json_depth: int = Field(
        default=32, ge=4, le=1000, description="Deeper-nested JSON bodies get 422."
    )
    require_auth: bool = True
    bootstrap_admin_key: str | None = Field(
        default=None,
        description="If set, an admin API key with this secret exists at start-up.",
    )
    enforcement: EnforcementConfig = EnforcementConfig()
    export: WeeklyExportConfig = WeeklyExportConfig()

    @field_validator("ledger_resolution_s")
    @classmethod
    def _divides_an_hour(cls, v: int) -> int:
        if v < 60 or 3600 % v:
            raise ValueError("ledger_resolution_s must divide 3600 and be >= 60 (e.g. 300)")
        return v

    @field_validator("bootstrap_admin_key")
    @classmethod
    def _refuse_weak_key(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"cc_[0-9a-f]{8}_[A-Za-z0-9_\-]{16,}", v):
            raise ValueError(
                "bootstrap_admin_key must look like cc_<8 hex>_<16+ url-safe chars>; "
                "make one with `costctl keys new`"
            )
        return v
