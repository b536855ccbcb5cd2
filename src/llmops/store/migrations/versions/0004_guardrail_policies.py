"""guardrail policies

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "guardrail_policies",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_guardrail_policies")),
    )
    op.create_table(
        "guardrail_policy_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("environment", sa.String(length=32), nullable=True),
        sa.Column("label", sa.String(length=100), nullable=True),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_policy_history")),
    )
    with op.batch_alter_table("guardrail_policy_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_guardrail_policy_history_name"), ["name"], unique=False)

    op.create_table(
        "guardrail_policy_labels",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("environment", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["name"], ["guardrail_policies.name"], name=op.f("fk_guardrail_policy_labels_name_guardrail_policies")
        ),
        sa.PrimaryKeyConstraint("name", "environment", "label", name=op.f("pk_guardrail_policy_labels")),
    )
    op.create_table(
        "guardrail_policy_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["name"], ["guardrail_policies.name"], name=op.f("fk_guardrail_policy_versions_name_guardrail_policies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_policy_versions")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_guardrail_policy_versions_name")),
    )


def downgrade() -> None:
    op.drop_table("guardrail_policy_versions")
    op.drop_table("guardrail_policy_labels")
    with op.batch_alter_table("guardrail_policy_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_guardrail_policy_history_name"))

    op.drop_table("guardrail_policy_history")
    op.drop_table("guardrail_policies")
