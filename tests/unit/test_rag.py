from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llmops import Platform
from llmops.gateway import TextDelta
from llmops.guardrails import Finding, GuardrailPolicy
from llmops.rag import ABSTAIN_ANSWER, RagAnswer
from llmops.testing import ScriptedProvider

QUESTION = "How many paid time off PTO days do new employees get?"


def test_answer_with_citations_that_map_to_chunks(ingested: Platform, scripted: ScriptedProvider) -> None:
    answer = asyncio.run(ingested.rag().ask(QUESTION))
    assert answer.answer == "New employees get 15 days of PTO [1]."
    assert answer.request_id.startswith("req_") and len(answer.trace_id) == 32
    assert answer.citations and answer.citations[0].cited and not answer.abstained
    first = answer.citations[0]
    assert first.number == 1 and first.source.endswith("pto.md") and first.title == "Time Off Policy"
    assert [c.number for c in answer.citations] == list(range(1, len(answer.citations) + 1))
    assert not any(c.cited for c in answer.citations[1:])
    # The model saw the numbered sources and the question.
    (request,) = scripted.requests
    system, user = request.messages
    assert "[1] Time Off Policy > Paid time off (PTO)" in system["content"] and user["content"] == QUESTION
    assert answer.prompt_name == "rag-default" and answer.prompt_version == 1 and answer.index_snapshot == 1


def test_abstains_without_calling_the_model_when_nothing_is_relevant(
    ingested: Platform, scripted: ScriptedProvider
) -> None:
    answer = asyncio.run(ingested.rag().ask("zyzzyva quokka xylophone"))
    assert answer.answer == ABSTAIN_ANSWER and answer.abstained and answer.citations == []
    assert scripted.requests == []
    trace = ingested.traces.get(answer.request_id)
    assert trace["attributes"]["llmops.rag.abstained"] is True


def test_context_is_cut_to_the_token_budget(ingested: Platform, scripted: ScriptedProvider) -> None:
    pipeline = ingested.rag()
    pipeline.config = pipeline.config.model_copy(update={"context_token_budget": 32, "top_k": 5})
    answer = asyncio.run(pipeline.ask(QUESTION))
    assert len(answer.citations) == 1  # the most similar chunk is always kept, the rest did not fit
    trace = ingested.traces.get(answer.request_id)
    pack = next(s for s in trace["spans"] if s["name"] == "pack_context")
    assert pack["attributes"]["llmops.context.dropped"] >= 1


def test_the_trace_has_one_span_per_stage_and_is_stored_before_the_answer(ingested: Platform) -> None:
    answer = asyncio.run(ingested.rag().ask(QUESTION))
    trace = ingested.traces.get(answer.request_id)
    names = [s["name"] for s in trace["spans"]]
    assert names == [
        "rag handbook-rag",
        "guardrails.input",
        "retrieve",
        "guardrails.context",
        "pack_context",
        "render_prompt",
        "chat smollm2-135m-instruct",
        "guardrails.output",
    ]
    root, *children = trace["spans"]
    assert all(s["parent_span_id"] == root["span_id"] for s in children)
    chat = trace["spans"][6]["attributes"]
    assert chat["gen_ai.usage.output_tokens"] == 8 and "llmops.ttft_ms" in chat and "llmops.tokens_per_s" in chat
    retrieve = trace["spans"][2]["attributes"]
    assert retrieve["gen_ai.operation.name"] == "retrieval" and retrieve["llmops.retrieval.hits"] >= 1
    assert root["attributes"]["llmops.prompt.version"] == 1
    assert all(s["duration_ms"] >= 0 for s in trace["spans"])
    assert ingested.traces.get(answer.trace_id)["request_id"] == answer.request_id


def test_streaming_yields_text_then_the_answer(ingested: Platform) -> None:
    async def collect() -> list[object]:
        return [e async for e in ingested.rag().stream(QUESTION)]

    events = asyncio.run(collect())
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "New employees get 15 days of PTO [1]."
    assert isinstance(events[-1], RagAnswer)


def test_an_answer_cut_by_max_tokens_keeps_complete_sentences(ingested: Platform, tmp_path: Path) -> None:
    scripted = ScriptedProvider("Fifteen days [1]. New hires accrue monthly and then they")
    ingested.gateway._providers["smollm2-135m-instruct"] = scripted
    pipeline = ingested.rag()
    pipeline.config = pipeline.config.model_copy(update={"max_answer_tokens": 8})
    answer = asyncio.run(pipeline.ask(QUESTION))
    assert answer.answer == "Fifteen days [1]."


class _BlockEverything:
    name = "block-everything"

    def detect(self, text: str) -> list[Finding]:
        return [Finding("TEST", 0, len(text), 1.0, self.name, "test rail")]


def test_an_input_rail_can_block_before_retrieval(ingested: Platform, scripted: ScriptedProvider) -> None:
    ingested.guardrails.register_detector(_BlockEverything())
    policy = {"name": "default", "input": [{"rail": "custom", "detector": "block-everything", "message": "No."}]}
    version = ingested.guardrail_policies.create(GuardrailPolicy.parse(policy), author="test")
    ingested.guardrail_policies.move_label("default", "production", version.version, by="test")
    answer = asyncio.run(ingested.rag().ask(QUESTION))
    assert answer.blocked and answer.answer == "No." and scripted.requests == []
    assert answer.guardrail is not None and answer.guardrail.rail == "custom"
    trace = ingested.traces.get(answer.request_id)
    assert [s["name"] for s in trace["spans"]] == ["rag handbook-rag", "guardrails.input"]
    assert trace["attributes"]["llmops.guardrails.blocked_by"] == "custom"
    (event,) = trace["spans"][1]["events"]
    assert event["name"] == "guardrail.decision"
    assert event["attributes"]["llmops.guardrail.action"] == "block"
    assert event["attributes"]["llmops.guardrail.policy"] == "default@2"


def test_a_model_failure_is_traced_as_an_error(ingested: Platform) -> None:
    ingested.gateway._providers["smollm2-135m-instruct"] = ScriptedProvider("a b c", fail_after=1)
    with pytest.raises(Exception, match="mid-stream"):
        asyncio.run(ingested.rag().ask(QUESTION))
    (latest,) = ingested.traces.recent(1)
    assert latest["status"] == "error"


def test_unknown_app_is_a_clear_error(platform: Platform) -> None:
    with pytest.raises(LookupError, match="no RAG app 'nope'; configured: handbook-rag"):
        platform.rag("nope")
