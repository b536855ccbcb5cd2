"""gateway ledger and price books

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_call_repricings",
        sa.Column("call_id", sa.String(length=40), nullable=False),
        sa.Column("price_book", sa.String(length=80), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("call_id", "price_book", name=op.f("pk_gateway_call_repricings")),
    )
    op.create_table(
        "gateway_calls",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("served_by", sa.String(length=200), nullable=False),
        sa.Column("upstream_model", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("key_name", sa.String(length=200), nullable=True),
        sa.Column("user", sa.String(length=200), nullable=True),
        sa.Column("team", sa.String(length=200), nullable=True),
        sa.Column("app", sa.String(length=200), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_input_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("price_book", sa.String(length=80), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cache_hit", sa.String(length=16), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("fallbacks", sa.JSON(), nullable=False),
        sa.Column("route", sa.JSON(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_calls")),
    )
    with op.batch_alter_table("gateway_calls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gateway_calls_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_gateway_calls_request_id"), ["request_id"], unique=False)

    op.create_table(
        "price_books",
        sa.Column("version", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entries", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_price_books")),
    )


def downgrade() -> None:
    op.drop_table("price_books")
    with op.batch_alter_table("gateway_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_calls_request_id"))
        batch_op.drop_index(batch_op.f("ix_gateway_calls_at"))

    op.drop_table("gateway_calls")
    op.drop_table("gateway_call_repricings")
