"""The gateway against real HTTP upstreams on loopback (OpenAI- and Anthropic-compatible, failing on demand):
providers, retries, fallback, circuit breakers, timeouts, streams that fail, tools, prices, caching, routing."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmops import ModelConfig
from llmops._settings import GatewaySettings, RouterConfig
from llmops.gateway import (
    AnthropicProvider,
    ChatRequest,
    ChatResult,
    Finish,
    Gateway,
    OpenAICompatibleProvider,
    ProviderError,
    StreamEvent,
    TextDelta,
    Timeouts,
    UnknownModelError,
    Usage,
)
from llmops.testing import ScriptedProvider

from ..helpers import FakeUpstream, serve_in_thread

FAST = GatewaySettings(retries=2, backoff_base_s=0.001, backoff_max_s=0.002, first_token_timeout_s=0.5,
                       total_timeout_s=5, breaker_failures=3, breaker_cooldown_s=0.3)  # fmt: skip
HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with serve_in_thread(fake.app) as base:
        yield fake, base


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def _tracer(exporter: InMemorySpanExporter) -> Any:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test")


def _openai(name: str, model: str, base: str, **extra: Any) -> tuple[ModelConfig, OpenAICompatibleProvider]:
    config = ModelConfig(name=name, provider="openai-compatible", model=model, base_url=f"{base}/v1", **extra)
    return config, OpenAICompatibleProvider(f"{base}/v1", api_key="sk-test", timeouts=Timeouts(2, 0.5, 5))


def _anthropic(name: str, model: str, base: str, **extra: Any) -> tuple[ModelConfig, AnthropicProvider]:
    config = ModelConfig(name=name, provider="anthropic", model=model, base_url=base, **extra)
    return config, AnthropicProvider(base, api_key="sk-ant-test")


def _gateway(exporter: InMemorySpanExporter, *pairs: tuple[ModelConfig, Any], **kwargs: Any) -> Gateway:
    settings = kwargs.pop("settings", FAST)
    return Gateway([c for c, _ in pairs], {c.name: p for c, p in pairs}, _tracer(exporter), settings=settings,
                   rng=random.Random(1), **kwargs)  # fmt: skip


def _run(gateway: Gateway, request: ChatRequest) -> ChatResult:
    async def go() -> ChatResult:
        try:
            return await gateway.complete(request)
        finally:
            await gateway.aclose()

    return asyncio.run(go())


def _span(exporter: InMemorySpanExporter) -> ReadableSpan:
    return exporter.get_finished_spans()[-1]


def test_openai_compatible_upstream(upstream: tuple[FakeUpstream, str], exporter: InMemorySpanExporter) -> None:
    fake, base = upstream
    gateway = _gateway(exporter, _openai("gpt", "ok", base, input_price_per_mtok=1.0, output_price_per_mtok=4.0))
    result = _run(gateway, ChatRequest(model="gpt", messages=HELLO, max_tokens=5, seed=3))
    assert (result.text, result.finish_reason, result.response_model) == ("Hello world", "stop", "ok-2026")
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.estimated) == (11, 2, False)
    assert result.cost_usd == pytest.approx((11 * 1.0 + 2 * 4.0) / 1e6)
    assert fake.bodies["ok"]["stream_options"] == {"include_usage": True} and fake.bodies["ok"]["seed"] == 3
    attributes = dict(_span(exporter).attributes or {})
    assert attributes["gen_ai.request.model"] == "gpt" and attributes["llmops.upstream.model"] == "ok"
    assert attributes["gen_ai.response.model"] == "ok-2026" and "llmops.cache.hit" not in attributes


def test_anthropic_messages_upstream(upstream: tuple[FakeUpstream, str], exporter: InMemorySpanExporter) -> None:
    fake, base = upstream
    gateway = _gateway(exporter, _anthropic("claude", "ok", base, input_price_per_mtok=3.0, output_price_per_mtok=15.0))
    messages = [{"role": "system", "content": "Be brief."}, *HELLO]
    result = _run(gateway, ChatRequest(model="claude", messages=messages, temperature=1.5, stop=("END",)))
    assert (result.text, result.finish_reason, result.response_model) == ("Hello world", "stop", "ok-2026")
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 2)
    body = fake.bodies["ok"]
    assert body["system"] == "Be brief." and body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    ]
    assert body["max_tokens"] == 1024 and body["temperature"] == 1.0 and body["stop_sequences"] == ["END"]
    assert result.cost_usd == pytest.approx((12 * 3 + 2 * 15) / 1e6)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_tool_calls_stream_through(
    upstream: tuple[FakeUpstream, str], exporter: InMemorySpanExporter, kind: str
) -> None:
    fake, base = upstream
    pair = _openai("m", "tools", base) if kind == "openai" else _anthropic("m", "tools", base)
    gateway = _gateway(exporter, pair)
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
    result = _run(gateway, ChatRequest(model="m", messages=HELLO, tools=tools, tool_choice="required"))
    assert result.finish_reason == "tool_calls"
    (call,) = result.tool_calls
    assert call["function"]["name"] == "get_weather" and call["function"]["arguments"] == '{"city": "Oslo"}'
    if kind == "anthropic":
        assert fake.bodies["tools"]["tools"][0]["input_schema"]["properties"] == {"city": {"type": "string"}}
        assert fake.bodies["tools"]["tool_choice"] == {"type": "any"}


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_retries_on_retryable_errors(
    upstream: tuple[FakeUpstream, str], exporter: InMemorySpanExporter, stream: bool
) -> None:
    fake, base = upstream
    fake.requests.pop("flaky", None)
    result = _run(
        _gateway(exporter, _openai("m", "flaky", base)), ChatRequest(model="m", messages=HELLO, stream=stream)
    )
    assert result.text == "Hello world" and result.attempts == 3 and fake.requests["flaky"] == 3
    assert dict(_span(exporter).attributes or {})["llmops.retries"] == 2


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_no_retry_on_a_bad_request(
    upstream: tuple[FakeUpstream, str], exporter: InMemorySpanExporter, stream: bool
) -> None:
    fake, base = upstream
    fake.requests.pop("bad-request", None)
    gateway = _gateway(exporter, _openai("m", "bad-request", base, fallbacks=["b"]), _openai("b", "ok", base))
    with pytest.raises(ProviderError, match="answered 400"):
        _run(gateway, ChatRequest(model="m", messages=HELLO, stream=stream))
    assert fake.requests["bad-request"] == 1  # neither retried nor sent to the fallback


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_fallback_chain_across_providers(
    upstream: tuple[FakeUpstream, str], exporter: InMemorySpanExporter, stream: bool
) -> None:
    _fake, base = upstream
    gateway = _gateway(
        exporter,
        _openai("primary", "fail-500", base, fallbacks=["second", "third"]),
        _openai("second", "overloaded", base),
        _anthropic("third", "ok", base),
    )
    result = _run(gateway, ChatRequest(model="primary", messages=HELLO, stream=stream))
    assert result.served_by == "third" and result.fallbacks == ["primary", "second"] and result.attempts == 7
    attributes = dict(_span(exporter).attributes or {})
    assert attributes["llmops.served_by"] == "third" and list(attributes["llmops.fallbacks"]) == ["primary", "second"]  # type: ignore[arg-type]


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_every_upstream_failing_is_one_clear_error(
    upstream: tuple[FakeUpstream, str], exporter: InMemorySpanExporter, stream: bool
) -> None:
    _fake, base = upstream
    gateway = _gateway(exporter, _openai("a", "fail-500", base, fallbacks=["b"]), _anthropic("b", "overloaded", base))
    with pytest.raises(ProviderError, match=r"every upstream failed for 'a': a: .*answered 500.*b: .*answered 529"):
        _run(gateway, ChatRequest(model="a", messages=HELLO, stream=stream))
    assert _span(exporter).status.status_code.name == "ERROR"


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_stall_before_the_first_token_times_out_and_fails_over(
    upstream: tuple[FakeUpstream, str], exporter: InMemorySpanExporter, stream: bool
) -> None:
    _fake, base = upstream
    settings = FAST.model_copy(update={"retries": 0})
    gateway = _gateway(exporter, _openai("slow", "stall", base, fallbacks=["fast"]), _openai("fast", "ok", base),
                       settings=settings)  # fmt: skip
    result = _run(gateway, ChatRequest(model="slow", messages=HELLO, stream=stream))
    assert result.served_by == "fast" and result.fallbacks == ["slow"]


def test_a_stream_cut_after_text_is_an_error_not_a_short_answer(
    upstream: tuple[FakeUpstream, str], exporter: InMemorySpanExporter
) -> None:
    _fake, base = upstream
    for pair in (_openai("m", "cut", base, fallbacks=["b"]), _anthropic("m", "error-event", base, fallbacks=["b"])):
        gateway = _gateway(exporter, pair, _openai("b", "ok", base))

        async def collect(g: Gateway = gateway) -> list[Any]:
            events: list[Any] = []
            try:
                async for event in g.stream(ChatRequest(model="m", messages=HELLO)):
                    events.append(event)
            finally:
                await g.aclose()
            return events

        with pytest.raises(ProviderError, match="failed after the answer started"):
            asyncio.run(collect())


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_cut_stream_before_any_text_fails_over(
    upstream: tuple[FakeUpstream, str], exporter: InMemorySpanExporter, stream: bool
) -> None:
    # ScriptedProvider fails on its first piece: nothing was sent, so the gateway may try the fallback.
    _fake, base = upstream
    broken = (ModelConfig(name="m", provider="scripted", fallbacks=["b"]), ScriptedProvider("a b", fail_after=0))
    result = _run(
        _gateway(exporter, broken, _openai("b", "ok", base)), ChatRequest(model="m", messages=HELLO, stream=stream)
    )
    assert result.served_by == "b" and result.text == "Hello world"


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_the_circuit_breaker_opens_and_probes_back(
    upstream: tuple[FakeUpstream, str], exporter: InMemorySpanExporter, stream: bool
) -> None:
    fake, base = upstream
    settings = FAST.model_copy(update={"retries": 0, "breaker_failures": 2, "breaker_cooldown_s": 0.3})
    gateway = _gateway(exporter, _openai("a", "fail-500", base, fallbacks=["b"]), _openai("b", "ok", base),
                       settings=settings)  # fmt: skip
    fake.requests.pop("fail-500", None)

    async def scenario() -> list[str]:
        served = []
        for _ in range(5):
            served.append(
                (await gateway.complete(ChatRequest(model="a", messages=HELLO, stream=stream, cache=False))).served_by
            )
        assert gateway.breaker("a").state == "open"
        assert fake.requests["fail-500"] == 2  # the open circuit sent nothing more to the failing upstream
        await asyncio.sleep(0.35)
        assert gateway.breaker("a").state == "half-open"
        await gateway.complete(
            ChatRequest(model="a", messages=HELLO, stream=stream, cache=False)
        )  # the probe: fails, opens again
        assert fake.requests["fail-500"] == 3 and gateway.breaker("a").state == "open"
        await gateway.aclose()
        return served

    assert asyncio.run(scenario()) == ["b"] * 5


def test_unknown_models_name_the_served_ones(exporter: InMemorySpanExporter) -> None:
    gateway = _gateway(exporter, (ModelConfig(name="m", provider="scripted"), ScriptedProvider()))
    with pytest.raises(UnknownModelError, match="served models: m"):
        _run(gateway, ChatRequest(model="gpt-9", messages=HELLO))


def test_unknown_fallbacks_are_refused_at_start(exporter: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match=r"falls back to unknown models \['nope'\]"):
        _gateway(exporter, (ModelConfig(name="m", provider="scripted", fallbacks=["nope"]), ScriptedProvider()))


def test_exact_cache_serves_repeats_at_no_cost(exporter: InMemorySpanExporter) -> None:
    scripted = ScriptedProvider("cached answer")
    gateway = _gateway(exporter, (ModelConfig(name="m", provider="scripted", input_price_per_mtok=1.0), scripted))

    async def go() -> list[ChatResult]:
        first = await gateway.complete(ChatRequest(model="m", messages=HELLO))
        again = await gateway.complete(ChatRequest(model="m", messages=HELLO))
        sampled = await gateway.complete(ChatRequest(model="m", messages=HELLO, temperature=0.7))
        sampled_again = await gateway.complete(ChatRequest(model="m", messages=HELLO, temperature=0.7))
        opted_in = await gateway.complete(ChatRequest(model="m", messages=HELLO, temperature=0.7, cache=True))
        other_scope = await gateway.complete(ChatRequest(model="m", messages=[{"role": "user", "content": "other"}]))
        return [first, again, sampled, sampled_again, opted_in, other_scope]

    first, again, sampled, sampled_again, opted_in, other = asyncio.run(go())
    assert first.cache_hit is None and again.cache_hit == "exact" and again.text == "cached answer"
    assert again.cost_usd == 0.0 and first.cost_usd > 0
    assert sampled.cache_hit is None and sampled_again.cache_hit is None  # temperature > 0: not cached by default
    assert opted_in.cache_hit is None and other.cache_hit is None
    assert len(scripted.requests) == 5
    assert "llmops.cache.hit" not in dict(_span(exporter).attributes or {})  # the last call missed the cache


def test_semantic_cache_hits_paraphrases_and_not_near_misses(exporter: InMemorySpanExporter) -> None:
    from llmops.knowledge import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    settings = FAST.model_copy(update={"semantic_cache": True, "semantic_cache_threshold": 0.8})
    scripted = ScriptedProvider("Use the reset link on the login page.")
    gateway = _gateway(exporter, (ModelConfig(name="m", provider="scripted"), scripted), settings=settings,
                       semantic_embed=embedder.embed)  # fmt: skip

    def ask(text: str, team: str = "a") -> str | None:
        from llmops.gateway import Caller

        async def go() -> str | None:
            result = await gateway.complete(ChatRequest(model="m", messages=[{"role": "user", "content": text}]),
                                            caller=Caller(team=team))  # fmt: skip
            return result.cache_hit

        return asyncio.run(go())

    assert ask("How do I reset my password?") is None
    assert ask("How can I reset my password?") == "semantic"
    assert ask("How do I reset my username?") is None  # a near miss: one content word differs
    assert ask("How can I reset my password?", team="b") is None  # another tenant never gets team a's answer


def test_routing_by_cost_complexity_weight_and_latency(exporter: InMemorySpanExporter) -> None:
    small = (ModelConfig(name="small", provider="scripted", input_price_per_mtok=0.1, output_price_per_mtok=0.2,
                         capabilities=["json"]), ScriptedProvider("small"))  # fmt: skip
    large = (ModelConfig(name="large", provider="scripted", input_price_per_mtok=3.0, output_price_per_mtok=15.0,
                         capabilities=["json", "tools"]), ScriptedProvider("large"))  # fmt: skip
    routers = [
        RouterConfig(name="cheap", policy="cost", candidates=["small", "large"]),
        RouterConfig(name="smart", policy="complexity", simple="small", complex="large"),
        RouterConfig(name="split", policy="weighted", weights={"small": 0.8, "large": 0.2}),
        RouterConfig(name="fast", policy="latency", candidates=["small", "large"]),
    ]
    gateway = _gateway(exporter, small, large, routers=routers)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]

    def served(model: str, text: str = "What is the PTO policy?", **kwargs: Any) -> str:
        request = ChatRequest(model=model, messages=[{"role": "user", "content": text}], cache=False, **kwargs)
        return asyncio.run(gateway.complete(request)).served_by

    assert served("cheap") == "small"
    assert served("cheap", tools=tools) == "large"  # only large can call tools
    assert served("smart") == "small"
    assert served("smart", "Explain step by step why the sky is blue and compare it with sunsets.") == "large"
    attributes = dict(_span(exporter).attributes or {})
    assert attributes["llmops.route.policy"] == "complexity" and "reasoning" in str(attributes["llmops.route.reason"])
    picks = [served("split", user=f"user-{i}") for i in range(400)]
    assert 0.72 < picks.count("small") / 400 < 0.88
    assert len({served("split", user="alice") for _ in range(20)}) == 1  # sticky per user
    fast = gateway.routers["fast"]
    fast.observe("small", 900.0)  # small got slow
    for _ in range(5):
        fast.observe("large", 50.0)
    picks = [served("fast") for _ in range(40)]
    assert picks.count("large") >= 34  # the lowest recent TTFT, with a little exploration


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_whole_answers_are_asked_for_in_one_piece(
    upstream: tuple[FakeUpstream, str], exporter: InMemorySpanExporter, kind: str
) -> None:
    fake, base = upstream
    make = _openai if kind == "openai" else _anthropic
    result = _run(_gateway(exporter, make("m", "ok", base)), ChatRequest(model="m", messages=HELLO, stream=False))
    assert result.text == "Hello world" and result.usage.output_tokens == 2 and fake.bodies["ok"]["stream"] is False
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    called = _run(_gateway(exporter, make("m", "tools", base)),
                  ChatRequest(model="m", messages=HELLO, tools=tools, stream=False))  # fmt: skip
    arguments = called.tool_calls[0]["function"]["arguments"]
    assert called.finish_reason == "tool_calls" and json.loads(arguments) == {"city": "Oslo"}
    if kind == "openai":
        with pytest.raises(ProviderError, match=r"malformed|incomplete"):
            _run(_gateway(exporter, make("m", "cut", base, fallbacks=[])), ChatRequest(model="m", messages=HELLO,
                 stream=False, cache=False))  # fmt: skip


def test_the_semantic_cache_is_shared_through_redis(exporter: InMemorySpanExporter) -> None:
    import secrets as _secrets

    from llmops.gateway import Caller
    from llmops.knowledge import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    settings = FAST.model_copy(update={"semantic_cache": True, "redis_url": "redis://127.0.0.1:6379/0"})
    team = "team-" + _secrets.token_hex(4)  # a fresh scope in the shared Redis

    def replica() -> Gateway:
        config = ModelConfig(name="m", provider="scripted")
        return _gateway(exporter, (config, ScriptedProvider("Use the reset link.")), settings=settings,
                        semantic_embed=embedder.embed)  # fmt: skip

    def ask(gateway: Gateway, text: str) -> str | None:
        request = ChatRequest(model="m", messages=[{"role": "user", "content": text}])
        return asyncio.run(gateway.complete(request, caller=Caller(team=team))).cache_hit

    first, second = replica(), replica()  # two processes' gateways, one Redis
    assert ask(first, "How do I reset my password?") is None
    assert ask(second, "How can I reset my password?") == "semantic"
    assert ask(second, "How do I reset my password?") == "exact"


def test_credentials_come_from_the_environment_or_a_secrets_file(
    upstream: tuple[FakeUpstream, str], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmops import Settings

    _fake, base = upstream
    secret = tmp_path / "openai.key"
    secret.write_text("sk-from-file\n")
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-from-env")
    by_env = ModelConfig(name="a", provider="openai-compatible", model="ok", base_url=f"{base}/v1",
                         api_key_env="TEST_UPSTREAM_KEY")  # fmt: skip
    by_file = ModelConfig(name="b", provider="openai-compatible", model="ok", base_url=f"{base}/v1",
                          api_key_file=secret)  # fmt: skip
    settings = Settings(data_dir=tmp_path)
    env_provider = OpenAICompatibleProvider.from_config(by_env, settings)
    file_provider = OpenAICompatibleProvider.from_config(by_file, settings)
    assert env_provider.upstream.headers["authorization"] == "Bearer sk-from-env"
    assert file_provider.upstream.headers["authorization"] == "Bearer sk-from-file"
    missing = by_file.model_copy(update={"api_key_file": tmp_path / "absent.key"})
    with pytest.raises(ValueError, match="cannot read api_key_file"):
        OpenAICompatibleProvider.from_config(missing, settings)


def test_a_request_that_does_not_stream_takes_the_providers_whole_answer(exporter: InMemorySpanExporter) -> None:
    class WholeAnswers(ScriptedProvider):
        """Streams its script; answers whole requests in one call with other text."""

        def __init__(self) -> None:
            super().__init__("streamed answer")
            self.whole: list[ChatRequest] = []

        async def complete(self, model: str, request: ChatRequest) -> list[StreamEvent]:
            self.whole.append(request)
            return [TextDelta("whole answer"), Finish("stop", Usage(3, 2), f"whole-{model}")]

    provider = WholeAnswers()
    config = ModelConfig(name="m", provider="scripted", model="v1", params={"max_tokens": 7})
    whole = _run(_gateway(exporter, (config, provider)), ChatRequest(model="m", messages=HELLO, stream=False))
    assert (whole.text, whole.response_model, whole.usage.output_tokens) == ("whole answer", "whole-v1", 2)
    assert len(provider.whole) == 1 and provider.whole[0].max_tokens == 7  # the alias's defaults still apply
    assert provider.requests == []  # its stream was never opened
    attributes = dict(_span(exporter).attributes or {})
    assert attributes["gen_ai.request.stream"] is False and attributes["llmops.cost_usd"] == 0.0
    streamed = _run(_gateway(exporter, (config, provider)), ChatRequest(model="m", messages=HELLO))
    assert streamed.text == "streamed answer" and len(provider.whole) == 1
