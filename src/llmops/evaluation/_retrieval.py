"""Retrieval quality: recall@k, MRR and nDCG@k of a retriever over queries with known relevant passages.

A relevant passage is named by its document (a file name or any suffix of the source) and, optionally, a snippet
its text contains. Labels by snippet survive re-chunking, which chunk-id labels would not: the same query set
compares chunkers, sizes and retrieval modes. A passage counts once: the first retrieved chunk that holds it is the
hit; later chunks holding it again add nothing (so a retriever cannot score by repeating one passage).
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "QuerySetError",
    "RelevantPassage",
    "RetrievalQuery",
    "RetrievalReport",
    "evaluate_retrieval",
    "load_query_set",
    "passages_found",
]

_SPACES = re.compile(r"\s+")


class QuerySetError(ValueError):
    """The query set file is malformed; the message names the line."""


@dataclass(frozen=True)
class RelevantPassage:
    source: str
    contains: str | None = None

    def matches(self, source: str, text: str) -> bool:
        if not (source == self.source or source.endswith("/" + self.source)):
            return False
        return self.contains is None or _normalise(self.contains) in _normalise(text)


@dataclass(frozen=True)
class RetrievalQuery:
    query: str
    relevant: tuple[RelevantPassage, ...]
    tag: str = ""


@dataclass
class RetrievalReport:
    """Mean metrics over the queries that have relevant passages, and latency over all."""

    name: str
    k: int
    queries: int
    recall_at_k: float
    mrr: float
    ndcg_at_k: float
    hit_rate: float
    p50_ms: float
    by_tag: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class _Hit:
    """What a retriever returns, reduced to what relevance needs."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text


def _normalise(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def load_query_set(path: Path) -> list[RetrievalQuery]:
    """Read a JSONL query set: ``{"query": str, "relevant": [{"source": str, "contains": str?}], "tag": str?}``."""
    queries: list[RetrievalQuery] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise QuerySetError(f"cannot read the query set {path}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            query = item["query"]
            relevant = tuple(
                RelevantPassage(str(r["source"]), str(r["contains"]) if r.get("contains") else None)
                for r in item.get("relevant", [])
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise QuerySetError(f"{path}:{number}: not a query line ({type(exc).__name__}: {exc})") from exc
        if not isinstance(query, str) or not query.strip():
            raise QuerySetError(f"{path}:{number}: query must be a non-empty string")
        queries.append(RetrievalQuery(query, relevant, str(item.get("tag", ""))))
    if not queries:
        raise QuerySetError(f"{path} holds no queries")
    return queries


def evaluate_retrieval(
    name: str,
    queries: Sequence[RetrievalQuery],
    retrieve: Callable[[str], Sequence[Any]],
    *,
    k: int,
) -> RetrievalReport:
    """Run ``retrieve`` (returning objects with ``source`` and ``text``, best first) on every query and score it."""
    per_query: list[tuple[str, float, float, float, float]] = []
    latencies: list[float] = []
    for query in queries:
        started = time.perf_counter()
        hits = list(retrieve(query.query))[:k]
        latencies.append((time.perf_counter() - started) * 1000)
        if not query.relevant:
            continue
        recall, reciprocal, ndcg = _score(query.relevant, hits, k)
        per_query.append((query.tag, recall, reciprocal, ndcg, 1.0 if reciprocal > 0 else 0.0))

    def mean(rows: list[tuple[str, float, float, float, float]], column: int) -> float:
        return round(statistics.fmean(float(row[column]) for row in rows), 4) if rows else 0.0

    by_tag: dict[str, dict[str, float]] = {}
    for tag in sorted({row[0] for row in per_query if row[0]}):
        rows = [row for row in per_query if row[0] == tag]
        by_tag[tag] = {
            "queries": len(rows),
            "recall_at_k": mean(rows, 1),
            "mrr": mean(rows, 2),
            "ndcg_at_k": mean(rows, 3),
        }
    return RetrievalReport(
        name=name,
        k=k,
        queries=len(per_query),
        recall_at_k=mean(per_query, 1),
        mrr=mean(per_query, 2),
        ndcg_at_k=mean(per_query, 3),
        hit_rate=mean(per_query, 4),
        p50_ms=round(statistics.median(latencies), 2) if latencies else 0.0,
        by_tag=by_tag,
    )


def passages_found(relevant: Sequence[RelevantPassage], hits: Sequence[Any]) -> list[int]:
    """How many relevant passages each hit (objects with ``source`` and ``text``, best first) finds for the first time.

    The rule every retrieval metric shares: a passage counts once, at the first hit that holds it; a hit holding a
    passage already found adds nothing. One hit can find several passages (a chunk that spans two labelled snippets).

    Example:
        >>> relevant = [RelevantPassage("pto.md", "15 days"), RelevantPassage("pto.md", "carry over")]
        >>> hits = [_Hit("hr/pto.md", "Staff get 15 days."), _Hit("pto.md", "15 days again"), _Hit("x.md", "")]
        >>> passages_found(relevant, hits)
        [1, 0, 0]
    """
    found: set[int] = set()
    counts: list[int] = []
    for hit in hits:
        new = [i for i, passage in enumerate(relevant) if i not in found and passage.matches(hit.source, hit.text)]
        found.update(new)
        counts.append(len(new))
    return counts


def _score(relevant: Sequence[RelevantPassage], hits: Sequence[Any], k: int) -> tuple[float, float, float]:
    counts = passages_found(relevant, hits)
    first_rank = next((rank for rank, count in enumerate(counts, 1) if count), 0)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, count in enumerate(counts, 1) if count)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(relevant)) + 1))
    return sum(counts) / len(relevant), (1.0 / first_rank if first_rank else 0.0), (dcg / ideal if ideal else 0.0)
