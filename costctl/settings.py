"""The one Settings object, read from the environment (prefix COSTCTL_) and passed explicitly."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, computed_field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from billing.config import BillingConfig
from scheduler.agent.config import AgentConfig
from scheduler.config import SchedulerConfig

DEFAULT_DB = Path.home() / ".local" / "share" / "costctl" / "costctl.db"


class WorkerConfig(BaseModel):
    """`costctl worker`: how fast a dead worker's jobs are taken over."""

    lease_s: float = Field(
        default=10.0,
        ge=0.2,
        le=3600,
        description="A worker ticks each job every lease_s/2; a dead worker's jobs are taken "
        "over within one tick of its lock's release (kill -9: at once; a vanished host: "
        "TCP keepalives end its PostgreSQL session within about lease_s).",
    )

    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Serve the worker's Prometheus metrics (the rollup's unpriced GPU time) "
        "on this port at /metrics; 0: off.",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Bind address of metrics_port.")


class DashboardConfig(BaseModel):
    """`costctl dashboard`."""

    session_secret: SecretStr | None = Field(
        default=None,
        description="Signs the login cookie; the same on every replica, or each replica signs "
        "the others' users out. Unset: a random secret per process (one replica only).",
    )
    threads: int = Field(default=8, ge=1, le=256, description="WSGI server threads.")


class Settings(BaseSettings):
    """costctl settings.

    Environment: COSTCTL_DATABASE_URL, COSTCTL_REDIS_URL, nested sections with a double
    underscore (COSTCTL_BILLING__IDLE_POLICY=allocation, COSTCTL_SCHEDULER__HEADROOM=0.3).
    """

    model_config = SettingsConfigDict(
        env_prefix="COSTCTL_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    database_url: str = Field(default=f"sqlite:///{DEFAULT_DB}")
    redis_url: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    dashboard_port: int = Field(default=8050, ge=1, le=65535)
    api_url: str | None = Field(
        default=None,
        description="The costctl API (COSTCTL_API_URL): commands that change state go "
        "through it instead of the local database when set.",
    )
    api_key: SecretStr | None = None
    billing: BillingConfig = BillingConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    worker: WorkerConfig = WorkerConfig()
    dashboard: DashboardConfig = DashboardConfig()
    agent: AgentConfig = AgentConfig()

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if not v.startswith(("sqlite", "postgresql")):
            raise ValueError("database_url must be sqlite:///... or postgresql://...")
        return v

    @computed_field  # type: ignore[prop-decorator]
    @property
    def backend(self) -> str:
        """'sqlite' or 'postgres', derived from database_url."""
        return "sqlite" if self.database_url.startswith("sqlite") else "postgres"


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, read once (entry points only; cores take settings=)."""
    return Settings()
