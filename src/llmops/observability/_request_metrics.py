"""One metrics row per request, derived from its finished spans: what dashboards, aggregates and triggers read.

Derived in one place from the spans every stage already emits (as the Prometheus metrics are), so a stage that
records an attribute on its span is measured without being told about metrics.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai

from llmops.observability._journalled import ATTRIBUTES, END, NAME, START

__all__ = ["request_metrics_row"]

_PII_RAILS = frozenset({"pii", "pii_leakage", "secrets"})
_OPERATION = genai.GEN_AI_OPERATION_NAME


def request_metrics_row(
    request_id: str,
    trace_id: str,
    spans: list[list[Any]],
    *,
    status: str,
    sampled: bool,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """The ``request_metrics`` row of one request, from its spans as the journal carries them (``_journalled.py``,
    the root last); ``created_at`` is the root's start when the caller has it already."""
    root = spans[-1]
    a = root[ATTRIBUTES]
    get = a.get
    model = None
    ttft_ms = tokens_per_s = retrieval_ms = None
    input_tokens = output_tokens = 0
    cost = 0.0
    top_score = None
    user, team, app = get("llmops.caller.user"), get("llmops.caller.team"), get("llmops.rag.app")
    rails: list[str] = []
    pii = 0
    grounding = get("llmops.guardrails.grounding_score")
    root_unsupported = get("llmops.guardrails.unsupported_claims")
    unsupported = root_unsupported if isinstance(root_unsupported, int) else None
    for span in spans:
        attributes = span[ATTRIBUTES]
        name = span[NAME]  # its stage is the first word: "retrieve", "guardrails.input", "chat <model>"
        if attributes.get(_OPERATION) == "chat":
            model = attributes.get("llmops.served_by") or attributes.get(genai.GEN_AI_REQUEST_MODEL)
            ttft_ms = _float(attributes.get("llmops.ttft_ms"), ttft_ms)
            tokens_per_s = _float(attributes.get("llmops.tokens_per_s"), tokens_per_s)
            input_tokens += _int(attributes.get(genai.GEN_AI_USAGE_INPUT_TOKENS))
            output_tokens += _int(attributes.get(genai.GEN_AI_USAGE_OUTPUT_TOKENS))
            cost += _float(attributes.get("llmops.cost_usd"), 0.0) or 0.0
            user = user or attributes.get("llmops.caller.user")
            team = team or attributes.get("llmops.caller.team")
            app = app or attributes.get("llmops.caller.app")
        elif name == "retrieve" or name.startswith("retrieve "):
            retrieval_ms = (span[END] - span[START]) / 1e6
            scores = attributes.get("llmops.retrieval.scores")
            # Attribute values are primitives or sequences of them (tuples once cleaned, lists as given or read
            # back from the journal).
            if isinstance(scores, tuple | list) and scores and isinstance(scores[0], int | float):
                top_score = float(scores[0])
        elif name.startswith("guardrails."):
            triggered = attributes.get("llmops.guardrails.triggered")
            if triggered:
                rails.extend(str(r) for r in triggered)
                pii += sum(1 for r in triggered if r in _PII_RAILS)
            claims = attributes.get("llmops.guardrails.grounding_claims")
            if isinstance(claims, str):
                with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                    unsupported = sum(1 for c in orjson.loads(claims) if not c.get("supported"))
            if grounding is None:
                grounding = attributes.get("llmops.guardrails.grounding_score")
    start = root[START]
    return {
        "request_id": request_id,
        "trace_id": trace_id,
        "created_at": created_at or datetime.fromtimestamp(start / 1e9, UTC),
        "kind": root[NAME].split(" ", 1)[0][:40],
        "app": app,
        "prompt_name": get("llmops.prompt.name"),
        "prompt_version": get("llmops.prompt.version"),
        "model": model,
        "index_snapshot": _snapshot(get("llmops.index.snapshot")),
        "user": user,
        "team": team,
        "status": status,
        "sampled": sampled,
        "blocked": bool(get("llmops.guardrails.blocked_by")),
        "abstained": bool(get("llmops.rag.abstained")),
        "duration_ms": (root[END] - start) / 1e6,
        "ttft_ms": ttft_ms,
        "retrieval_ms": retrieval_ms,
        "tokens_per_s": tokens_per_s,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": cost,
        "grounding_score": float(grounding) if isinstance(grounding, (int, float)) else None,
        "unsupported_claims": unsupported,
        "top_score": top_score,
        "guardrail_triggers": len(rails),
        "pii_incidents": pii,
        "rails": sorted(set(rails)) if rails else [],
    }


def _float(value: object, default: float | None) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _int(value: object) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _snapshot(value: object) -> int | None:
    return int(value) if isinstance(value, int) and value >= 0 else None
