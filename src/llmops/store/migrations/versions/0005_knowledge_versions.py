"""knowledge sources, chunk versions, snapshot changes, chunking configs, embedding cache, index state

Existing chunks become versions visible from the first snapshot on and never superseded; existing snapshots are ready.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LIVE = 2**31 - 1


def upgrade() -> None:
    op.create_table(
        "knowledge_sources",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("location", sa.String(length=2048), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_sources")),
        sa.UniqueConstraint("location", name=op.f("uq_knowledge_sources_location")),
    )
    op.create_table(
        "snapshot_changes",
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.String(length=32), nullable=False),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("snapshot_id", "document_id", name=op.f("pk_snapshot_changes")),
    )
    op.create_table(
        "chunking_configs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chunking_configs")),
    )
    op.create_table(
        "embedding_cache",
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("text_hash", sa.String(length=64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("model", "text_hash", name=op.f("pk_embedding_cache")),
    )
    op.create_table(
        "knowledge_index_state",
        sa.Column("backend", sa.String(length=1024), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("backend", name=op.f("pk_knowledge_index_state")),
    )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("minhash", sa.LargeBinary(), nullable=True))
        batch_op.create_index(batch_op.f("ix_documents_source_id"), ["source_id"], unique=False)
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_hash", sa.String(length=64), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("snapshot_from", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("snapshot_until", sa.Integer(), nullable=False, server_default=str(LIVE)))
        batch_op.add_column(sa.Column("meta", sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f("ix_chunks_snapshot_from"), ["snapshot_from"], unique=False)
        batch_op.create_index("ix_chunks_snapshot_until", ["snapshot_until"], unique=False)
    op.execute(
        "UPDATE chunks SET content_hash = (SELECT documents.content_hash FROM documents"
        " WHERE documents.id = chunks.document_id), meta = '{}'"
    )
    op.execute("UPDATE chunks SET snapshot_from = COALESCE((SELECT MIN(id) FROM index_snapshots), 1)")
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.alter_column("content_hash", server_default=None)
        batch_op.alter_column("snapshot_from", server_default=None)
        batch_op.alter_column("snapshot_until", server_default=None)
        batch_op.alter_column("meta", existing_type=sa.JSON(), nullable=False)
    with op.batch_alter_table("index_snapshots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=False, server_default="ready"))
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="ingest"))
        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("chunking_config_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("index_snapshots", schema=None) as batch_op:
        batch_op.alter_column("status", server_default=None)
        batch_op.alter_column("kind", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("index_snapshots", schema=None) as batch_op:
        for column in ("finished_at", "chunking_config_id", "parent_id", "kind", "status"):
            batch_op.drop_column(column)
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_index("ix_chunks_snapshot_until")
        batch_op.drop_index(batch_op.f("ix_chunks_snapshot_from"))
        for column in ("meta", "snapshot_until", "snapshot_from", "content_hash"):
            batch_op.drop_column(column)
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_documents_source_id"))
        batch_op.drop_column("minhash")
        batch_op.drop_column("source_id")
    for table in (
        "knowledge_index_state",
        "embedding_cache",
        "chunking_configs",
        "snapshot_changes",
        "knowledge_sources",
    ):
        op.drop_table(table)
