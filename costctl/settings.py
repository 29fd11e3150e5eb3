"""The one Settings object, read from the environment (prefix COSTCTL_) and passed explicitly."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, computed_field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from billing.config import BillingConfig
from scheduler.config import SchedulerConfig

DEFAULT_DB = Path.home() / ".local" / "share" / "costctl" / "costctl.db"


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
    billing: BillingConfig = BillingConfig()
    scheduler: SchedulerConfig = SchedulerConfig()

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
