"""What every command needs: settings, an engine built once, the clock, error exits."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn

import typer
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from billing import migrations
from billing.db import init_db, is_sqlite, make_engine
from billing.migrations import SchemaStatus
from costctl.settings import Settings

if TYPE_CHECKING:
    from costctl.remote import RemoteApi

EXIT_USAGE = 2


@dataclass
class AppContext:
    """Settings plus a lazily built engine whose schema is checked on first use."""

    settings: Settings
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def raw_engine(self) -> Engine:
        """The engine without a schema check (for `costctl db`)."""
        if self._engine is None:
            self._engine = make_engine(self.settings.database_url)
        return self._engine

    @property
    def engine(self) -> Engine:
        """The engine, its schema at head: a new SQLite file is created and migrated (the
        embedded default); any other store behind or ahead of the code exits 2 naming
        `costctl db upgrade`."""
        engine = self.raw_engine
        if not self._checked:
            require_schema(engine, create_sqlite=True)
            self._checked = True
        return engine

    _checked: bool = field(default=False, repr=False)

    @property
    def remote(self) -> RemoteApi | None:
        """The API client when ``api_url`` is set (state changes then go through the API)."""
        if not self.settings.api_url:
            return None
        from costctl.remote import RemoteApi

        key = self.settings.api_key
        return RemoteApi(self.settings.api_url, key.get_secret_value() if key else None)


def require_schema(engine: Engine, *, create_sqlite: bool = False) -> None:
    """Exit 2 with one line unless the schema is at head (``create_sqlite``: migrate an empty
    SQLite store first, as `serve`, `demo` and local commands may)."""
    try:
        st = migrations.state(engine)
        if create_sqlite and is_sqlite(engine) and st.status is SchemaStatus.empty:
            init_db(engine)
            st = migrations.state(engine)
    except OperationalError as exc:
        fail(f"database unreachable: {str(exc.orig).strip().splitlines()[0]}", code=1)
    if not st.ok:
        fail(st.message())


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
