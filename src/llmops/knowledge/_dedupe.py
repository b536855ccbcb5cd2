"""Near-duplicate documents: MinHash signatures of word 5-gram shingles, candidates from LSH, verified by estimate.

Exact duplicates are caught by content hash; near duplicates (a copy with a new footer, a re-exported PDF) are not,
and they crowd retrieval results with the same passage twice. They are reported, never dropped silently: which copy is
the right one is the owner's call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datasketch import LeanMinHash

# datasketch is imported where it is used: importing it imports scipy's integrate and optimize (~1 s), which every
# llmops command and every ingestion worker process (which never deduplicate) would otherwise pay at start.

__all__ = ["NearDuplicate", "NearDuplicateIndex", "signature"]

NUM_PERM = 64
SCHEME = "affine32"  # stored signatures are only comparable under the scheme that made them
SHINGLE_WORDS = 5
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class NearDuplicate:
    source: str
    duplicate_of: str
    similarity: float  # estimated Jaccard similarity of the shingle sets


def signature(text: str) -> bytes:
    """The MinHash signature of ``text`` as bytes (stored with the document)."""
    words = _WORD.findall(text.lower())
    shingles = {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))}
    from datasketch import MinHash

    minhash = MinHash(num_perm=NUM_PERM, scheme=SCHEME)
    minhash.update_batch([shingle.encode() for shingle in shingles if shingle])
    return np.asarray(minhash.hashvalues, dtype=np.uint64).tobytes()


def _minhash(data: bytes) -> LeanMinHash:
    from datasketch import LeanMinHash

    return LeanMinHash(seed=1, hashvalues=np.frombuffer(data, dtype=np.uint64), scheme=SCHEME)


class NearDuplicateIndex:
    """Signatures of the documents in the index; `check` reports which known document a new one nearly copies."""

    def __init__(self, threshold: float = 0.8) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self._lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self._signatures: dict[str, LeanMinHash] = {}

    def add_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        for key, data in items:
            self.add(key, data)

    def add(self, key: str, data: bytes) -> None:
        if key in self._signatures:
            self._lsh.remove(key)
        minhash = _minhash(data)
        self._signatures[key] = minhash
        self._lsh.insert(key, minhash)

    def remove(self, key: str) -> None:
        if self._signatures.pop(key, None) is not None:
            self._lsh.remove(key)

    def check(self, key: str, data: bytes) -> NearDuplicate | None:
        """The most similar other document at or above the threshold, if any."""
        minhash = _minhash(data)
        best: NearDuplicate | None = None
        for other in self._lsh.query(minhash):
            if other == key:
                continue
            similarity = float(minhash.jaccard(self._signatures[other]))
            if similarity >= self.threshold and (best is None or similarity > best.similarity):
                best = NearDuplicate(source=key, duplicate_of=other, similarity=similarity)
        return best
