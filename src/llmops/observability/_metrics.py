"""Prometheus metrics, derived from finished spans so that every stage is measured the same way, in one place."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from llmops.observability._tracing import status_name

__all__ = ["MetricsSpanProcessor", "PlatformMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_RATE_BUCKETS = (1, 5, 10, 25, 50, 75, 100, 150, 250, 500, 1000)


class PlatformMetrics:
    """The platform's own registry (not prometheus_client's global one)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "llmops_requests", "Requests by root span name and status", ["name", "status"], registry=r
        )
        self.stage_seconds = Histogram(
            "llmops_stage_seconds", "Duration of each stage (span)", ["stage"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.tokens = Counter("llmops_tokens", "Tokens by model and direction", ["model", "direction"], registry=r)
        self.cost = Counter("llmops_cost_usd", "Cost in US dollars by model", ["model"], registry=r)
        self.ttft_seconds = Histogram(
            "llmops_time_to_first_token_seconds", "Time to first token", ["model"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.calls = Counter(
            "llmops_gateway_calls", "Gateway calls by requested model, serving alias, status and cache hit",
            ["model", "served_by", "status", "cache"], registry=r,
        )  # fmt: skip
        self.call_seconds = Histogram(
            "llmops_gateway_call_seconds", "Total latency of gateway calls", ["model"], buckets=_LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.queue_seconds = Histogram(
            "llmops_gateway_queue_seconds", "Time a call waited for a local model", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens_per_second = Histogram(
            "llmops_gateway_tokens_per_second", "Decode speed of answers", ["model"], buckets=_RATE_BUCKETS, registry=r
        )
        self.retries = Counter("llmops_gateway_retries", "Retried upstream requests", ["model"], registry=r)
        self.fallbacks = Counter("llmops_gateway_fallbacks", "Aliases that failed over", ["model"], registry=r)

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
        if attributes.get(genai.GEN_AI_OPERATION_NAME) != "chat" or not isinstance(model, str):
            return
        m = self._m
        served = str(attributes.get("llmops.served_by", model))
        m.calls.labels(model, served, status_name(span), str(attributes.get("llmops.cache.hit", "none"))).inc()
        m.call_seconds.labels(model).observe(seconds)
        m.tokens.labels(served, "input").inc(_number(attributes.get(genai.GEN_AI_USAGE_INPUT_TOKENS)))
        m.tokens.labels(served, "output").inc(_number(attributes.get(genai.GEN_AI_USAGE_OUTPUT_TOKENS)))
        m.cost.labels(served).inc(_number(attributes.get("llmops.cost_usd")))
        m.retries.labels(model).inc(_number(attributes.get("llmops.retries")))
        fallbacks = attributes.get("llmops.fallbacks")
        m.fallbacks.labels(model).inc(len(fallbacks) if isinstance(fallbacks, tuple | list) else 0)
        ttft = attributes.get(genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
        if isinstance(ttft, float | int):
            m.ttft_seconds.labels(served).observe(float(ttft))
        rate = attributes.get("llmops.tokens_per_s")
        if isinstance(rate, float | int) and rate > 0:
            m.tokens_per_second.labels(served).observe(float(rate))
        queued = attributes.get("llmops.queue_ms")
        if isinstance(queued, float | int):
            m.queue_seconds.labels(served).observe(float(queued) / 1000)


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
