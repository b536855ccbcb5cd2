"""Prometheus metrics, derived from finished spans so that every stage is measured the same way, in one place."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from llmops.observability._tracing import status_name

__all__ = ["MetricsSpanProcessor", "PlatformMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class PlatformMetrics:
    """The platform's own registry (not prometheus_client's global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "llmops_requests",
            "Requests handled, by root span name and status",
            ["name", "status"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "llmops_stage_seconds",
            "Duration of each stage (span)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "llmops_tokens", "Tokens by model and direction", ["model", "direction"], registry=self.registry
        )
        self.cost = Counter("llmops_cost_usd", "Cost in US dollars by model", ["model"], registry=self.registry)
        self.ttft_seconds = Histogram(
            "llmops_time_to_first_token_seconds",
            "Time to first token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsSpanProcessor(SpanProcessor):
    def __init__(self, metrics: PlatformMetrics) -> None:
        self._m = metrics

    def on_end(self, span: ReadableSpan) -> None:
        attributes = span.attributes or {}
        seconds = ((span.end_time or 0) - (span.start_time or 0)) / 1e9
        stage = span.name.split(" ", 1)[0]  # "chat smollm2" -> "chat": keep label cardinality bounded
        self._m.stage_seconds.labels(stage).observe(seconds)
        if span.parent is None:
            self._m.requests.labels(stage, status_name(span)).inc()
        model = attributes.get(genai.GEN_AI_REQUEST_MODEL)
        if attributes.get(genai.GEN_AI_OPERATION_NAME) == "chat" and isinstance(model, str):
            self._m.tokens.labels(model, "input").inc(float(attributes.get(genai.GEN_AI_USAGE_INPUT_TOKENS, 0)))  # type: ignore[arg-type]
            self._m.tokens.labels(model, "output").inc(float(attributes.get(genai.GEN_AI_USAGE_OUTPUT_TOKENS, 0)))  # type: ignore[arg-type]
            self._m.cost.labels(model).inc(float(attributes.get("llmops.cost_usd", 0.0)))  # type: ignore[arg-type]
            ttft = attributes.get(genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
            if isinstance(ttft, float | int):
                self._m.ttft_seconds.labels(model).observe(float(ttft))
