"""job_run: one row per run of a scheduled job (which worker, which slot, outcome)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "job_run",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("job", sa.String(length=100), nullable=False),
        sa.Column("slot", sa.DateTime(timezone=True), nullable=False),
        sa.Column("worker_id", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=1000), nullable=True),
        sa.Column("detail", sa.String(length=1000), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_run_job_slot", "job_run", ["job", "slot"], unique=False)
    op.create_index(op.f("ix_job_run_started_at"), "job_run", ["started_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_job_run_started_at"), table_name="job_run")
    op.drop_index("ix_job_run_job_slot", table_name="job_run")
    op.drop_table("job_run")
