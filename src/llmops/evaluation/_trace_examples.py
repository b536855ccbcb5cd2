"""Examples from production traces: the question a user asked (as the model saw it, after the input rails'
redaction), with the production answer and its grounding score kept as metadata for the reviewer. The production
answer is not a reference: a reviewer writes ``expected`` (or facts) before the example earns its place."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from llmops.evaluation._types import Example

__all__ = ["examples_from_traces"]


def examples_from_traces(traces: Iterable[dict[str, Any]]) -> list[Example]:
    """One example per trace (as `TraceReader.select_answers` returns them); the same question asked twice is one."""
    examples: dict[str, Example] = {}
    for trace in traces:
        attributes = trace["attributes"]
        question = str(attributes.get("llmops.rag.question", "")).strip()
        if not question or question.lower() in examples:
            continue
        created = trace.get("created_at")
        examples[question.lower()] = Example(
            id="tr_" + str(trace["request_id"]).removeprefix("req_"),
            input=question,
            tags=("from-traces",),
            metadata={
                "request_id": trace["request_id"],
                "trace_id": trace["trace_id"],
                "app": attributes.get("llmops.rag.app"),
                "production_answer": attributes.get("llmops.rag.answer"),
                "grounding_score": attributes.get("llmops.guardrails.grounding_score"),
                "created_at": created.isoformat() if isinstance(created, datetime) else created,
            },
        )
    return list(examples.values())
