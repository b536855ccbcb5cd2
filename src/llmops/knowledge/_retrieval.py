"""Retrieval: dense, keyword and hybrid search over one snapshot, with filters, a similarity floor, MMR and reranking.

Hybrid search asks both indexes for candidates and fuses their rankings: reciprocal-rank fusion by default (it needs
no score calibration: BM25 scores are unbounded, cosines are not), or a weighted sum of min-max-normalised scores.
Every candidate then gets its exact cosine similarity to the query (from its stored vector), and the similarity floor
applies to that in every mode that embeds the query, so "nothing relevant" means the same thing whatever the mode.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from llmops.knowledge._embedder import Embedder
from llmops.knowledge._filters import MetadataFilter
from llmops.knowledge._index import KeywordIndex, VectorIndex
from llmops.knowledge._rerank import Reranker

__all__ = ["ChunkCatalog", "RetrievalMode", "RetrievedChunk", "Retriever", "snapshot_filter"]

RetrievalMode = Literal["dense", "keyword", "hybrid"]
Fusion = Literal["rrf", "weighted"]


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: str
    document_id: str
    text: str
    title: str
    source: str
    heading: str | None
    page: int | None
    score: float  # the final ranking score (cosine for dense, BM25 for keyword, fused for hybrid, reranker's if any)
    similarity: float | None = None  # cosine similarity to the query, when the query was embedded
    keyword_score: float | None = None
    rerank_score: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def snapshot_filter(snapshot_id: int) -> MetadataFilter:
    """The chunk versions visible in ``snapshot_id``."""
    return MetadataFilter.parse({"snapshot_from": {"$lte": snapshot_id}, "snapshot_until": {"$gt": snapshot_id}})


ChunkLoader = Callable[[Sequence[str]], dict[str, RetrievedChunk]]


class ChunkCatalog:
    """Chunk texts and citation fields by id, from the store, behind an LRU (rows never change: it never goes stale)."""

    def __init__(self, load: ChunkLoader, capacity: int = 20_000) -> None:
        self._load = load
        self._capacity = capacity
        self._cache: OrderedDict[str, RetrievedChunk] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ids: Sequence[str]) -> dict[str, RetrievedChunk]:
        found: dict[str, RetrievedChunk] = {}
        with self._lock:
            for chunk_id in ids:
                chunk = self._cache.get(chunk_id)
                if chunk is not None:
                    self._cache.move_to_end(chunk_id)
                    found[chunk_id] = chunk
        missing = [chunk_id for chunk_id in ids if chunk_id not in found]
        if missing:
            loaded = self._load(missing)
            found.update(loaded)
            with self._lock:
                self._cache.update(loaded)
                while len(self._cache) > self._capacity:
                    self._cache.popitem(last=False)
        return found


@dataclass
class _Candidate:
    chunk_id: str
    score: float
    similarity: float | None = None
    keyword_score: float | None = None
    rerank_score: float | None = None


class Retriever:
    def __init__(
        self,
        embedder: Embedder,
        vector: VectorIndex,
        keyword: KeywordIndex,
        catalog: ChunkCatalog,
    ) -> None:
        self._embedder = embedder
        self._vector = vector
        self._keyword = keyword
        self._catalog = catalog

    def search(
        self,
        query: str,
        *,
        k: int,
        snapshot_id: int,
        mode: RetrievalMode = "dense",
        where: MetadataFilter | None = None,
        min_similarity: float | None = None,
        fusion: Fusion = "rrf",
        rrf_k: int = 60,
        dense_weight: float = 0.5,
        candidates: int = 50,
        mmr_lambda: float | None = None,
        reranker: Reranker | None = None,
        rerank_candidates: int = 20,
    ) -> list[RetrievedChunk]:
        if k <= 0 or not query.strip():
            return []
        scope = snapshot_filter(snapshot_id).and_(where or MetadataFilter())
        wide = max(k, candidates) if (mode == "hybrid" or mmr_lambda is not None or reranker is not None) else k
        query_vector = self._embedder.embed([query])[0] if mode != "keyword" or mmr_lambda is not None else None
        dense = self._vector.search(query_vector, wide, scope) if query_vector is not None and mode != "keyword" else []
        lexical = self._keyword.search(query, wide, scope) if mode != "dense" else []

        pool = _fuse(mode, dense, lexical, fusion, rrf_k, dense_weight)
        if query_vector is not None and pool:
            self._attach_similarity(pool, dict(dense), query_vector)
            if min_similarity is not None:
                pool = [c for c in pool if c.similarity is not None and c.similarity >= min_similarity]
        if reranker is not None and pool:
            pool = self._rerank(query, pool[:rerank_candidates], reranker)
        if mmr_lambda is not None and query_vector is not None and len(pool) > k:
            pool = self._mmr(pool, k, mmr_lambda)
        pool = pool[:k]
        chunks = self._catalog.get([c.chunk_id for c in pool])
        return [
            replace(
                chunks[c.chunk_id],
                score=c.score,
                similarity=c.similarity,
                keyword_score=c.keyword_score,
                rerank_score=c.rerank_score,
            )
            for c in pool
            if c.chunk_id in chunks
        ]

    def _attach_similarity(
        self, pool: list[_Candidate], known: Mapping[str, float], query_vector: npt.NDArray[np.float32]
    ) -> None:
        unknown = [c.chunk_id for c in pool if c.chunk_id not in known]
        computed: dict[str, float] = {}
        if unknown:
            vectors = self._vector.vectors(unknown)
            computed = dict(zip(unknown, (vectors @ query_vector).tolist(), strict=True))
        for candidate in pool:
            candidate.similarity = known.get(candidate.chunk_id, computed.get(candidate.chunk_id))

    def _rerank(self, query: str, pool: list[_Candidate], reranker: Reranker) -> list[_Candidate]:
        texts = self._catalog.get([c.chunk_id for c in pool])
        kept = [c for c in pool if c.chunk_id in texts]
        scores = reranker.rerank(query, [texts[c.chunk_id].text for c in kept])
        for candidate, score in zip(kept, scores, strict=True):
            candidate.rerank_score = float(score)
            candidate.score = float(score)
        return sorted(kept, key=lambda c: -c.score)

    def _mmr(self, pool: list[_Candidate], k: int, lam: float) -> list[_Candidate]:
        """Maximal marginal relevance: relevance (rank-normalised) against redundancy with what was already picked."""
        vectors = self._vector.vectors([c.chunk_id for c in pool])
        relevance = np.linspace(1.0, 0.0, num=len(pool), dtype=np.float32)  # the pool is ordered best first
        similarity = vectors @ vectors.T
        chosen: list[int] = [0]
        left = list(range(1, len(pool)))
        while left and len(chosen) < k:
            redundancy = similarity[np.ix_(left, chosen)].max(axis=1)
            scores = lam * relevance[left] - (1 - lam) * redundancy
            best = left[int(np.argmax(scores))]
            chosen.append(best)
            left.remove(best)
        return [pool[i] for i in chosen]


def _fuse(
    mode: RetrievalMode,
    dense: list[tuple[str, float]],
    lexical: list[tuple[str, float]],
    fusion: Fusion,
    rrf_k: int,
    dense_weight: float,
) -> list[_Candidate]:
    if mode == "dense":
        return [_Candidate(i, s, similarity=s) for i, s in dense]
    if mode == "keyword":
        return [_Candidate(i, s, keyword_score=s) for i, s in lexical]
    keyword_scores = dict(lexical)
    fused: dict[str, float] = {}
    if fusion == "rrf":
        for ranking in (dense, lexical):
            for rank, (chunk_id, _) in enumerate(ranking):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (rrf_k + rank + 1)
    else:
        for ranking, weight in ((dense, dense_weight), (lexical, 1.0 - dense_weight)):
            for chunk_id, score in _min_max(ranking):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + weight * score
    ordered = sorted(fused.items(), key=lambda item: -item[1])
    return [_Candidate(i, s, keyword_score=keyword_scores.get(i)) for i, s in ordered]


def _min_max(ranking: list[tuple[str, float]]) -> list[tuple[str, float]]:
    if not ranking:
        return []
    scores = [s for _, s in ranking]
    low, high = min(scores), max(scores)
    span = high - low
    return [(i, (s - low) / span if span > 0 else 1.0) for i, s in ranking]
