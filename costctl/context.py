"""What every command needs: settings, an engine built once, the clock, error exits."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NoReturn

import typer
from sqlalchemy.engine import Engine

from billing.db import init_db, make_engine
from costctl.settings import Settings

EXIT_USAGE = 2


@dataclass
class AppContext:
    """Settings plus a lazily built, initialised engine."""

    settings: Settings
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def engine(self) -> Engine:
        """The database engine (tables created on first use)."""
        if self._engine is None:
            self._engine = make_engine(self.settings.database_url)
            init_db(self._engine)
        return self._engine


def now() -> datetime:
    """The wall clock, UTC (only entry points call this)."""
    return datetime.now(UTC)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` to stderr and exit (2 = bad input)."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def get_ctx(ctx: typer.Context) -> AppContext:
    """The AppContext that the root callback stored."""
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext)
    return obj
