"""Tables of the knowledge package: sources, documents, chunk versions, snapshots and their changes, caches.

The store is the source of truth; the vector and keyword indexes are rebuilt or caught up from it. A chunk row is one
version of one chunk: it is visible in the snapshots ``snapshot_from <= S < snapshot_until``. Rows are never rewritten
except to close their interval, so every ready snapshot stays reproducible (immutable) for as long as its rows exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from llmops.store import Base

__all__ = [
    "LIVE",
    "ChunkRow",
    "ChunkingConfigRow",
    "DocumentRow",
    "EmbeddingCacheRow",
    "IndexSnapshotRow",
    "IndexStateRow",
    "SnapshotChangeRow",
    "SourceRow",
]

LIVE = 2**31 - 1  # snapshot_until of a chunk no snapshot has superseded yet


class SourceRow(Base):
    """A registered source: a folder, a glob or a URL. Ingestion runs read documents from sources."""

    __tablename__ = "knowledge_sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # folder | glob | file | url
    location: Mapped[str] = mapped_column(String(2048), unique=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DocumentRow(Base):
    """The latest state of a document (its versions are the chunk rows' content hashes)."""

    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str] = mapped_column(String(1024), unique=True)
    title: Mapped[str] = mapped_column(String(512))
    content_hash: Mapped[str] = mapped_column(String(64))
    parser: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(Integer)
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    minhash: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # near-duplicate signature


class ChunkRow(Base):
    """One version of one chunk with its embedding (float32 bytes), visible in snapshots [from, until)."""

    __tablename__ = "chunks"
    __table_args__ = (Index("ix_chunks_snapshot_until", "snapshot_until"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int] = mapped_column(Integer)
    heading: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    page: Mapped[int | None] = mapped_column(Integer, nullable=True)
    start_char: Mapped[int] = mapped_column(Integer)
    end_char: Mapped[int] = mapped_column(Integer)
    embedding_model: Mapped[str] = mapped_column(String(128))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    snapshot_from: Mapped[int] = mapped_column(Integer, default=1, index=True)
    snapshot_until: Mapped[int] = mapped_column(Integer, default=LIVE)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class IndexSnapshotRow(Base):
    """One per ingestion run (or rollback). Readers see only ``ready`` snapshots; a ``building`` one is resumed."""

    __tablename__ = "index_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    embedding_model: Mapped[str] = mapped_column(String(128))
    documents: Mapped[int] = mapped_column(Integer)
    chunks: Mapped[int] = mapped_column(Integer)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="ready")  # building | ready
    kind: Mapped[str] = mapped_column(String(16), default="ingest")  # ingest | rollback
    parent_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    chunking_config_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SnapshotChangeRow(Base):
    """What a snapshot changed: a document added, changed or removed (and the version it now has)."""

    __tablename__ = "snapshot_changes"

    snapshot_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    change: Mapped[str] = mapped_column(String(16))  # added | changed | removed
    content_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(1024))


class ChunkingConfigRow(Base):
    """A chunking configuration, stored once under its content-derived id and recorded on every snapshot."""

    __tablename__ = "chunking_configs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EmbeddingCacheRow(Base):
    """An embedding by (model, sha256 of the text): unchanged chunk texts are never embedded twice."""

    __tablename__ = "embedding_cache"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    text_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class IndexStateRow(Base):
    """The newest snapshot an index backend holds; readers follow this, not the newest snapshot in the store."""

    __tablename__ = "knowledge_index_state"

    backend: Mapped[str] = mapped_column(String(1024), primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
