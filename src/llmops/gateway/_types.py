"""The gateway's vocabulary: a chat request, the events of a streamed answer, and the finished result.

Messages use OpenAI's chat shape (``role``, ``content``, and for tools ``tool_calls`` / ``tool_call_id``); wire
adapters translate it to each upstream's own format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ChatRequest",
    "ChatResult",
    "Finish",
    "Provider",
    "ProviderError",
    "StreamEvent",
    "TextDelta",
    "ToolCallDelta",
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
    """What a caller asks for. ``model`` is the name the gateway serves (an alias or a router), not an upstream id.

    ``user`` and ``metadata`` (team, app, tags) attribute the call for budgets and cost reports; ``cache`` forces the
    response cache on (for temperature > 0) or off.
    """

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    cache: bool | None = None
    stream: bool = True  # False: the caller wants the whole answer at once, so upstreams may answer in one piece


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    estimated: bool = False  # True when the upstream returned no counts and a tokenizer estimate was used
    cached_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call: the first piece of call ``index`` carries its id and name, later ones more arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Finish:
    """The last event of every successful stream. A stream that ends without it failed."""

    reason: str  # "stop" | "length" | "tool_calls" | "content_filter"
    usage: Usage
    response_model: str
    queue_ms: float = 0.0  # time the request waited for the model before it started (local models)


StreamEvent = TextDelta | ToolCallDelta | Finish


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
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    cache_hit: str | None = None  # "exact" | "semantic" when served from the cache
    attempts: int = 1
    fallbacks: list[str] = field(default_factory=list)  # aliases tried before the one that answered
    served_by: str = ""  # the alias that answered (differs from ``model`` after routing or fallback)
    queue_ms: float = 0.0
    price_book: str = ""
    trace_id: str | None = None


@runtime_checkable
class Provider(Protocol):
    """Reaches one upstream. Register more through the ``llmops.providers`` entry point.

    ``stream`` yields `TextDelta` / `ToolCallDelta` events and then exactly one `Finish`; on failure it raises
    `ProviderError` instead of finishing, so a cut answer can never pass as a complete one.

    A provider may also have ``async def complete(model, request) -> list[StreamEvent]``: the whole answer of a
    request that does not stream, in one call (the HTTP providers ask their upstream for one response). The gateway
    uses it for such requests, with the first-token limit on the whole call; without it, they are streamed.
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
