"""Vector indexes. The embedded default is exact search over a float32 matrix held in memory.

Exact search is the recall reference and, at the sizes a single handbook-style knowledge base reaches (tens of
thousands of chunks), a matrix-vector product is a few milliseconds. The relational store stays the source of truth:
the index is rebuilt from it, so the two can never disagree after a crash.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["ExactVectorIndex", "VectorIndex"]


@runtime_checkable
class VectorIndex(Protocol):
    """Nearest-neighbour search by cosine similarity over unit vectors, keyed by chunk id."""

    def replace(self, ids: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        """Swap the whole content for ``ids``/``vectors`` atomically (readers see the old or the new, never a mix)."""
        ...

    def search(self, query: npt.NDArray[np.float32], k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (id, similarity) pairs, most similar first."""
        ...

    def __len__(self) -> int: ...


class ExactVectorIndex:
    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self._ids: list[str] = []
        self._matrix: npt.NDArray[np.float32] = np.zeros((0, dimensions), dtype=np.float32)
        self._lock = threading.Lock()

    def replace(self, ids: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        if vectors.shape != (len(ids), self.dimensions):
            raise ValueError(f"expected {len(ids)} vectors of {self.dimensions} dimensions, got {vectors.shape}")
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._lock:
            self._ids, self._matrix = list(ids), matrix

    def search(self, query: npt.NDArray[np.float32], k: int) -> list[tuple[str, float]]:
        with self._lock:
            ids, matrix = self._ids, self._matrix
        if not ids or k <= 0:
            return []
        scores = matrix @ query.astype(np.float32, copy=False)
        k = min(k, len(ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [(ids[i], float(scores[i])) for i in top]

    def __len__(self) -> int:
        return len(self._ids)
