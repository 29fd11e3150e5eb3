"""allocation: who holds the device (namespace/pod/container), observed or planned, natural key

Existing rows were written by the plan recorder: they become source 'planned' with empty pod
fields, and a row without a device UUID takes its physical GPU's UUID.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:31:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NEW_TEXT = (("namespace", 253), ("pod", 253), ("container", 253), ("observer", 200))


def upgrade() -> None:
    op.execute("UPDATE allocation SET device_uuid = gpu_uuid WHERE device_uuid IS NULL")
    with op.batch_alter_table("allocation") as batch_op:
        for name, length in NEW_TEXT:
            batch_op.add_column(
                sa.Column(name, sa.String(length=length), nullable=False, server_default="")
            )
        batch_op.add_column(sa.Column("pod_uid", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("source", sa.String(length=16), nullable=False, server_default="planned")
        )
        batch_op.alter_column("device_uuid", existing_type=sa.String(length=200), nullable=False)
        batch_op.create_unique_constraint(
            "uq_allocation_natural",
            ["source", "device_uuid", "namespace", "pod", "container", "start"],
        )
    # The defaults only filled the existing rows; new rows always name their values.
    with op.batch_alter_table("allocation") as batch_op:
        for name, length in (*NEW_TEXT, ("source", 16)):
            batch_op.alter_column(name, existing_type=sa.String(length=length), server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("allocation") as batch_op:
        batch_op.drop_constraint("uq_allocation_natural", type_="unique")
        batch_op.alter_column("device_uuid", existing_type=sa.String(length=200), nullable=True)
        for name in ("source", "pod_uid", *(n for n, _ in NEW_TEXT)):
            batch_op.drop_column(name)
