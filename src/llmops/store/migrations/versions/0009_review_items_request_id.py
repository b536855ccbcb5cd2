"""review items: the request whose answer an item holds, indexed (callers poll for their held answer by it)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 23:50:00
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_review_items_request_id"), ["request_id"], unique=False)
    # Items that already hold an answer get its request id (read in Python: JSON paths differ between databases).
    items = sa.table("review_items", sa.column("id", sa.String), sa.column("details", sa.JSON),
                     sa.column("request_id", sa.String))  # fmt: skip
    bind = op.get_bind()
    for item_id, details in bind.execute(sa.select(items.c.id, items.c.details)).all():
        held = _held(details)
        if held is not None:
            bind.execute(sa.update(items).where(items.c.id == item_id).values(request_id=held))


def downgrade() -> None:
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_items_request_id"))
        batch_op.drop_column("request_id")


def _held(details: Any) -> str | None:
    if isinstance(details, str):
        details = json.loads(details)
    held = details.get("held_answer") if isinstance(details, dict) else None
    request_id = held.get("request_id") if isinstance(held, dict) else None
    return str(request_id) if request_id else None
