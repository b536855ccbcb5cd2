"""Rerankers: the HTTP /rerank formats (Cohere/Jina and TEI), errors, and reranking inside a hybrid search."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmops import Platform
from llmops.knowledge import HttpReranker, RerankError

from ..conftest import SAMPLES


def _transport(answer: Any, status: int = 200, seen: list[dict[str, Any]] | None = None) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if seen is not None:
            seen.append({"path": request.url.path, "auth": request.headers.get("authorization"), **body})
        return httpx.Response(status, json=answer(body) if callable(answer) else answer)

    return httpx.MockTransport(handle)


def test_cohere_format_scores_come_back_in_input_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANK_KEY", "sk-test")
    seen: list[dict[str, Any]] = []
    answer = {"results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.2}]}
    reranker = HttpReranker("http://reranker", "bge", api_key_env="RERANK_KEY", transport=_transport(answer, seen=seen))
    assert reranker.rerank("q", ["a", "b"]) == [0.2, 0.9]
    assert seen == [{"path": "/rerank", "auth": "Bearer sk-test", "model": "bge", "query": "q", "documents": ["a", "b"],
                     "top_n": 2}]  # fmt: skip


def test_tei_format_is_a_bare_list() -> None:
    reranker = HttpReranker(
        "http://tei", "m", transport=_transport([{"index": 0, "score": 1.5}, {"index": 1, "score": -2}])
    )
    assert reranker.rerank("q", ["a", "b"]) == [1.5, -2.0]


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        ({"error": "overloaded"}, 503, "answered 503"),
        ({"unexpected": True}, 200, "not a rerank result"),
        ({"results": [{"index": 7, "relevance_score": 1}]}, 200, "not a rerank result"),
    ],
)
def test_broken_upstreams_are_clear_errors(answer: Any, status: int, message: str) -> None:
    reranker = HttpReranker("http://reranker", "m", transport=_transport(answer, status))
    with pytest.raises(RerankError, match=message):
        reranker.rerank("q", ["a"])


def test_a_missing_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(RerankError, match="NO_SUCH_KEY"):
        HttpReranker("http://reranker", "m", api_key_env="NO_SUCH_KEY")


class KeywordCountReranker:
    """Scores a passage by how often it says "carry": a deterministic stand-in for a cross-encoder."""

    name = "carry-counter"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        self.calls.append(len(texts))
        return [float(text.lower().count("carry")) for text in texts]


@pytest.fixture
def ingested(platform: Platform, tmp_path: Path) -> Iterator[Platform]:
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLES, corpus)
    platform.knowledge.ingest(corpus)
    yield platform


def test_a_reranker_reorders_the_hybrid_candidates(ingested: Platform) -> None:
    reranker = KeywordCountReranker()
    ingested.knowledge.rerankers["carry"] = reranker
    hits = ingested.knowledge.search("time off policy", k=3, mode="hybrid", reranker="carry")
    assert reranker.calls and reranker.calls[0] <= 20
    assert "carry" in hits[0].text.lower() and hits[0].rerank_score == hits[0].score
    assert [h.rerank_score for h in hits] == sorted((h.rerank_score for h in hits), reverse=True)
    with pytest.raises(ValueError, match="no reranker named 'nope'"):
        ingested.knowledge.search("x", k=3, reranker="nope")
