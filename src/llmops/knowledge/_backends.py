"""Which vector and keyword indexes a knowledge base uses: chosen by settings, opened here.

``embedded`` (the default) keeps an HNSW index and a tantivy index under the data directory, one pair per embedding
model (their dimensions differ); ``postgres`` keeps both in PostgreSQL (pgvector + full-text search), shared by every
replica; ``memory`` keeps exact in-memory indexes rebuilt from the store at start (tests, tiny corpora).
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Literal

from llmops.knowledge._index import ExactVectorIndex, KeywordIndex, VectorIndex

__all__ = ["open_indexes"]

Backend = Literal["embedded", "postgres", "memory"]


def open_indexes(
    backend: Backend,
    *,
    data_dir: Path,
    model: str,
    dimensions: int,
    collection: str = "chunks",
    postgres_url: str | None = None,
) -> tuple[VectorIndex, KeywordIndex, str]:
    """The vector index, the keyword index, and the key their caught-up snapshot is recorded under."""
    slug = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")[:40] or "model"
    if backend == "postgres":
        if not postgres_url:
            raise ValueError("knowledge.backend is postgres but knowledge.postgres_url is not set")
        from llmops.knowledge._pgfts import PgKeywordIndex
        from llmops.knowledge._pgvector import PgVectorIndex

        name = f"{collection}_{slug}"[:48]
        return (
            PgVectorIndex(postgres_url, name, dimensions),
            PgKeywordIndex(postgres_url, name),
            f"postgres:{name}",
        )
    from llmops.knowledge._tantivy import TantivyKeywordIndex

    if backend == "memory":
        # In-memory indexes belong to this process alone, so their caught-up snapshot is recorded per process.
        key = f"memory:{collection}:{slug}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        return ExactVectorIndex(dimensions), TantivyKeywordIndex(None), key
    from llmops.knowledge._hnsw import HnswVectorIndex

    root = (data_dir / "index" / f"{collection}-{slug}").absolute()
    return (
        HnswVectorIndex(root / "vectors", dimensions),
        TantivyKeywordIndex(root / "keywords"),
        f"embedded:{root}",
    )
