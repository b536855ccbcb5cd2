"""A cache of embeddings keyed by (embedding model, SHA-256 of the text), and an embedder that consults it first.

Re-ingesting a changed document re-embeds only the chunks whose text changed; a second index over the same corpus
with the same model costs no embedding at all. The key names the model (``Embedder.name``), so a cache shared by two
models never hands one model's vectors to the other. `EmbeddingCache` is the seam: the knowledge base backs it with a
table in the store; `InMemoryEmbeddingCache` is for tests and one-off runs.

>>> embedder = CachedEmbedder(MiniLMEmbedder(), InMemoryEmbeddingCache())  # doctest: +SKIP
>>> embedder.embed(["a", "b"]); embedder.embed(["b", "c"])                  # doctest: +SKIP
>>> embedder.hits, embedder.misses                                          # doctest: +SKIP
(1, 3)
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from llmops.knowledge._embedder import Embedder, Vectors

__all__ = ["CachedEmbedder", "EmbeddingCache", "InMemoryEmbeddingCache", "text_hash"]

Vector = npt.NDArray[np.float32]


def text_hash(text: str) -> str:
    """The cache key of ``text``: SHA-256 of its UTF-8 bytes, as 64 hex digits."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


@runtime_checkable
class EmbeddingCache(Protocol):
    """Stored embeddings by (model name, `text_hash`). Vectors are 1-D float32, already unit length."""

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, Vector]:
        """The vectors stored for those of ``hashes`` that are present; absent ones are simply missing."""
        ...

    def put_many(self, model: str, items: Mapping[str, Vector]) -> None:
        """Store vectors by hash (replacing any already stored: the same model and text give the same vector)."""
        ...


class InMemoryEmbeddingCache:
    """A dict-backed `EmbeddingCache`, thread-safe. Holds copies, so callers may reuse their arrays."""

    def __init__(self) -> None:
        self._vectors: dict[tuple[str, str], Vector] = {}
        self._lock = threading.Lock()

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, Vector]:
        with self._lock:
            return {h: v.copy() for h in hashes if (v := self._vectors.get((model, h))) is not None}

    def put_many(self, model: str, items: Mapping[str, Vector]) -> None:
        with self._lock:
            for h, vector in items.items():
                self._vectors[model, h] = np.array(vector, dtype=np.float32, copy=True)

    def __len__(self) -> int:
        return len(self._vectors)


class CachedEmbedder:
    """An `Embedder` that embeds only the texts its cache lacks, and only once per distinct text in a call.

    Everything else (name, dimensions, max_tokens, token counting) is the wrapped embedder's, so a cached and an
    uncached embedder of the same model are interchangeable, and an index records the same model name.
    ``misses`` counts texts embedded and ``hits`` the others (found in the cache, or repeated within one call), over
    the wrapper's lifetime.
    """

    def __init__(self, embedder: Embedder, cache: EmbeddingCache) -> None:
        self.embedder = embedder
        self.cache = cache
        self.name = embedder.name
        self.dimensions = embedder.dimensions
        self.max_tokens = embedder.max_tokens
        self.hits = 0
        self.misses = 0

    def count_tokens(self, text: str) -> int:
        return self.embedder.count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.embedder.token_offsets(text)

    def embed(self, texts: list[str]) -> Vectors:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        keys = [text_hash(t) for t in texts]
        unique = list(dict.fromkeys(keys))
        found = self.cache.get_many(self.name, unique)
        missing = [h for h in unique if h not in found]
        if missing:
            first = {h: i for i, h in reversed(list(enumerate(keys)))}  # a text for each hash
            vectors = self.embedder.embed([texts[first[h]] for h in missing])
            if vectors.shape != (len(missing), self.dimensions):
                raise ValueError(f"{self.name} returned {vectors.shape} for {len(missing)} texts")
            fresh = dict(zip(missing, vectors, strict=True))
            self.cache.put_many(self.name, fresh)
            found.update(fresh)
        for row, h in enumerate(keys):
            out[row] = found[h]
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        return out
