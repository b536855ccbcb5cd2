"""prompt change control

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prompt_change_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("environment", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_change_requests")),
    )
    with op.batch_alter_table("prompt_change_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prompt_change_requests_prompt_name"), ["prompt_name"], unique=False)

    op.create_table(
        "prompt_checks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("recorded_by", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_checks")),
    )
    with op.batch_alter_table("prompt_checks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prompt_checks_prompt_name"), ["prompt_name"], unique=False)

    op.create_table(
        "prompt_experiments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("environment", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("control_version", sa.Integer(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_experiments")),
    )
    with op.batch_alter_table("prompt_experiments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prompt_experiments_prompt_name"), ["prompt_name"], unique=False)

    op.create_table(
        "prompt_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("environment", sa.String(length=32), nullable=True),
        sa.Column("label", sa.String(length=100), nullable=True),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("change_request_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_history")),
    )
    with op.batch_alter_table("prompt_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prompt_history_prompt_name"), ["prompt_name"], unique=False)

    op.create_table(
        "prompt_policies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("environment", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("required_approvals", sa.Integer(), nullable=False),
        sa.Column("required_check", sa.String(length=100), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_policies")),
        sa.UniqueConstraint("prompt_name", "environment", "label", name=op.f("uq_prompt_policies_prompt_name")),
    )
    op.create_table(
        "role_grants",
        sa.Column("user", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("granted_by", sa.String(length=200), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user", "role", name=op.f("pk_role_grants")),
    )
    op.create_table(
        "prompt_experiment_outcomes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("experiment_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("metric", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["prompt_experiments.id"],
            name=op.f("fk_prompt_experiment_outcomes_experiment_id_prompt_experiments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_experiment_outcomes")),
    )
    with op.batch_alter_table("prompt_experiment_outcomes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_prompt_experiment_outcomes_experiment_id"), ["experiment_id"], unique=False
        )

    op.create_table(
        "prompt_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("change_request_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(length=200), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["change_request_id"],
            ["prompt_change_requests.id"],
            name=op.f("fk_prompt_reviews_change_request_id_prompt_change_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_reviews")),
    )
    with op.batch_alter_table("prompt_reviews", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prompt_reviews_change_request_id"), ["change_request_id"], unique=False)

    op.create_table(
        "prompt_stages",
        sa.Column("prompt_name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["prompt_name"], ["prompts.name"], name=op.f("fk_prompt_stages_prompt_name_prompts")),
        sa.PrimaryKeyConstraint("prompt_name", "version", name=op.f("pk_prompt_stages")),
    )
    # Labels become per environment; existing labels move to "dev" (Platform seeds the other environments).
    with op.batch_alter_table("prompt_labels", schema=None, recreate="always") as batch_op:
        batch_op.add_column(sa.Column("environment", sa.String(length=32), nullable=False, server_default="dev"))
        batch_op.drop_constraint("pk_prompt_labels", type_="primary")
        batch_op.create_primary_key("pk_prompt_labels", ["prompt_name", "environment", "label"])

    with op.batch_alter_table("prompt_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variable_types", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("examples", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("prompt_versions", schema=None) as batch_op:
        batch_op.drop_column("tags")
        batch_op.drop_column("examples")
        batch_op.drop_column("variable_types")

    op.execute("DELETE FROM prompt_labels WHERE environment <> 'dev'")
    with op.batch_alter_table("prompt_labels", schema=None, recreate="always") as batch_op:
        batch_op.drop_constraint("pk_prompt_labels", type_="primary")
        batch_op.drop_column("environment")
        batch_op.create_primary_key("pk_prompt_labels", ["prompt_name", "label"])

    op.drop_table("prompt_stages")
    with op.batch_alter_table("prompt_reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prompt_reviews_change_request_id"))

    op.drop_table("prompt_reviews")
    with op.batch_alter_table("prompt_experiment_outcomes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prompt_experiment_outcomes_experiment_id"))

    op.drop_table("prompt_experiment_outcomes")
    op.drop_table("role_grants")
    op.drop_table("prompt_policies")
    with op.batch_alter_table("prompt_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prompt_history_prompt_name"))

    op.drop_table("prompt_history")
    with op.batch_alter_table("prompt_experiments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prompt_experiments_prompt_name"))

    op.drop_table("prompt_experiments")
    with op.batch_alter_table("prompt_checks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prompt_checks_prompt_name"))

    op.drop_table("prompt_checks")
    with op.batch_alter_table("prompt_change_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prompt_change_requests_prompt_name"))

    op.drop_table("prompt_change_requests")
