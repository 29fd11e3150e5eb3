"""The database edge: engines for SQLite (WAL) and PostgreSQL, schema creation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from billing import models  # noqa: F401  (registers the tables on SQLModel.metadata)


def normalise_url(url: str) -> str:
    """Use the psycopg 3 driver for plain postgresql:// URLs."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.removeprefix("postgres://")
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def make_engine(url: str, *, schema: str | None = None, echo: bool = False) -> Engine:
    """An Engine for ``url``; SQLite files get WAL and their folder is created.

    ``schema`` (PostgreSQL only) sets the search_path, which is how tests isolate themselves.
    """
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # Every session speaks UTC, whatever the database's or role's default time zone: a
    # timestamptz read as local time of another zone shifts hours (and attribution) silently.
    options = "-c timezone=UTC"
    if schema:
        options += f" -c search_path={schema}"
    connect_args: dict[str, Any] = {"options": options}
    return create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args=connect_args,
    )


def init_db(engine: Engine) -> None:
    """Bring the schema to the code's head revision through the migrations (idempotent).

    For tests, ``serve``/``demo`` on a fresh SQLite file and ``costctl db upgrade``; the
    production roles only check the revision (``billing.migrations.state``) and refuse to run
    on a schema that is not at head.
    """
    from billing import migrations

    migrations.upgrade(engine)


def is_sqlite(engine: Engine) -> bool:
    """True when the engine talks to SQLite."""
    return engine.dialect.name == "sqlite"


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error (for services, not routes)."""
    with Session(engine) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
