"""Model access: providers behind one protocol, token counts, prices and costs."""

from llmops.gateway._gateway import Gateway, UnknownModelError
from llmops.gateway._local import LocalLlamaProvider, bundled_model_path
from llmops.gateway._openai import OpenAICompatibleProvider
from llmops.gateway._prices import Price, PriceTable
from llmops.gateway._types import (
    ChatRequest,
    ChatResult,
    Finish,
    Provider,
    ProviderError,
    StreamEvent,
    TextDelta,
    Usage,
)

__all__ = [
    "ChatRequest",
    "ChatResult",
    "Finish",
    "Gateway",
    "LocalLlamaProvider",
    "OpenAICompatibleProvider",
    "Price",
    "PriceTable",
    "Provider",
    "ProviderError",
    "StreamEvent",
    "TextDelta",
    "UnknownModelError",
    "Usage",
    "bundled_model_path",
]
