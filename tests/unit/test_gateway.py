from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmops import ModelConfig
from llmops.gateway import (
    ChatRequest,
    ChatResult,
    Gateway,
    OpenAICompatibleProvider,
    ProviderError,
    TextDelta,
    UnknownModelError,
)
from llmops.gateway._local import StopMatcher
from llmops.testing import ScriptedProvider

from ..helpers import fake_openai_upstream, serve_in_thread


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _gateway(provider: object, tracer_provider: TracerProvider, **price: float) -> Gateway:
    config = ModelConfig(name="m", provider="scripted", model="upstream-m", **price)
    return Gateway([config], {"m": provider}, tracer_provider.get_tracer("t"))  # type: ignore[dict-item]


def _only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def test_complete_counts_tokens_prices_and_traces(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    tracer_provider, exporter = spans
    gateway = _gateway(
        ScriptedProvider("one two three"), tracer_provider, input_price_per_mtok=2.0, output_price_per_mtok=10.0
    )
    request = ChatRequest(model="m", messages=[{"role": "user", "content": "count four words please"}])
    result = asyncio.run(gateway.complete(request, request_id="req_1"))
    assert result.text == "one two three" and result.finish_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (4, 3)
    assert result.cost_usd == pytest.approx((4 * 2.0 + 3 * 10.0) / 1e6)
    span = _only_span(exporter)
    attributes = dict(span.attributes or {})
    assert span.name == "chat m"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "m"
    assert attributes["gen_ai.response.model"] == "scripted-upstream-m"
    assert attributes["gen_ai.usage.input_tokens"] == 4 and attributes["gen_ai.usage.output_tokens"] == 3
    assert attributes["llmops.request_id"] == "req_1"
    assert attributes["llmops.cost_usd"] == pytest.approx(result.cost_usd)
    assert "gen_ai.response.time_to_first_chunk" in attributes and result.ttft_ms >= 0


def test_streaming_yields_deltas_then_the_result(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    gateway = _gateway(ScriptedProvider("a b c"), spans[0])

    async def collect() -> list[object]:
        return [e async for e in gateway.stream(ChatRequest(model="m", messages=[{"role": "user", "content": "x"}]))]

    events = asyncio.run(collect())
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["a ", "b ", "c"]
    assert isinstance(events[-1], ChatResult)


def test_max_tokens_cuts_with_finish_reason_length(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    gateway = _gateway(ScriptedProvider("a b c d e"), spans[0])
    result = asyncio.run(gateway.complete(ChatRequest(model="m", messages=[], max_tokens=2)))
    assert result.text == "a b " and result.finish_reason == "length" and result.usage.output_tokens == 2


def test_unknown_model_names_the_served_ones(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    gateway = _gateway(ScriptedProvider(), spans[0])
    with pytest.raises(UnknownModelError, match="served models: m"):
        asyncio.run(gateway.complete(ChatRequest(model="gpt-9", messages=[])))


def test_a_failing_provider_marks_the_span_as_error(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    tracer_provider, exporter = spans
    gateway = _gateway(ScriptedProvider("a b c d", fail_after=2), tracer_provider)
    with pytest.raises(ProviderError, match="mid-stream"):
        asyncio.run(gateway.complete(ChatRequest(model="m", messages=[])))
    span = _only_span(exporter)
    assert span.status.status_code.name == "ERROR"
    assert any(event.name == "exception" for event in span.events)


def test_every_model_needs_a_provider(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    with pytest.raises(ValueError, match="no provider for the models"):
        Gateway([ModelConfig(name="m")], {}, spans[0].get_tracer("t"))


@pytest.mark.parametrize(
    ("stops", "pieces", "expected", "hit"),
    [
        (("END",), ["Hello ", "E", "N", "D", " more"], "Hello ", True),
        (("END",), ["Hello ", "E", "x"], "Hello Ex", False),
        (("\n\n", "Q:"), ["one", "\n", "\nQ:"], "one", True),
        ((), ["a", "b"], "ab", False),
    ],
)
def test_stop_matcher(stops: tuple[str, ...], pieces: list[str], expected: str, hit: bool) -> None:
    matcher = StopMatcher(stops)
    out = ""
    stopped = False
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out += text
        if stopped:
            break
    if not stopped:
        out += matcher.flush()
    assert (out, matcher.hit) == (expected, hit)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_in_thread(fake_openai_upstream()) as base:
        yield base + "/v1"


def _openai_gateway(upstream: str, tracer_provider: TracerProvider, model: str) -> Gateway:
    config = ModelConfig(name="remote", provider="openai-compatible", model=model, base_url=upstream)
    provider = OpenAICompatibleProvider(upstream)
    return Gateway([config], {"remote": provider}, tracer_provider.get_tracer("t"))


def _ask(gateway: Gateway) -> ChatResult:
    async def run() -> ChatResult:
        try:
            return await gateway.complete(ChatRequest(model="remote", messages=[{"role": "user", "content": "hi"}]))
        finally:
            await gateway.aclose()

    return asyncio.run(run())


def test_openai_compatible_upstream_streams_with_usage(
    upstream: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    result = _ask(_openai_gateway(upstream, spans[0], "ok"))
    assert result.text == "Hello world" and result.finish_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.estimated) == (11, 2, False)
    assert result.response_model == "ok-2026"


def test_openai_compatible_upstream_without_usage_is_estimated(
    upstream: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    result = _ask(_openai_gateway(upstream, spans[0], "no-usage"))
    assert result.usage.estimated and result.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("fail-500", "answered 500"),
        ("cut", "ended the stream before the answer was complete"),
        ("bad-chunk", "malformed stream chunk"),
    ],
)
def test_openai_compatible_upstream_failures_are_errors_never_short_answers(
    upstream: str, spans: tuple[TracerProvider, InMemorySpanExporter], model: str, message: str
) -> None:
    with pytest.raises(ProviderError, match=message):
        _ask(_openai_gateway(upstream, spans[0], model))


def test_unreachable_upstream_is_a_retryable_error(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    with pytest.raises(ProviderError) as raised:
        _ask(_openai_gateway("http://127.0.0.1:9/v1", spans[0], "ok"))
    assert raised.value.retryable
