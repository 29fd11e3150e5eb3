"""Alembic environment: runs on the connection handed in by ``billing.migrations``."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import billing.enforcement.models
import billing.models  # noqa: F401  (registers the tables on SQLModel.metadata)

target_metadata = SQLModel.metadata


def run() -> None:
    """Run the migrations on ``config.attributes['connection']`` (online mode only)."""
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
