"""Shared fixtures: a database engine per backend, Redis, the clock.

PostgreSQL and Redis tests need the servers in COSTCTL_TEST_POSTGRES_URL / _REDIS_URL
(defaults: 127.0.0.1:5432/test and 127.0.0.1:6379/15). Without them the tests skip and say
why, unless COSTCTL_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from billing.db import init_db, make_engine

PG_URL = os.environ.get("COSTCTL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("COSTCTL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE = os.environ.get("COSTCTL_REQUIRE_SERVICES") == "1"


@cache
def _pg_problem() -> str | None:
    try:
        eng = make_engine(PG_URL)
        with eng.connect() as c:
            c.execute(text("SELECT 1"))
        eng.dispose()
    except Exception as exc:
        return f"PostgreSQL unreachable at {PG_URL}: {type(exc).__name__}: {exc}"[:300]
    return None


@cache
def _redis_problem() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        return f"Redis unreachable at {REDIS_URL}: {type(exc).__name__}: {exc}"[:300]
    return None


def need_service(problem: str | None) -> None:
    """Skip (laptop) or fail (CI) when a service is unreachable."""
    if problem is None:
        return
    if REQUIRE:
        pytest.fail(f"{problem} (COSTCTL_REQUIRE_SERVICES=1)")
    pytest.skip(problem)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the storage backend under test."""
    return str(request.param)


@pytest.fixture
def bare_engine(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An empty store on each backend (a new SQLite file, or a new PG schema): no tables."""
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("db") / "costctl.db"
        eng = make_engine(f"sqlite:///{path}")
        yield eng
        eng.dispose()
        return
    need_service(_pg_problem())
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    eng = make_engine(PG_URL, schema=schema)
    yield eng
    eng.dispose()
    with admin.begin() as c:
        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def engine(bare_engine: Engine) -> Engine:
    """A fresh store on each backend, migrated to head (a file in WAL mode, or a PG schema)."""
    init_db(bare_engine)
    return bare_engine


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database emptied before the test."""
    need_service(_redis_problem())
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


KOLKATA = "Asia/Kolkata"


@pytest.fixture(scope="session")
def kolkata_db() -> Iterator[str]:
    """URL of a scratch database whose default time zone is Asia/Kolkata (dropped after)."""
    need_service(_pg_problem())
    name = f"costctl_tz_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
        c.execute(text(f"ALTER DATABASE {name} SET timezone TO '{KOLKATA}'"))
    yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as c:
        c.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()
