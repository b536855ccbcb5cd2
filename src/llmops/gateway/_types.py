"""The gateway's vocabulary: a chat request, the events of a streamed answer, and the finished result."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "ChatRequest",
    "ChatResult",
    "Finish",
    "Provider",
    "ProviderError",
    "StreamEvent",
    "TextDelta",
    "Usage",
]


class ProviderError(RuntimeError):
    """An upstream failed. ``retryable`` says whether the same request may succeed if sent again."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class ChatRequest:
    """What a caller asks for. ``model`` is the name the gateway serves (an alias), not the upstream's id."""

    model: str
    messages: list[dict[str, str]]
    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    estimated: bool = False  # True when the upstream returned no counts and a tokenizer estimate was used

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finish:
    """The last event of every successful stream. A stream that ends without it failed."""

    reason: str  # "stop" | "length"
    usage: Usage
    response_model: str


StreamEvent = TextDelta | Finish


@dataclass
class ChatResult:
    text: str
    finish_reason: str
    usage: Usage
    model: str
    response_model: str
    cost_usd: float
    ttft_ms: float
    duration_ms: float
    tokens_per_s: float | None
    trace_id: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """Reaches one upstream. Register more through the ``llmops.providers`` entry point.

    ``stream`` yields `TextDelta` events and then exactly one `Finish`; on failure it raises `ProviderError`
    instead of finishing, so a cut answer can never pass as a complete one.
    """

    name: str

    def stream(self, model: str, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Generate an answer to ``request`` with the upstream model ``model``."""
        ...

    def count_tokens(self, model: str, text: str) -> int:
        """Tokens ``text`` takes for ``model`` (exact where the tokenizer is known, an estimate otherwise)."""
        ...

    async def aclose(self) -> None:
        """Release connections and models."""
        ...
