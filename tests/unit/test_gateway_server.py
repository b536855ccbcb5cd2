"""The gateway's HTTP surfaces through real clients: the openai and anthropic SDKs, LangChain's ChatOpenAI, httpx;
API keys, limits and budgets (also under concurrency, in process and in Redis), the SSRF rule, the ledger."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from llmops import ModelConfig, Platform, Settings
from llmops._settings import ApiKeyConfig, GatewaySettings, LimitConfig
from llmops.gateway import Caller, ChatRequest, LimitExceededError
from llmops.testing import HashEmbedder, ScriptedProvider

from ..helpers import FakeUpstream, serve_in_thread

KEY = "sk-llmops-" + "a" * 24
OTHER_KEY = "sk-llmops-" + "b" * 24


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with serve_in_thread(fake.app) as base:
        yield fake, base


def _platform(tmp_path: Path, base: str, **gateway: Any) -> Platform:
    models = [
        ModelConfig(name="gpt", provider="openai-compatible", model="ok", base_url=f"{base}/v1",
                    input_price_per_mtok=2.0, output_price_per_mtok=8.0, capabilities=["tools"]),
        ModelConfig(name="claude", provider="anthropic", model="ok", base_url=base, input_price_per_mtok=3.0,
                    output_price_per_mtok=15.0),
        ModelConfig(name="tooly", provider="openai-compatible", model="tools", base_url=f"{base}/v1"),
        ModelConfig(name="broken", provider="openai-compatible", model="cut", base_url=f"{base}/v1"),
        ModelConfig(name="remote-embed", provider="openai-compatible", kind="embedding", model="e",
                    base_url=f"{base}/v1"),
        ModelConfig(name="all-minilm-l6-v2", provider="local", kind="embedding", model="hash"),
    ]  # fmt: skip
    settings = Settings(
        data_dir=tmp_path / "data",
        models=models,
        rag_apps=[],
        gateway=GatewaySettings(backoff_base_s=0.001, **gateway),
    )
    return Platform(settings, embedder=HashEmbedder())


@pytest.fixture
def served(tmp_path: Path, upstream: tuple[FakeUpstream, str]) -> Iterator[tuple[Platform, str]]:
    from llmops.server import create_app

    platform = _platform(tmp_path, upstream[1], allowed_base_urls=[f"{upstream[1]}/v1"])
    with serve_in_thread(create_app(platform)) as base:
        yield platform, base
    platform.close()


def test_openai_sdk_chat_tools_completions_and_embeddings(served: tuple[Platform, str]) -> None:
    _, base = served
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    ids = [m.id for m in client.models.list()]
    assert {"gpt", "claude", "tooly", "remote-embed", "all-minilm-l6-v2"} <= set(ids)
    for model in ("gpt", "claude"):
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "Hello world" and reply.usage is not None
        stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                stream=True, stream_options={"include_usage": True})  # fmt: skip
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello world"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    called = client.chat.completions.create(model="tooly", messages=[{"role": "user", "content": "weather?"}],
                                            tools=tools)  # type: ignore[arg-type]  # fmt: skip
    call = called.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert called.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"  # type: ignore[union-attr]
    streamed = list(client.chat.completions.create(model="tooly", messages=[{"role": "user", "content": "w?"}],
                                                   tools=tools, stream=True))  # type: ignore[arg-type]  # fmt: skip
    pieces = [
        c.choices[0].delta.tool_calls[0].function.arguments
        for c in streamed
        if c.choices and c.choices[0].delta.tool_calls
    ]  # type: ignore[union-attr,index]
    assert "".join(pieces) == '{"city": "Oslo"}'  # type: ignore[arg-type]
    legacy = client.completions.create(model="gpt", prompt="Say hello", max_tokens=5)
    assert legacy.choices[0].text == "Hello world"
    for model in ("all-minilm-l6-v2", "remote-embed"):
        vectors = client.embeddings.create(model=model, input=["one", "three"])
        assert len(vectors.data) == 2 and vectors.usage.prompt_tokens > 0
    assert len(client.embeddings.create(model="all-minilm-l6-v2", input="x").data[0].embedding) == 256
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")


def test_anthropic_sdk(served: tuple[Platform, str]) -> None:
    _, base = served
    client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
    for model in ("gpt", "claude"):
        message = client.messages.create(model=model, max_tokens=50, system="Be brief.",
                                         messages=[{"role": "user", "content": "hi"}])  # fmt: skip
        assert message.content[0].text == "Hello world" and message.stop_reason == "end_turn"  # type: ignore[union-attr]
        assert message.usage.output_tokens == 2
        with client.messages.stream(model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
            assert "".join(s.text_stream) == "Hello world"
            assert s.get_final_message().stop_reason == "end_turn"
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}]
    used = client.messages.create(model="tooly", max_tokens=50, tools=tools,  # type: ignore[arg-type]
                                  messages=[{"role": "user", "content": "weather?"}])  # fmt: skip
    block = used.content[0]
    assert used.stop_reason == "tool_use" and block.type == "tool_use" and block.input == {"city": "Oslo"}  # type: ignore[union-attr]
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "hi"}])


def test_langchain_chat_openai(served: tuple[Platform, str]) -> None:
    from langchain_openai import ChatOpenAI

    _, base = served
    chat = ChatOpenAI(base_url=f"{base}/v1", api_key="unused", model="gpt", max_retries=0)  # type: ignore[arg-type]
    assert chat.invoke("hi").content == "Hello world"
    assert "".join(str(chunk.content) for chunk in chat.stream("hi")) == "Hello world"


def test_a_stream_cut_mid_answer_ends_with_an_error_event(served: tuple[Platform, str]) -> None:
    platform, base = served
    body = {"model": "broken", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    # Output rails hold "Hello" back until its sentence ends: the cut comes before anything was sent, a plain error.
    response = httpx.post(f"{base}/v1/chat/completions", json=body)
    assert response.status_code == 502 and "failed after the answer started" in response.json()["error"]["message"]
    platform.guardrails.settings.policies["broken"] = "none"
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert "Hello" in lines[0] and '"error"' in lines[-1] and "failed after the answer started" in lines[-1]
    assert "data: [DONE]" not in lines
    with httpx.stream("POST", f"{base}/v1/messages", json={"model": "broken", "max_tokens": 5, "stream": True,
                      "messages": [{"role": "user", "content": "hi"}]}) as response:  # fmt: skip
        text = response.read().decode()
    assert "event: error" in text and "message_stop" not in text


def test_client_supplied_base_urls_need_the_allowlist(
    served: tuple[Platform, str], upstream: tuple[FakeUpstream, str]
) -> None:
    _, base = served
    for hostile in ("http://169.254.169.254/latest/meta-data", "http://127.0.0.1:6379", "http://10.0.0.1/v1"):
        response = httpx.post(f"{base}/v1/chat/completions", json={"model": "ok", "base_url": hostile,
                              "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert response.status_code == 400 and "allowlist" in response.json()["error"]["message"]
    allowed = httpx.post(f"{base}/v1/chat/completions", json={"model": "ok", "base_url": f"{upstream[1]}/v1",
                         "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert allowed.status_code == 200 and allowed.json()["choices"][0]["message"]["content"] == "Hello world"
    assert "authorization" not in {k.lower() for k in upstream[0].bodies["ok"]}  # no operator credentials sent


def test_api_keys_budgets_and_the_ledger(tmp_path: Path, upstream: tuple[FakeUpstream, str]) -> None:
    from llmops.server import create_app

    keys = [ApiKeyConfig(name="support-bot", sha256=_sha(KEY), team="support", app="helpdesk", tags=["cs"]),
            ApiKeyConfig(name="other", sha256=_sha(OTHER_KEY), team="research")]  # fmt: skip
    limits = [LimitConfig(name="support-daily", scope="team", value="support", budget_usd=0.0005,
                          soft_budget_usd=0.0001, period="day")]  # fmt: skip
    platform = _platform(tmp_path, upstream[1], api_keys=keys, require_api_key=True, limits=limits, cache=False)
    with serve_in_thread(create_app(platform)) as base:
        support = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="sk-wrong", max_retries=0).chat.completions.create(
                model="gpt", messages=[{"role": "user", "content": "hi"}])  # fmt: skip
        served_calls = 0
        with pytest.raises(openai.RateLimitError, match="budget 'support-daily'") as refused:
            for _ in range(50):
                support.chat.completions.create(
                    model="gpt", messages=[{"role": "user", "content": "hi"}], max_tokens=10
                )
                served_calls += 1
        assert 1 <= served_calls < 50
        assert refused.value.response.headers["retry-after"]
        research = openai.OpenAI(base_url=f"{base}/v1", api_key=OTHER_KEY, max_retries=0)
        research.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])  # not limited
    costs = platform.ledger.costs("team")
    assert costs["support"]["calls"] == served_calls + 1  # the refused call is in the ledger, at no cost
    assert costs["support"]["cost_usd"] == pytest.approx(served_calls * (11 * 2 + 2 * 8) / 1e6)
    assert costs["research"]["calls"] == 1
    calls = platform.ledger.calls()
    assert {c["key_name"] for c in calls} == {"support-bot", "other"} and calls[0]["app"] == "helpdesk"
    assert calls[0]["price_book"] == platform.gateway.prices.version
    platform.close()


@pytest.mark.parametrize("backend", ["in-process", "redis"])
def test_limits_hold_under_200_concurrent_requests(tmp_path: Path, backend: str) -> None:
    name = "burst-" + secrets.token_hex(4)  # fresh Redis keys for every run
    settings = Settings(
        data_dir=tmp_path / "d",
        rag_apps=[],
        models=[ModelConfig(name="m", provider="scripted", input_price_per_mtok=1.0)],
        gateway=GatewaySettings(
            cache=False,
            redis_url="redis://127.0.0.1:6379/0" if backend == "redis" else None,
            limits=[LimitConfig(name=name, scope="team", value="t", requests_per_minute=100)],
        ),
    )
    platform = Platform(settings, embedder=HashEmbedder(), providers={"m": ScriptedProvider("ok")})

    async def one(i: int) -> bool:
        request = ChatRequest(model="m", messages=[{"role": "user", "content": f"q{i}"}])
        try:
            await platform.gateway.complete(request, caller=Caller(team="t"))
            return True
        except LimitExceededError as exc:
            assert f"rate limit {name!r}: 100 requests per minute for team t" in str(exc)
            return False

    async def burst() -> list[bool]:
        try:
            return list(await asyncio.gather(*(one(i) for i in range(200))))
        finally:
            await platform.gateway.aclose()

    outcomes = asyncio.run(burst())
    assert sum(outcomes) == 100
    platform.close()


def test_money_budget_holds_under_concurrency_in_redis(tmp_path: Path) -> None:
    name = "money-" + secrets.token_hex(4)
    # Each call reserves its worst case (10 output tokens at $100/Mtok + input) and settles at its actual cost.
    settings = Settings(
        data_dir=tmp_path / "d",
        rag_apps=[],
        models=[ModelConfig(name="m", provider="scripted", input_price_per_mtok=0.0, output_price_per_mtok=100.0)],
        gateway=GatewaySettings(
            cache=False,
            redis_url="redis://127.0.0.1:6379/0",
            limits=[LimitConfig(name=name, scope="global", budget_usd=0.1)],
        ),
    )
    platform = Platform(settings, embedder=HashEmbedder(), providers={"m": ScriptedProvider("a b c d e f g h i j")})

    async def burst() -> int:
        async def one() -> bool:
            try:
                await platform.gateway.complete(ChatRequest(model="m", messages=[{"role": "user", "content": "x"}],
                                                            max_tokens=10))  # fmt: skip
                return True
            except LimitExceededError:
                return False

        try:
            return sum(await asyncio.gather(*(one() for _ in range(200))))
        finally:
            await platform.gateway.aclose()

    assert asyncio.run(burst()) == 100  # $0.1 budget / $0.001 per call
    assert platform.ledger.costs("served_by")["m"]["cost_usd"] == pytest.approx(0.1)
    platform.close()


def test_reprice_recomputes_past_costs_under_a_new_book(tmp_path: Path) -> None:
    from llmops.gateway import PriceBook

    settings = Settings(data_dir=tmp_path / "d", rag_apps=[], gateway=GatewaySettings(cache=False),
                        models=[ModelConfig(name="m", provider="scripted", input_price_per_mtok=1.0,
                                            output_price_per_mtok=2.0)])  # fmt: skip
    platform = Platform(settings, embedder=HashEmbedder(), providers={"m": ScriptedProvider("one two")})

    async def calls() -> None:
        for i in range(3):
            await platform.gateway.complete(ChatRequest(model="m", messages=[{"role": "user", "content": f"x {i}"}]))

    asyncio.run(calls())
    newer = PriceBook.from_models([ModelConfig(name="m", provider="scripted", input_price_per_mtok=10.0,
                                               output_price_per_mtok=20.0)])  # fmt: skip
    report = platform.ledger.reprice(newer)
    assert report.calls == 3 and report.price_book == newer.version != platform.gateway.prices.version
    assert report.new_total_usd == pytest.approx(report.old_total_usd * 10)
    assert all(c["cost_usd"] == pytest.approx(report.old_total_usd / 3) for c in platform.ledger.calls())  # unchanged
    platform.close()


def test_metrics_and_cli_reports(served: tuple[Platform, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from llmops.cli import app

    platform, base = served
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    for _ in range(2):
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    metrics = httpx.get(f"{base}/metrics").text
    assert 'llmops_gateway_calls_total{cache="none",model="gpt",served_by="gpt",status="ok"} 1.0' in metrics
    assert 'llmops_gateway_calls_total{cache="exact",model="gpt",served_by="gpt",status="ok"} 1.0' in metrics
    assert 'llmops_cost_usd_total{model="gpt"}' in metrics and "llmops_gateway_call_seconds_bucket" in metrics
    platform.journal.flush()
    monkeypatch.setenv("LLMOPS_DATA_DIR", str(platform.settings.data_dir))
    runner = CliRunner()
    costs = runner.invoke(app, ["gateway", "costs"])
    assert costs.exit_code == 0 and "gpt" in costs.output
    calls = runner.invoke(app, ["gateway", "calls"])
    assert calls.exit_code == 0 and "exact" in calls.output
    prices = runner.invoke(app, ["gateway", "prices"])
    assert prices.exit_code == 0 and "smollm2-135m-instruct" in prices.output and "local" in prices.output
    repriced = runner.invoke(app, ["gateway", "reprice"])
    assert repriced.exit_code == 0 and "re-priced 1 calls" in repriced.output


def test_a_whole_answer_that_fails_is_a_plain_error_with_its_ledger_row(served: tuple[Platform, str]) -> None:
    platform, base = served
    body = {"model": "broken", "messages": [{"role": "user", "content": "hi"}]}  # not streamed: one upstream response
    messages = []
    for policy in ("default", "none"):  # guarded (the rails read the stream), then unguarded (the whole-answer path)
        platform.guardrails.settings.policies["broken"] = policy
        response = httpx.post(f"{base}/v1/chat/completions", json=body)
        assert response.status_code == 502, response.text
        messages.append(response.json()["error"]["message"])
    assert all("every upstream failed for 'broken'" in m and "malformed response" in m for m in messages), messages
    platform.journal.flush()
    failed = [c for c in platform.ledger.calls() if c["model"] == "broken"]
    assert len(failed) == 2 and all(c["status"] == "error" and c["attempts"] == 3 for c in failed), failed
