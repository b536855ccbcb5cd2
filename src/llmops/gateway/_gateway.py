"""The gateway: resolves a served model name to a provider, streams the answer, and accounts for it.

Every call gets a span named ``chat {model}`` with OpenTelemetry GenAI attributes: the requested and responding
model, token counts, time to first chunk, tokens per second and cost.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai

from llmops._settings import ModelConfig
from llmops._spans import mark_error
from llmops.gateway._prices import Price, PriceTable
from llmops.gateway._types import ChatRequest, ChatResult, Finish, Provider, ProviderError, TextDelta

__all__ = ["Gateway", "UnknownModelError"]


class UnknownModelError(LookupError):
    """The request named a model the gateway does not serve."""


class Gateway:
    """Serves the configured models.

    >>> result = await gateway.complete(ChatRequest(model="smollm2-135m-instruct", messages=[...]))  # doctest: +SKIP
    >>> result.usage.output_tokens, result.cost_usd                                                 # doctest: +SKIP
    """

    def __init__(self, models: Sequence[ModelConfig], providers: Mapping[str, Provider], tracer: trace.Tracer) -> None:
        """``providers`` maps each served model name to the provider that reaches it."""
        self._models = {m.name: m for m in models}
        missing = self._models.keys() - providers.keys()
        if missing:
            raise ValueError(f"no provider for the models {sorted(missing)}")
        self._providers = dict(providers)
        self._tracer = tracer
        self.prices = PriceTable((m.name, Price(m.input_price_per_mtok, m.output_price_per_mtok)) for m in models)

    def model_names(self) -> list[str]:
        return list(self._models)

    def model(self, name: str) -> ModelConfig:
        config = self._models.get(name)
        if config is None:
            raise UnknownModelError(f"unknown model {name!r}; served models: {', '.join(self._models) or 'none'}")
        return config

    def provider(self, name: str) -> Provider:
        self.model(name)
        return self._providers[name]

    def count_tokens(self, model: str, text: str) -> int:
        return self.provider(model).count_tokens(self.model(model).model, text)

    async def complete(
        self, request: ChatRequest, *, context: Context | None = None, request_id: str | None = None
    ) -> ChatResult:
        """Generate the whole answer (streamed internally, so time to first token is measured too)."""
        async for event in self.stream(request, context=context, request_id=request_id):
            if isinstance(event, ChatResult):
                return event
        raise ProviderError("the stream ended without a result")  # unreachable: stream always ends with one

    async def stream(
        self, request: ChatRequest, *, context: Context | None = None, request_id: str | None = None
    ) -> AsyncIterator[TextDelta | ChatResult]:
        """Yields `TextDelta` events, then one `ChatResult` with usage and cost; raises `ProviderError` on failure.

        ``context`` is the trace context to record the call's span under (the current one when omitted);
        ``request_id`` names the request when this call is the whole request (its span is then the trace's root).
        """
        config = self.model(request.model)
        provider = self._providers[request.model]
        span = self._tracer.start_span(f"chat {request.model}", context=context, kind=trace.SpanKind.CLIENT)
        span.set_attributes(
            {
                genai.GEN_AI_OPERATION_NAME: "chat",
                genai.GEN_AI_PROVIDER_NAME: provider.name,
                genai.GEN_AI_REQUEST_MODEL: request.model,
                genai.GEN_AI_REQUEST_TEMPERATURE: request.temperature,
                genai.GEN_AI_REQUEST_TOP_P: request.top_p,
                "llmops.upstream.model": config.model,
            }
        )
        if request_id is not None:
            span.set_attribute("llmops.request_id", request_id)
        if request.max_tokens is not None:
            span.set_attribute(genai.GEN_AI_REQUEST_MAX_TOKENS, request.max_tokens)
        started = time.perf_counter()
        first: float | None = None
        last = started
        parts: list[str] = []
        finish: Finish | None = None
        try:
            async for event in provider.stream(config.model, replace(request, model=config.model)):
                if isinstance(event, TextDelta):
                    last = time.perf_counter()
                    if first is None:
                        first = last
                    parts.append(event.text)
                    yield event
                else:
                    finish = event
            if finish is None:
                raise ProviderError(f"{provider.name} ended the stream without finishing")
            result = self._result(request.model, "".join(parts), finish, started, first, last)
            span.set_attributes(
                {
                    genai.GEN_AI_RESPONSE_MODEL: finish.response_model,
                    genai.GEN_AI_RESPONSE_FINISH_REASONS: [finish.reason],
                    genai.GEN_AI_USAGE_INPUT_TOKENS: finish.usage.input_tokens,
                    genai.GEN_AI_USAGE_OUTPUT_TOKENS: finish.usage.output_tokens,
                    genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: result.ttft_ms / 1000,
                    "llmops.usage.estimated": finish.usage.estimated,
                    "llmops.ttft_ms": result.ttft_ms,
                    "llmops.tokens_per_s": result.tokens_per_s or 0.0,
                    "llmops.cost_usd": result.cost_usd,
                    "llmops.price_book": self.prices.version,
                }
            )
        except BaseException as exc:
            mark_error(span, exc)
            raise
        finally:
            span.end()
        yield result  # after the span ended: when it is the root, the trace is stored before the caller has it

    def _result(
        self, model: str, text: str, finish: Finish, started: float, first: float | None, last: float
    ) -> ChatResult:
        now = time.perf_counter()
        ttft = ((first or now) - started) * 1000
        # Decode speed: tokens after the first, over the time from first to last token.
        decode_seconds = last - first if first is not None else 0.0
        tokens_per_s = (finish.usage.output_tokens - 1) / decode_seconds if decode_seconds > 0 else None
        return ChatResult(
            text=text,
            finish_reason=finish.reason,
            usage=finish.usage,
            model=model,
            response_model=finish.response_model,
            cost_usd=self.prices.cost(model, finish.usage),
            ttft_ms=ttft,
            duration_ms=(now - started) * 1000,
            tokens_per_s=tokens_per_s,
        )

    async def aclose(self) -> None:
        for provider in {id(p): p for p in self._providers.values()}.values():
            await provider.aclose()
