"""Fakes for tests: a scripted model provider and a deterministic embedder. No model files, no network.

>>> from llmops.testing import HashEmbedder, ScriptedProvider
>>> fake = {"smollm2-135m-instruct": ScriptedProvider("Hi [1]")}
>>> platform = Platform(settings, embedder=HashEmbedder(), providers=fake)  # doctest: +SKIP
"""

from __future__ import annotations

import re
import zlib
from collections.abc import AsyncIterator, Callable

import numpy as np
import numpy.typing as npt

from llmops.gateway import ChatRequest, Finish, ProviderError, StreamEvent, TextDelta, Usage
from llmops.testing._pdf import make_pdf

__all__ = ["HashEmbedder", "ScriptedProvider", "make_pdf"]

_WORD = re.compile(r"\w+")
_PIECE = re.compile(r"\S+\s*|\s+")


class HashEmbedder:
    """Bag-of-words feature hashing: texts that share words get similar vectors. One word is one token."""

    name = "hash-embedder"
    max_tokens = 512

    def __init__(self, dimensions: int = 256) -> None:
        self.dimensions = dimensions

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text))

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                h = zlib.crc32(word.encode())
                out[row, h % self.dimensions] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norms == 0, 1.0, norms)).astype(np.float32)


Reply = str | Callable[[ChatRequest], str]


class ScriptedProvider:
    """Answers with scripted text, streamed a word at a time; records every request it gets.

    ``replies`` is one reply, a list used in turn (the last repeats), or a function of the request.
    ``fail_after`` makes the stream raise `ProviderError` after that many pieces, as a cut upstream would.
    """

    name = "scripted"

    def __init__(self, replies: Reply | list[str] = "OK", *, fail_after: int | None = None) -> None:
        self._replies = replies
        self._fail_after = fail_after
        self.requests: list[ChatRequest] = []

    def count_tokens(self, model: str, text: str) -> int:
        return len(_WORD.findall(text))

    def _reply(self, request: ChatRequest) -> str:
        if callable(self._replies):
            return self._replies(request)
        if isinstance(self._replies, list):
            index = min(len(self.requests) - 1, len(self._replies) - 1)
            return self._replies[index]
        return self._replies

    async def stream(self, model: str, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        pieces = _PIECE.findall(self._reply(request))
        limit = request.max_tokens if request.max_tokens is not None else len(pieces)
        for n, piece in enumerate(pieces[:limit]):
            if self._fail_after is not None and n >= self._fail_after:
                raise ProviderError("scripted failure mid-stream", retryable=True)
            yield TextDelta(piece)
        prompt = " ".join(m["content"] for m in request.messages)
        yield Finish(
            reason="length" if limit < len(pieces) else "stop",
            usage=Usage(self.count_tokens(model, prompt), min(limit, len(pieces))),
            response_model=f"scripted-{model}",
        )

    async def aclose(self) -> None:
        return None
