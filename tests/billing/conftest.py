"""Billing fixtures: ``store`` = an initialised engine on SQLite, PostgreSQL, and PostgreSQL in
a database whose default time zone is Asia/Kolkata (UTC+05:30).

``postgres-kolkata`` goes through ``billing.db.make_engine`` (which forces sessions to UTC);
``postgres-kolkata-session`` connects with the database's own zone, so a test passes there
only if the code is right in any session zone, not just because the session is UTC.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

from billing.db import init_db, make_engine
from tests.conftest import KOLKATA, PG_URL, _pg_problem, need_service

ZONE = KOLKATA


def _kolkata_engine(url: str, schema: str, *, own_zone: bool) -> Engine:
    if not own_zone:
        return make_engine(url, schema=schema)
    eng = create_engine(
        url.replace("postgresql://", "postgresql+psycopg://"),
        connect_args={"options": f"-c search_path={schema}"},
    )
    with eng.connect() as c:
        assert c.execute(text("SHOW timezone")).scalar_one() == ZONE
    return eng


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("postgres-kolkata", marks=pytest.mark.postgres),
        pytest.param("postgres-kolkata-session", marks=pytest.mark.postgres),
    ]
)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A fresh, migrated store on each backend and time zone."""
    kind = str(request.param)
    if kind == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('db') / 'costctl.db'}")
        init_db(eng)
        yield eng
        eng.dispose()
        return
    need_service(_pg_problem())
    url = PG_URL if kind == "postgres" else request.getfixturevalue("kolkata_db")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(url)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    if kind == "postgres":
        eng = make_engine(url, schema=schema)
    else:
        eng = _kolkata_engine(url, schema, own_zone=kind.endswith("session"))
    init_db(eng)
    yield eng
    eng.dispose()
    with admin.begin() as c:
        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()
