"""The index seams: `VectorIndex` (dense, cosine) and `KeywordIndex` (BM25), and the exact in-memory vector index.

Backends: `ExactVectorIndex` here (the recall reference, in memory), `HnswVectorIndex` (hnswlib on local disk) and
`TantivyKeywordIndex` (tantivy) for the embedded default, pgvector and PostgreSQL full-text search for server scale.
All of them pass the contract tests in tests/contract/. The relational store stays the source of truth: an index is
caught up from it, so a lost or stale index is rebuilt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from llmops.knowledge._filters import MetadataFilter, MetadataValue
from llmops.knowledge._vector_table import ReadWriteLock, VectorTable

__all__ = ["ExactVectorIndex", "KeywordIndex", "VectorIndex"]


@runtime_checkable
class VectorIndex(Protocol):
    """Nearest-neighbour search by cosine similarity over unit vectors, keyed by chunk id, with metadata filters.

    Every backend (embedded HNSW, pgvector) passes the same contract tests (tests/contract/). Writes become visible to
    this process at once and to other processes after `commit` (theirs after `reload`).
    """

    dimensions: int

    def upsert(
        self,
        ids: Sequence[str],
        vectors: npt.NDArray[np.float32],
        metadata: Sequence[Mapping[str, MetadataValue]],
    ) -> None:
        """Add or replace ``ids`` with their unit ``vectors`` (shape ``(len(ids), dimensions)``) and metadata."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Remove ``ids``; unknown ids are ignored."""
        ...

    def patch_metadata(self, ids: Sequence[str], patch: Mapping[str, MetadataValue]) -> None:
        """Set the fields of ``patch`` on every one of ``ids`` (other fields are kept)."""
        ...

    def search(
        self, query: npt.NDArray[np.float32], k: int, where: MetadataFilter | None = None
    ) -> list[tuple[str, float]]:
        """Up to ``k`` (id, cosine similarity) pairs matching ``where``, most similar first.

        The filter is applied inside the search, so a selective filter still returns its ``k`` best matches.
        """
        ...

    def vectors(self, ids: Sequence[str]) -> npt.NDArray[np.float32]:
        """The stored vectors of ``ids`` in that order (for MMR); raises KeyError for an unknown id."""
        ...

    def commit(self) -> None:
        """Make every write so far durable and visible to other processes."""
        ...

    def reload(self) -> None:
        """Pick up what other processes committed."""
        ...

    def close(self) -> None: ...

    def __len__(self) -> int: ...


@runtime_checkable
class KeywordIndex(Protocol):
    """BM25 full-text search over chunk texts, keyed by chunk id, with the same metadata filters as `VectorIndex`."""

    def upsert(
        self, ids: Sequence[str], texts: Sequence[str], metadata: Sequence[Mapping[str, MetadataValue]]
    ) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def patch_metadata(self, ids: Sequence[str], patch: Mapping[str, MetadataValue]) -> None: ...

    def search(self, query: str, k: int, where: MetadataFilter | None = None) -> list[tuple[str, float]]:
        """Up to ``k`` (id, BM25 score) pairs matching ``where``, best first. Any user text is a valid query."""
        ...

    def commit(self) -> None: ...

    def reload(self) -> None: ...

    def close(self) -> None: ...

    def __len__(self) -> int: ...


class ExactVectorIndex:
    """Exact cosine search over a float32 matrix in memory: the recall reference other backends are measured against.

    Metadata filters are boolean masks over columnar metadata (`llmops.knowledge._columns`): a selective filter
    multiplies only the rows it keeps. Nothing is persisted (`commit` and `reload` do nothing): the knowledge base
    rebuilds it from the store at start. Reads run concurrently with each other and wait for writes.

    >>> index = ExactVectorIndex(2)
    >>> index.upsert(["a", "b"], np.array([[1, 0], [0, 1]], dtype=np.float32), [{"lang": "en"}, {"lang": "de"}])
    >>> index.search(np.array([1, 0], dtype=np.float32), 1, MetadataFilter.parse({"lang": "de"}))
    [('b', 0.0)]
    """

    def __init__(self, dimensions: int) -> None:
        self._table = VectorTable(dimensions)
        self._lock = ReadWriteLock()
        self.dimensions = dimensions

    def replace(self, ids: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        """Swap the whole content for ``ids``/``vectors`` (with no metadata) at once: readers see old or new."""
        table = VectorTable(self.dimensions)
        matrix, metadata = table.check(ids, vectors, [{}] * len(ids))
        table.upsert(ids, matrix, metadata)
        with self._lock.writing():
            self._table = table

    def upsert(
        self,
        ids: Sequence[str],
        vectors: npt.NDArray[np.float32],
        metadata: Sequence[Mapping[str, MetadataValue]],
    ) -> None:
        matrix, checked = self._table.check(ids, vectors, metadata)
        with self._lock.writing():
            self._table.upsert(ids, matrix, checked)

    def delete(self, ids: Sequence[str]) -> None:
        with self._lock.writing():
            self._table.delete(ids)

    def patch_metadata(self, ids: Sequence[str], patch: Mapping[str, MetadataValue]) -> None:
        with self._lock.writing():
            self._table.patch(ids, patch)

    def search(
        self, query: npt.NDArray[np.float32], k: int, where: MetadataFilter | None = None
    ) -> list[tuple[str, float]]:
        with self._lock.reading():
            return self._table.exact(query, k, self._table.mask(where))

    def vectors(self, ids: Sequence[str]) -> npt.NDArray[np.float32]:
        with self._lock.reading():
            return self._table.vectors(ids)

    def commit(self) -> None:
        """Nothing to make durable: the index lives in this process only."""

    def reload(self) -> None:
        """Nothing to pick up: no other process writes this index."""

    def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        return len(self._table)
