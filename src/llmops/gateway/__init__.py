"""Model access: providers (wire formats split from authenticated upstreams), routing, fallback, retries, circuit
breakers, caching, rate limits and budgets, token counts, price books and the call ledger."""

from llmops.gateway._breaker import CircuitBreaker
from llmops.gateway._cache import CachedAnswer, ExactCache, InProcessStore, RedisStore, SemanticCache, content_words
from llmops.gateway._gateway import EmbeddingProvider, EmbeddingResult, Gateway, UnknownModelError
from llmops.gateway._ledger import Ledger, RepriceReport
from llmops.gateway._limits import (
    AuthenticationError,
    Caller,
    InProcessCounters,
    LimitEnforcer,
    LimitExceededError,
    RedisCounters,
    identify,
)
from llmops.gateway._local import LocalEmbeddingProvider, LocalLlamaProvider, bundled_model_path
from llmops.gateway._prices import ModelPrice, PriceBook
from llmops.gateway._routing import Route, Router, request_complexity
from llmops.gateway._tokens import counter_for
from llmops.gateway._types import (
    ChatRequest,
    ChatResult,
    Finish,
    Provider,
    ProviderError,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from llmops.gateway._upstream import (
    AnthropicProvider,
    HTTPProvider,
    OpenAICompatibleProvider,
    Timeouts,
    Upstream,
    check_base_url,
)
from llmops.gateway._wire_anthropic import AnthropicMessagesFormat
from llmops.gateway._wire_openai import OpenAIChatFormat

__all__ = [
    "AnthropicMessagesFormat",
    "AnthropicProvider",
    "AuthenticationError",
    "CachedAnswer",
    "Caller",
    "ChatRequest",
    "ChatResult",
    "CircuitBreaker",
    "EmbeddingProvider",
    "EmbeddingResult",
    "ExactCache",
    "Finish",
    "Gateway",
    "HTTPProvider",
    "InProcessCounters",
    "InProcessStore",
    "Ledger",
    "LimitEnforcer",
    "LimitExceededError",
    "LocalEmbeddingProvider",
    "LocalLlamaProvider",
    "ModelPrice",
    "OpenAIChatFormat",
    "OpenAICompatibleProvider",
    "PriceBook",
    "Provider",
    "ProviderError",
    "RedisCounters",
    "RedisStore",
    "RepriceReport",
    "Route",
    "Router",
    "SemanticCache",
    "StreamEvent",
    "TextDelta",
    "Timeouts",
    "ToolCallDelta",
    "UnknownModelError",
    "Upstream",
    "Usage",
    "bundled_model_path",
    "check_base_url",
    "content_words",
    "counter_for",
    "identify",
    "request_complexity",
]
