"""Prometheus metrics from finished spans: the series each gateway call, RAG answer and guardrail decision updates
follow its labels, and a series exists once something was observed in it (the processor remembers series per label
combination; that must not change what is exposed)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from llmops.observability import MetricsSpanProcessor, PlatformMetrics
from llmops.observability._light import LightTracer, LightTracerProvider


class Clock:
    """Span times set by the test, so that durations (and histogram sums) are exact."""

    def __init__(self) -> None:
        self.now = 1_000_000_000

    def span(self, tracer: LightTracer, name: str, attributes: dict[str, Any], *, parent: Any = None,
             ms: float = 5.0, error: str | None = None, events: list[dict[str, Any]] | None = None) -> Any:  # fmt: skip
        ctx = trace.set_span_in_context(parent) if parent is not None else None
        span = tracer.start_span(name, context=ctx, start_time=self.now)
        span.set_attributes(attributes)
        for event in events or []:
            span.add_event("guardrail.decision", event)
        if error:
            span.set_status(StatusCode.ERROR, error)
        self.now += int(ms * 1e6)
        span.end(end_time=self.now)
        return span


def _chat(model: str, **attributes: Any) -> dict[str, Any]:
    return {"gen_ai.operation.name": "chat", "gen_ai.request.model": model, **attributes}


def _decision(rail: str, action: str, stage: str, latency_ms: float | None) -> dict[str, Any]:
    return {"llmops.guardrail.rail": rail, "llmops.guardrail.action": action, "llmops.guardrail.stage": stage,
            "llmops.guardrail.policy": "p@1", "llmops.guardrail.latency_ms": latency_ms}  # fmt: skip


@pytest.fixture
def exposed() -> str:
    provider, metrics, clock = LightTracerProvider(), PlatformMetrics(), Clock()
    provider.add_span_processor(MetricsSpanProcessor(metrics))
    tracer = provider.get_tracer("test")
    clock.span(tracer, "chat a", _chat("a", **{"gen_ai.usage.input_tokens": 10, "llmops.cost_usd": 0.5,
                                                "gen_ai.response.time_to_first_chunk": 0.1}), ms=20)  # fmt: skip
    clock.span(tracer, "chat a", _chat("a", **{"gen_ai.usage.input_tokens": 1}), ms=2000)  # same labels: same series
    clock.span(tracer, "chat a", _chat("a", **{"llmops.served_by": "b", "llmops.cache.hit": "exact"}))
    clock.span(tracer, "chat a", _chat("a", **{"llmops.retries": 2, "llmops.fallbacks": ["x", "y"]}), error="down")
    clock.span(tracer, "chat a", _chat("a", **{"llmops.queue_ms": 30.0, "llmops.tokens_per_s": 40.0}))
    clock.span(tracer, "chat c", _chat("c", **{"llmops.served_by": "b", "gen_ai.response.time_to_first_chunk": 0.3,
                                                "llmops.tokens_per_s": 0}))  # fmt: skip
    for outcome in ("answered", "blocked", "abstained", "error", "unsupported", "answered"):
        root = tracer.start_span("rag app1", start_time=clock.now)
        clock.span(tracer, "guardrails.input", {}, parent=root, events=[
            _decision("pii", "redact", "input", 1.5), _decision("size", "pass", "input", 0.5),
            {"llmops.guardrail.rail": "partial"}])  # fmt: skip
        clock.span(tracer, "guardrails.output", {}, parent=root, events=[_decision("tox", "skipped", "output", None)])
        attributes: dict[str, Any] = {"llmops.rag.app": "app1", "llmops.index.snapshot": 4, "llmops.cost_usd": 0.25,
                                      "llmops.prompt.version": 3 if outcome == "abstained" else 2}  # fmt: skip
        if outcome == "blocked":
            attributes["llmops.guardrails.blocked_by"] = "tox"
        if outcome == "abstained":
            attributes["llmops.rag.abstained"] = True
        if outcome in ("answered", "unsupported"):
            attributes["llmops.guardrails.grounding_score"] = 0.75
        if outcome == "unsupported":
            attributes["llmops.guardrails.unsupported_claims"] = 2
        root.set_attributes(attributes)
        if outcome == "error":
            root.set_status(StatusCode.ERROR, "boom")
        clock.now += 50_000_000
        root.end(end_time=clock.now)
    return metrics.render().decode()


EXPOSED = """
llmops_requests_total{name="chat",status="ok"} 5.0
llmops_requests_total{name="chat",status="error"} 1.0
llmops_requests_total{name="rag",status="ok"} 5.0
llmops_requests_total{name="rag",status="error"} 1.0
llmops_tokens_total{direction="input",model="a"} 11.0
llmops_tokens_total{direction="input",model="b"} 0.0
llmops_cost_usd_total{model="a"} 0.5
llmops_time_to_first_token_seconds_count{model="a"} 1.0
llmops_time_to_first_token_seconds_count{model="b"} 1.0
llmops_gateway_calls_total{cache="none",model="a",served_by="a",status="ok"} 3.0
llmops_gateway_calls_total{cache="exact",model="a",served_by="b",status="ok"} 1.0
llmops_gateway_calls_total{cache="none",model="a",served_by="a",status="error"} 1.0
llmops_gateway_calls_total{cache="none",model="c",served_by="b",status="ok"} 1.0
llmops_gateway_call_seconds_count{model="a"} 5.0
llmops_gateway_call_seconds_bucket{le="2.5",model="a"} 5.0
llmops_gateway_call_seconds_bucket{le="1",model="a"} 4.0
llmops_gateway_call_seconds_bucket{le="0.005",model="a"} 3.0
llmops_gateway_queue_seconds_sum{model="a"} 0.03
llmops_gateway_tokens_per_second_count{model="a"} 1.0
llmops_gateway_retries_total{model="a"} 2.0
llmops_gateway_fallbacks_total{model="a"} 2.0
llmops_guardrail_checks_total{action="redact",policy="p@1",rail="pii",stage="input"} 6.0
llmops_guardrail_checks_total{action="None",policy="None",rail="partial",stage="None"} 6.0
llmops_guardrail_checks_total{action="skipped",policy="p@1",rail="tox",stage="output"} 6.0
llmops_guardrail_triggers_total{action="redact",rail="pii",stage="input"} 6.0
llmops_guardrail_seconds_sum{rail="pii"} 0.009
llmops_guardrail_seconds_count{rail="tox"} 6.0
llmops_stage_seconds_count{stage="guardrails.input"} 6.0
llmops_rag_answers_total{app="app1",outcome="answered",prompt_version="2",snapshot="4"} 3.0
llmops_rag_answers_total{app="app1",outcome="blocked",prompt_version="2",snapshot="4"} 1.0
llmops_rag_answers_total{app="app1",outcome="abstained",prompt_version="3",snapshot="4"} 1.0
llmops_rag_answers_total{app="app1",outcome="error",prompt_version="2",snapshot="4"} 1.0
llmops_rag_seconds_count{app="app1",prompt_version="2"} 5.0
llmops_rag_grounding_score_count{app="app1",prompt_version="2"} 3.0
llmops_rag_unsupported_answers_total{app="app1",prompt_version="2"} 1.0
llmops_rag_cost_usd_total{app="app1",prompt_version="2"} 1.25
llmops_rag_cost_usd_total{app="app1",prompt_version="3"} 0.25
"""

# Series nothing was observed in: a pass or a skip is no trigger, a zero decode rate and a missing queue time are
# not observed, an answer without a grounding score has none, nor unsupported claims.
ABSENT = [
    'llmops_gateway_tokens_per_second_count{model="b"}',
    'llmops_gateway_queue_seconds_count{model="b"}',
    'llmops_gateway_retries_total{model="c"}',
    'llmops_guardrail_triggers_total{action="pass"',
    'llmops_guardrail_triggers_total{action="skipped"',
    'llmops_rag_grounding_score_count{app="app1",prompt_version="3"}',
    'llmops_rag_unsupported_answers_total{app="app1",prompt_version="3"}',
]


def test_each_series_counts_what_its_labels_saw(exposed: str) -> None:
    lines = set(exposed.splitlines())
    missing = [line for line in EXPOSED.strip().splitlines() if line not in lines]
    assert not missing, missing


def test_a_series_appears_once_something_was_observed_in_it(exposed: str) -> None:
    assert [series for series in ABSENT if series in exposed] == []


def _stage_count(metrics: PlatformMetrics, stage: str) -> str | None:
    prefix = f'llmops_stage_seconds_count{{stage="{stage}"}} '
    return next(
        (line[len(prefix) :] for line in metrics.render().decode().splitlines() if line.startswith(prefix)), None
    )


def test_a_traces_spans_are_counted_when_its_root_ends_and_late_ones_when_they_end() -> None:
    provider, metrics = LightTracerProvider(), PlatformMetrics()
    provider.add_span_processor(MetricsSpanProcessor(metrics))
    tracer = provider.get_tracer("test")
    root = tracer.start_span("ingest")
    ctx = trace.set_span_in_context(root)
    tracer.start_span("index.catch_up", context=ctx).end()
    late = tracer.start_span("index.compact", context=ctx)
    assert _stage_count(metrics, "index.catch_up") is None  # its trace still runs
    root.end()
    assert (_stage_count(metrics, "index.catch_up"), _stage_count(metrics, "ingest")) == ("1.0", "1.0")
    assert _stage_count(metrics, "index.compact") is None
    late.end()  # after its root: counted as it ends
    assert _stage_count(metrics, "index.compact") == "1.0"
    tracer.start_span("index.vacuum", context=ctx).end()  # started after the root ended
    assert (_stage_count(metrics, "index.vacuum"), _stage_count(metrics, "index.catch_up")) == ("1.0", "1.0")
