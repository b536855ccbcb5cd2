"""The embedding cache kept in the relational store, so every process and every run shares it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from sqlalchemy import select

from llmops.knowledge._tables import EmbeddingCacheRow
from llmops.store import Store

__all__ = ["StoreEmbeddingCache"]

_BATCH = 500


class StoreEmbeddingCache:
    """`EmbeddingCache` over the ``embedding_cache`` table (float32 bytes by model and text hash)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        found: dict[str, npt.NDArray[np.float32]] = {}
        with self._store.session() as session:
            for start in range(0, len(hashes), _BATCH):
                rows = session.execute(
                    select(EmbeddingCacheRow.text_hash, EmbeddingCacheRow.vector).where(
                        EmbeddingCacheRow.model == model,
                        EmbeddingCacheRow.text_hash.in_(list(hashes[start : start + _BATCH])),
                    )
                )
                found.update((h, np.frombuffer(v, dtype=np.float32).copy()) for h, v in rows)
        return found

    def put_many(self, model: str, items: Mapping[str, npt.NDArray[np.float32]]) -> None:
        hashes = list(items)
        with self._store.session() as session:
            for start in range(0, len(hashes), _BATCH):
                batch = hashes[start : start + _BATCH]
                existing = set(
                    session.scalars(
                        select(EmbeddingCacheRow.text_hash).where(
                            EmbeddingCacheRow.model == model, EmbeddingCacheRow.text_hash.in_(batch)
                        )
                    )
                )
                session.add_all(
                    EmbeddingCacheRow(model=model, text_hash=h, vector=np.asarray(items[h], dtype=np.float32).tobytes())
                    for h in batch
                    if h not in existing
                )
