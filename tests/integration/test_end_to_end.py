"""The whole loop on real components: the `llmops` CLI, the bundled embedding model and LLM, SQLite, a real server
process, and real clients (httpx, the official openai package)."""

from __future__ import annotations

import asyncio
import subprocess

import httpx
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider

from llmops import ModelConfig
from llmops.gateway import ChatRequest, Gateway, OpenAICompatibleProvider
from llmops.rag import ABSTAIN_ANSWER

from .conftest import LLMOPS, RunningServer, clean_env

PTO_QUESTION = "How many PTO days do new employees get?"


def test_ingest_reports_the_corrupt_pdf_and_ingests_the_rest(server: RunningServer) -> None:
    result = server.ingest_output
    assert result.returncode == 1  # something failed, and the command says so
    assert "corrupt.pdf" in result.stderr and "corrupt or unreadable PDF" in result.stderr
    assert "added     │ 6" in result.stdout
    health = httpx.get(f"{server.base_url}/healthz").json()
    assert health["knowledge"]["documents"] == 6


def test_rerunning_ingest_does_no_work(server: RunningServer) -> None:
    (server.corpus / "corrupt.pdf").unlink()
    result = subprocess.run(
        [LLMOPS, "ingest", str(server.corpus)], env=clean_env(server.data_dir), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "unchanged │ 6" in result.stdout and "0 chunks written" in result.stdout


def test_ask_answers_from_the_handbook_with_citations(server: RunningServer) -> None:
    response = httpx.post(f"{server.base_url}/api/ask", json={"question": PTO_QUESTION}, timeout=60)
    assert response.status_code == 200
    body = response.json()
    assert "15" in body["answer"]
    assert body["request_id"].startswith("req_")
    assert body["citations"] and body["citations"][0]["source"].endswith(["samples", "handbook", "pto.md"][-1])
    assert body["citations"][0]["title"] == "Time Off Policy"
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0 and body["cost_usd"] == 0.0

    trace = httpx.get(f"{server.base_url}/api/traces/{body['request_id']}").json()
    assert "spans" in trace, trace
    spans = {s["name"]: s for s in trace["spans"]}
    assert set(spans) == {
        "rag handbook-rag",
        "guardrails.input",
        "retrieve",
        "guardrails.context",
        "pack_context",
        "render_prompt",
        "chat smollm2-135m-instruct",
        "guardrails.output",
    }
    # The default policy's decisions, one event per rail, and the grounding score with the trace.
    rails = {e["attributes"]["llmops.guardrail.rail"] for e in spans["guardrails.output"]["events"]}
    assert rails == {"pii_leakage", "toxicity", "system_prompt_leakage", "grounding"}
    assert {e["attributes"]["llmops.guardrail.rail"] for e in spans["guardrails.input"]["events"]} == {
        "size",
        "injection",
    }
    score = spans["guardrails.output"]["attributes"]["llmops.guardrails.grounding_score"]
    assert 0.0 <= score <= 1.0 and body["grounding_score"] == score
    assert trace["attributes"]["llmops.guardrails.grounding_score"] == score
    chat = spans["chat smollm2-135m-instruct"]["attributes"]
    assert chat["gen_ai.usage.input_tokens"] == body["usage"]["input_tokens"]
    assert chat["gen_ai.usage.output_tokens"] == body["usage"]["output_tokens"]
    assert 0 < chat["llmops.ttft_ms"] < spans["chat smollm2-135m-instruct"]["duration_ms"]
    assert chat["llmops.tokens_per_s"] > 1
    assert all(s["duration_ms"] > 0 for s in trace["spans"])


def test_unanswerable_questions_get_i_dont_know(server: RunningServer) -> None:
    body = httpx.post(f"{server.base_url}/api/ask", json={"question": "Who won the 2022 football World Cup?"}).json()
    assert body["answer"] == ABSTAIN_ANSWER and body["citations"] == []


def test_openai_client_against_the_server(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", timeout=60)
    models = [m.id for m in client.models.list()]
    assert models == ["handbook-rag", "smollm2-135m-instruct", "all-minilm-l6-v2"]
    messages = [{"role": "user", "content": PTO_QUESTION}]
    completion = client.chat.completions.create(model=models[0], messages=messages)  # type: ignore[arg-type]
    text = completion.choices[0].message.content
    assert text and "15" in text
    assert (completion.model_extra or {})["citations"][0]["source"].endswith("pto.md")
    stream = client.chat.completions.create(
        model=models[0],
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed.strip() and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    raw = client.chat.completions.create(
        model=models[1], messages=[{"role": "user", "content": "Say hello."}], max_tokens=12
    )
    assert raw.choices[0].message.content and raw.usage is not None and raw.usage.completion_tokens <= 12


def test_the_openai_compatible_provider_reaches_a_real_server(server: RunningServer) -> None:
    # llmops itself is an OpenAI-compatible server: the provider talks to it over HTTP like to vLLM or Ollama.
    config = ModelConfig(name="remote", provider="openai-compatible", model="smollm2-135m-instruct")
    provider = OpenAICompatibleProvider(f"{server.base_url}/v1")
    gateway = Gateway([config], {"remote": provider}, TracerProvider().get_tracer("t"))

    async def run() -> str:
        try:
            request = ChatRequest(model="remote", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8)
            result = await gateway.complete(request)
            assert result.usage.output_tokens > 0 and not result.usage.estimated
            return result.text
        finally:
            await gateway.aclose()

    assert asyncio.run(run()).strip()


def test_oversized_and_malformed_requests(server: RunningServer) -> None:
    too_big = httpx.post(f"{server.base_url}/api/ask", content=b"{" + b" " * 2_000_000 + b"}")
    assert too_big.status_code == 413
    malformed = httpx.post(f"{server.base_url}/api/ask", json={"q": "x"})
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["loc"] == ["body", "question"]


def test_traces_command_shows_the_spans(server: RunningServer) -> None:
    body = httpx.post(f"{server.base_url}/api/ask", json={"question": PTO_QUESTION}, timeout=60).json()
    result = subprocess.run(
        [LLMOPS, "traces", body["request_id"]], env=clean_env(server.data_dir), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for name in ("rag handbook-rag", "retrieve", "render_prompt", "chat smollm2-135m-instruct", "ttft_ms"):
        assert name in result.stdout
    listing = subprocess.run([LLMOPS, "traces"], env=clean_env(server.data_dir), capture_output=True, text=True)
    assert body["request_id"] in listing.stdout


@pytest.mark.parametrize("command", [["ingest", "/no/such/folder"], ["traces", "req_nope"]])
def test_cli_errors_are_clear(server: RunningServer, command: list[str]) -> None:
    result = subprocess.run([LLMOPS, *command], env=clean_env(server.data_dir), capture_output=True, text=True)
    assert result.returncode != 0
    assert "no such file or folder: /no/such/folder" in result.stderr or "no trace for" in result.stderr
