"""The HTTP surface on fakes, through real HTTP clients (httpx and the official openai package) over loopback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from llmops import Platform
from llmops.server import create_app

from ..conftest import SAMPLES
from ..helpers import serve_in_thread

# The hash embedder only matches shared words, so the question repeats the handbook's wording.
QUESTION = "How many paid time off PTO days do new employees get?"


@pytest.fixture
def base_url(platform: Platform, tmp_path: Path) -> Iterator[str]:
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLES, corpus)
    platform.knowledge.ingest(corpus)
    with serve_in_thread(create_app(platform)) as base:
        yield base


def test_ask_returns_answer_citations_and_request_id(base_url: str) -> None:
    response = httpx.post(f"{base_url}/api/ask", json={"question": QUESTION})
    assert response.status_code == 200
    body = response.json()
    assert body["answer"] == "New employees get 15 days of PTO [1]."
    assert body["citations"][0]["source"].endswith("pto.md")
    assert response.headers["x-request-id"] == body["request_id"]


def test_trace_of_a_request_over_http(base_url: str) -> None:
    body = httpx.post(f"{base_url}/api/ask", json={"question": QUESTION}).json()
    trace = httpx.get(f"{base_url}/api/traces/{body['request_id']}").json()
    assert trace["request_id"] == body["request_id"]
    assert [s["name"] for s in trace["spans"]][:3] == ["rag handbook-rag", "guardrails.input", "retrieve"]
    recent = httpx.get(f"{base_url}/api/traces?limit=5").json()
    assert recent[0]["request_id"] == body["request_id"]
    assert httpx.get(f"{base_url}/api/traces/req_missing").status_code == 404


def test_oversized_requests_get_413(base_url: str) -> None:
    big = json.dumps({"question": "x" * 1_100_000})
    response = httpx.post(f"{base_url}/api/ask", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "limit is 1000000 bytes" in response.json()["error"]["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit must still hold
        for _ in range(12):
            yield b"x" * 100_000

    response = httpx.post(f"{base_url}/v1/chat/completions", content=chunked())
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"questio": "typo"}', ["body", "question"]),
        (b'{"question": ""}', ["body", "question"]),
        (b'{"question": 12', ["body", 15]),  # a syntax error: the location is the byte offset
    ],
)
def test_malformed_requests_get_422_naming_the_field(base_url: str, payload: bytes, field: list[object]) -> None:
    response = httpx.post(f"{base_url}/api/ask", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == field


def test_unknown_routes_and_apps(base_url: str) -> None:
    assert httpx.get(f"{base_url}/no/such/route").status_code == 404
    response = httpx.post(f"{base_url}/api/ask", json={"question": "hi", "app": "nope"})
    assert response.status_code == 404 and "no RAG app 'nope'" in response.json()["detail"]


def test_health_metrics_and_page(base_url: str) -> None:
    httpx.post(f"{base_url}/api/ask", json={"question": QUESTION})
    health = httpx.get(f"{base_url}/healthz").json()
    assert health["status"] == "ok" and health["knowledge"]["documents"] == 6
    metrics = httpx.get(f"{base_url}/metrics").text
    assert 'llmops_requests_total{name="rag",status="ok"} 1.0' in metrics
    assert 'llmops_tokens_total{direction="output",model="smollm2-135m-instruct"}' in metrics
    assert "llmops_stage_seconds_bucket" in metrics
    page = httpx.get(f"{base_url}/")
    assert page.status_code == 200 and "/api/ask" in page.text


def test_openai_client_lists_models_and_completes_both_ways(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    models = [m.id for m in client.models.list()]
    assert models == ["handbook-rag", "smollm2-135m-instruct", "all-minilm-l6-v2"]
    for model in models[:2]:
        message = [{"role": "user", "content": QUESTION}]
        completion = client.chat.completions.create(model=model, messages=message)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "New employees get 15 days of PTO [1]."
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None and completion.usage.completion_tokens == 8
        stream = client.chat.completions.create(
            model=model,
            messages=message,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "New employees get 15 days of PTO [1]."
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    rag = client.chat.completions.create(model="handbook-rag", messages=message)  # type: ignore[arg-type]
    extra = rag.model_extra or {}
    assert extra["citations"][0]["source"].endswith("pto.md") and extra["request_id"].startswith("req_")


def test_openai_errors_use_the_openai_shape(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="unknown model 'gpt-9'"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="handbook-rag", messages=[])
    with pytest.raises(openai.BadRequestError, match="needs a user message"):
        client.chat.completions.create(model="handbook-rag", messages=[{"role": "system", "content": "x"}])


def test_a_stream_that_fails_ends_with_an_error_event_not_done(platform: Platform, base_url: str) -> None:
    from llmops.testing import ScriptedProvider

    platform.gateway._providers["smollm2-135m-instruct"] = ScriptedProvider("One. Two. Three. Four.", fail_after=2)
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
        events = [line for line in response.iter_lines() if line.startswith("data:")]
    assert '"error"' in events[-1] and "mid-stream" in events[-1]
    assert "data: [DONE]" not in events
    response = httpx.post(f"{base_url}/v1/chat/completions", json={**body, "stream": False})
    assert response.status_code == 502 and "mid-stream" in response.json()["error"]["message"]
