"""Schema migrations (Alembic), run from Python: upgrade, downgrade, current, head, history.

The revisions live in ``billing/migrations/versions``; revision 0001 is the schema of the
first release (what ``create_all`` used to make). Every later schema change is a new revision.

A database made by ``create_all`` before migrations existed (tables present, no
``alembic_version``) is stamped at 0001 by ``upgrade`` and then upgraded: 0001 is exactly
that schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

HERE = Path(__file__).resolve().parent
BASELINE = "0001"
# A table of revision 0001 whose presence (without alembic_version) marks a pre-migration store.
_BASELINE_TABLE = "usage_event"


class SchemaStatus(StrEnum):
    at_head = "at_head"
    behind = "behind"
    ahead = "ahead"
    empty = "empty"
    drift = "drift"  # at head by its revision, but a table or column the code uses is missing


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands against the code's migrations."""

    current: str | None
    head: str
    status: SchemaStatus
    missing: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the schema is at the code's head revision."""
        return self.status is SchemaStatus.at_head

    def message(self) -> str:
        """One line for logs and exit messages."""
        if self.status is SchemaStatus.behind:
            return (
                f"database schema is at revision {self.current or 'none'}, this costctl needs "
                f"{self.head}: run `costctl db upgrade`"
            )
        if self.status is SchemaStatus.ahead:
            return (
                f"database schema is at revision {self.current}, newer than this costctl "
                f"(head {self.head}): run a costctl that knows it, or `costctl db downgrade`"
            )
        if self.status is SchemaStatus.empty:
            return "database has no costctl schema: run `costctl db upgrade`"
        if self.status is SchemaStatus.drift:
            shown = ", ".join(self.missing[:5]) + (" ..." if len(self.missing) > 5 else "")
            return (
                f"database schema is marked {self.current} but lacks {shown}: it was changed "
                "outside the migrations; restore it (or `costctl db downgrade` and upgrade)"
            )
        return f"database schema at head ({self.head})"


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(HERE / "versions"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


_SCRIPT: ScriptDirectory | None = None


def script() -> ScriptDirectory:
    """The revision scripts (read once per process)."""
    global _SCRIPT
    if _SCRIPT is None:
        _SCRIPT = ScriptDirectory.from_config(_config())
    return _SCRIPT


def head() -> str:
    """The newest revision the code knows."""
    rev = script().get_current_head()
    assert rev is not None, "no migrations found"
    return rev


def current(engine: Engine) -> str | None:
    """The revision the database is at (None when it has none)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def missing_objects(engine: Engine) -> list[str]:
    """Tables and columns of the code's metadata that the database lacks (``table.column``)."""
    import billing.enforcement.models
    import billing.models  # noqa: F401  (every table on the metadata)

    insp = inspect(engine)
    present = set(insp.get_table_names())
    out: list[str] = []
    for name, table in SQLModel.metadata.tables.items():
        if name not in present:
            out.append(name)
            continue
        have = {c["name"] for c in insp.get_columns(name)}
        out += [f"{name}.{c.name}" for c in table.columns if c.name not in have]
    return out


def state(engine: Engine) -> SchemaState:
    """Compare the database's revision with the code's head, and at head check that every
    table and column the code uses exists (a column dropped by hand is ``drift``)."""
    rev, top = current(engine), head()
    if rev == top:
        missing = tuple(missing_objects(engine))
        if missing:
            return SchemaState(rev, top, SchemaStatus.drift, missing)
        return SchemaState(rev, top, SchemaStatus.at_head)
    if rev is None:
        has_tables = _BASELINE_TABLE in inspect(engine).get_table_names()
        return SchemaState(None, top, SchemaStatus.behind if has_tables else SchemaStatus.empty)
    known = {s.revision for s in script().walk_revisions()}
    return SchemaState(rev, top, SchemaStatus.behind if rev in known else SchemaStatus.ahead)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade to ``revision`` (idempotent); returns (before, after)."""
    before = current(engine)
    with engine.begin() as conn:
        if before is None and _BASELINE_TABLE in inspect(conn).get_table_names():
            command.stamp(_config(conn), BASELINE)
        command.upgrade(_config(conn), revision)
    return before, current(engine)


def downgrade(engine: Engine, revision: str) -> tuple[str | None, str | None]:
    """Downgrade to ``revision`` (e.g. ``-1``); returns (before, after)."""
    before = current(engine)
    with engine.begin() as conn:
        command.downgrade(_config(conn), revision)
    return before, current(engine)


@dataclass(frozen=True)
class RevisionInfo:
    """One revision of the history, newest first."""

    revision: str
    down_revision: str | None
    message: str


def history() -> list[RevisionInfo]:
    """Every revision, newest first."""
    out = []
    for s in script().walk_revisions():
        down = s.down_revision
        out.append(
            RevisionInfo(
                s.revision,
                down if isinstance(down, str) or down is None else ",".join(down),
                (s.doc or "").strip().splitlines()[0] if s.doc else "",
            )
        )
    return out
