"""baseline: the schema of the first release

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-01 09:52:45.257902
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "allocation",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("node", sa.String(length=200), nullable=False),
        sa.Column("gpu_uuid", sa.String(length=200), nullable=False),
        sa.Column("device_uuid", sa.String(length=200), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("profile", sa.String(length=32), nullable=True),
        sa.Column("fraction", sa.Float(), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("plan_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_allocation_end"), "allocation", ["end"], unique=False)
    op.create_index(op.f("ix_allocation_gpu_uuid"), "allocation", ["gpu_uuid"], unique=False)
    op.create_index(op.f("ix_allocation_model"), "allocation", ["model"], unique=False)
    op.create_index(op.f("ix_allocation_start"), "allocation", ["start"], unique=False)

    op.create_table(
        "api_key",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_api_key_prefix"), "api_key", ["prefix"], unique=True)

    op.create_table(
        "device_hour",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gpu_uuid", sa.String(length=200), nullable=False),
        sa.Column("parent_uuid", sa.String(length=200), nullable=True),
        sa.Column("gpu_type", sa.String(length=64), nullable=False),
        sa.Column("mig_profile", sa.String(length=32), nullable=True),
        sa.Column("sample_s", sa.Float(), nullable=False),
        sa.Column("busy_s", sa.Float(), nullable=False),
        sa.Column("first", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "gpu_uuid"),
    )
    op.create_table(
        "enf_audit",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("detail", sa.String(length=4000), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_enf_audit_ts"), "enf_audit", ["ts"], unique=False)

    op.create_table(
        "enf_budget",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("request_type", sa.String(length=100), nullable=True),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("limit_micros", sa.BigInteger(), nullable=True),
        sa.Column("limit_tokens", sa.BigInteger(), nullable=True),
        sa.Column("soft_ratio", sa.Float(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_enf_budget_name"), "enf_budget", ["name"], unique=True)

    op.create_table(
        "enf_budget_alert",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("budget_id", ID, nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent_micros", sa.BigInteger(), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("budget_id", "period_start", "level", name="uq_enf_alert"),
    )
    op.create_table(
        "enf_budget_counter",
        sa.Column("budget_id", ID, autoincrement=False, nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent_micros", sa.BigInteger(), nullable=False),
        sa.Column("spent_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reserved_micros", sa.BigInteger(), nullable=False),
        sa.Column("reserved_tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("budget_id"),
    )
    op.create_table(
        "enf_kill_switch",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("previous_replicas", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_enf_kill_switch_active", "enf_kill_switch", ["active"], unique=False)

    op.create_table(
        "enf_rate_limit",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("request_type", sa.String(length=100), nullable=True),
        sa.Column("per", sa.String(length=64), nullable=False),
        sa.Column("rpm", sa.Float(), nullable=True),
        sa.Column("tpm", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_enf_rate_limit_name"), "enf_rate_limit", ["name"], unique=True)

    op.create_table(
        "enf_reservation",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("budget_ids", sa.String(length=2000), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("request_type", sa.String(length=100), nullable=False),
        sa.Column("est_micros", sa.BigInteger(), nullable=False),
        sa.Column("est_tokens", sa.BigInteger(), nullable=False),
        sa.Column("actual_micros", sa.BigInteger(), nullable=False),
        sa.Column("actual_tokens", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(
        "ix_enf_reservation_status_exp", "enf_reservation", ["status", "expires_at"], unique=False
    )

    op.create_table(
        "gpu_process_sample",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("device_uuid", sa.String(length=200), nullable=False),
        sa.Column("gpu_uuid", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("pod_uid", sa.String(length=64), nullable=True),
        sa.Column("namespace", sa.String(length=200), nullable=True),
        sa.Column("pod", sa.String(length=253), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("sm_util", sa.Float(), nullable=True),
        sa.Column("mem_used_mib", sa.Float(), nullable=True),
        sa.Column("interval_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_uuid", "ts", "pid", name="uq_gpu_process_sample"),
    )
    op.create_index(
        "ix_gpu_process_sample_model_ts", "gpu_process_sample", ["model", "ts"], unique=False
    )

    op.create_table(
        "gpu_sample",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("node", sa.String(length=200), nullable=False),
        sa.Column("gpu_uuid", sa.String(length=200), nullable=False),
        sa.Column("parent_uuid", sa.String(length=200), nullable=True),
        sa.Column("gpu_index", sa.Integer(), nullable=False),
        sa.Column("gpu_type", sa.String(length=64), nullable=False),
        sa.Column("pricing_class", sa.String(length=32), nullable=False),
        sa.Column("mig_profile", sa.String(length=32), nullable=True),
        sa.Column("sm_util", sa.Float(), nullable=True),
        sa.Column("mem_used_mib", sa.Float(), nullable=True),
        sa.Column("mem_total_mib", sa.Float(), nullable=True),
        sa.Column("power_w", sa.Float(), nullable=True),
        sa.Column("energy_j", sa.Float(), nullable=True),
        sa.Column("interval_s", sa.Float(), nullable=False),
        sa.Column("fault", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("gpu_uuid", "ts", name="uq_gpu_sample_uuid_ts"),
    )
    op.create_index(op.f("ix_gpu_sample_ts"), "gpu_sample", ["ts"], unique=False)

    op.create_table(
        "ledger_entry",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("request_type", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("gpu_cost_usd", sa.Float(), nullable=False),
        sa.Column("cost_adjustment_usd", sa.Float(), nullable=False),
        sa.Column("cost_cents", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hour", "model", "customer", "request_type", "kind", name="uq_ledger"),
    )
    op.create_index("ix_ledger_customer_hour", "ledger_entry", ["customer", "hour"], unique=False)
    op.create_index(op.f("ix_ledger_entry_hour"), "ledger_entry", ["hour"], unique=False)

    op.create_table(
        "ledger_hour",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metered_gpu_seconds", sa.Float(), nullable=False),
        sa.Column("metered_cost_usd", sa.Float(), nullable=False),
        sa.Column("metered_cost_cents", sa.BigInteger(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hour"),
    )
    op.create_table(
        "price",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("gpu_type", sa.String(length=64), nullable=False),
        sa.Column("pricing_class", sa.String(length=32), nullable=False),
        sa.Column("usd_per_hour", sa.Float(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("gpu_type", "pricing_class", "effective_from", name="uq_price"),
    )
    op.create_table(
        "usage_event",
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("customer", sa.String(length=200), nullable=False),
        sa.Column("request_type", sa.String(length=100), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("device_id", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("source", "event_id"),
    )
    op.create_index(op.f("ix_usage_event_ts"), "usage_event", ["ts"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_usage_event_ts"), table_name="usage_event")

    op.drop_table("usage_event")
    op.drop_table("price")
    op.drop_table("ledger_hour")
    op.drop_index(op.f("ix_ledger_entry_hour"), table_name="ledger_entry")
    op.drop_index("ix_ledger_customer_hour", table_name="ledger_entry")

    op.drop_table("ledger_entry")
    op.drop_index(op.f("ix_gpu_sample_ts"), table_name="gpu_sample")

    op.drop_table("gpu_sample")
    op.drop_index("ix_gpu_process_sample_model_ts", table_name="gpu_process_sample")

    op.drop_table("gpu_process_sample")
    op.drop_index("ix_enf_reservation_status_exp", table_name="enf_reservation")

    op.drop_table("enf_reservation")
    op.drop_index(op.f("ix_enf_rate_limit_name"), table_name="enf_rate_limit")

    op.drop_table("enf_rate_limit")
    op.drop_index("ix_enf_kill_switch_active", table_name="enf_kill_switch")

    op.drop_table("enf_kill_switch")
    op.drop_table("enf_budget_counter")
    op.drop_table("enf_budget_alert")
    op.drop_index(op.f("ix_enf_budget_name"), table_name="enf_budget")

    op.drop_table("enf_budget")
    op.drop_index(op.f("ix_enf_audit_ts"), table_name="enf_audit")

    op.drop_table("enf_audit")
    op.drop_table("device_hour")
    op.drop_index(op.f("ix_api_key_prefix"), table_name="api_key")

    op.drop_table("api_key")
    op.drop_index(op.f("ix_allocation_start"), table_name="allocation")
    op.drop_index(op.f("ix_allocation_model"), table_name="allocation")
    op.drop_index(op.f("ix_allocation_gpu_uuid"), table_name="allocation")
    op.drop_index(op.f("ix_allocation_end"), table_name="allocation")

    op.drop_table("allocation")
