"""enf_budget.basis: what a budget counts, 'cost' (ledger GPU cost) or 'price' (rate card)

Budgets that existed before counted the rate card, so they keep basis 'price'; new rows get
the model's default, 'cost'.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enf_budget") as batch:
        batch.add_column(
            sa.Column("basis", sa.String(length=8), nullable=False, server_default="price")
        )
    with op.batch_alter_table("enf_budget") as batch:
        batch.alter_column("basis", existing_type=sa.String(length=8), server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("enf_budget") as batch:
        batch.drop_column("basis")
