"""Replaying a request: what to pin, how to call the model past the response cache, and how two answers differ."""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

from llmops._settings import RagConfig
from llmops.gateway import ChatRequest, Gateway
from llmops.rag import RagAnswer

__all__ = ["NotReplayableError"]


class NotReplayableError(ValueError):
    """The request cannot be re-run; the message says what is missing."""


def _replay_plan(
    original: dict[str, Any], apps: Mapping[str, RagConfig], gateway: Gateway
) -> tuple[RagConfig, str, dict[str, Any]]:
    """The app's configuration, the question and the settings pinned to the original's, or why it cannot be re-run."""
    request_id = original["request_id"]
    if original["kind"] != "rag":
        raise NotReplayableError(
            f"{request_id} is not replayable: it is a gateway call ({original['name'] or original['kind']}) and its "
            "trace does not hold the messages it sent"
        )
    if original["spans_sampled_out"]:
        raise NotReplayableError(
            f"{request_id} is not replayable: its trace was sampled out, so the question it asked was not kept"
        )
    question = original["question"]
    if not isinstance(question, str):
        stages = original["guardrails"]["stages"]
        blocker = next((s["blocked_by"] for s in stages if s["stage"] == "input" and s["blocked_by"]), None)
        why = (
            f"the input rail {blocker!r} blocked it before the question was recorded"
            if blocker
            else "content recording was off (evaluation.trace_content) when it was served: its trace holds no question"
        )
        raise NotReplayableError(f"{request_id} is not replayable: {why}")
    app = original["app"]
    config = apps.get(app or "")
    if config is None:
        raise NotReplayableError(f"{request_id} is not replayable: RAG app {app!r} is not configured any more")
    pins: dict[str, Any] = {}
    if original["prompt"] is not None:
        pins["prompt_version"] = original["prompt"]["version"]
    retrieval = original["retrieval"]
    if retrieval["snapshot"] is not None:
        pins["index_snapshot"] = retrieval["snapshot"]
    for key, field in (("top_k", "top_k"), ("min_similarity", "min_similarity"), ("mode", "retrieval")):
        if retrieval[key] is not None:
            pins[field] = retrieval[key]
    model = original["model"]
    if model["alias"]:
        if model["alias"] not in gateway.model_names():
            raise NotReplayableError(f"{request_id} is not replayable: model {model['alias']!r} is not served any more")
        pins["model"] = model["alias"]
    params = model["parameters"]
    if params.get("temperature") is not None:
        pins["temperature"] = float(params["temperature"])
    if params.get("max_tokens") is not None:
        pins["max_answer_tokens"] = int(params["max_tokens"])
    policy = original["guardrails"]["policy"]
    if policy:
        pins["guardrail_policy"] = policy  # "name@version", or "none" when the app ran unguarded
    return config, question, pins


def _side(explanation: dict[str, Any], answer_text: str | None, chunk_ids: list[str]) -> dict[str, Any]:
    model = explanation["model"]
    return {
        "request_id": explanation["request_id"],
        "answer": answer_text,
        "chunk_ids": chunk_ids,
        "cited": explanation["retrieval"]["cited"],
        "prompt_version": explanation["prompt"]["version"] if explanation["prompt"] else None,
        "index_snapshot": explanation["retrieval"]["snapshot"],
        "model": model["alias"],
        "served_by": model["served_by"],
        "response_model": model["response_model"],
        "parameters": model["parameters"],
        "guardrail_policy": explanation["guardrails"]["policy"],
        "blocked_by": explanation["blocked_by"],
        "abstained": explanation["abstained"],
        "usage": explanation["usage"],
    }


def _compare(
    original: dict[str, Any], again: dict[str, Any], answer: RagAnswer, text: str, pins: dict[str, Any]
) -> dict[str, Any]:
    before = _side(original, original["answer"], [c["chunk_id"] for c in original["retrieval"]["chunks"]])
    if again["spans_sampled_out"]:  # the replay's own trace was sampled out: what the answer object says
        ids = [c.chunk_id for c in answer.retrieved] or [c.chunk_id for c in answer.citations]
    else:
        ids = [c["chunk_id"] for c in again["retrieval"]["chunks"]]
    after = _side(again, text if text or again["answer"] is None else again["answer"], ids)
    after["prompt_version"] = answer.prompt_version if answer.prompt_version is not None else after["prompt_version"]
    after["blocked_by"] = answer.guardrail.rail if answer.guardrail else after["blocked_by"]
    old, new = before["answer"] or "", after["answer"] or ""
    compared = ("prompt_version", "index_snapshot", "model", "guardrail_policy")
    return {
        "question": original["question"],
        "pinned": pins,
        "cache": "bypassed",
        "original": before,
        "replay": after,
        "diff": {
            "answer": list(difflib.unified_diff(old.splitlines(), new.splitlines(), "original", "replay", lineterm="")),
            "same_answer": old == new,
            "chunks_added": [c for c in after["chunk_ids"] if c not in before["chunk_ids"]],
            "chunks_removed": [c for c in before["chunk_ids"] if c not in after["chunk_ids"]],
            "versions_equal": all(before[k] == after[k] for k in compared),
            "changed": [k for k in (*compared, "response_model") if before[k] != after[k]],
        },
    }


class _Uncached:
    """The gateway with its response cache bypassed: a replay asks the model again instead of reading back the very
    answer it is checking. Everything else is the gateway's own."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gateway, name)

    def stream(self, request: ChatRequest, **kwargs: Any) -> AsyncIterator[Any]:
        return self._gateway.stream(replace(request, cache=False), **kwargs)
