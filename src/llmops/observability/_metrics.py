"""Prometheus metrics, derived from finished spans so that every stage is measured the same way, in one place.

The request path only adds numbers to plain dictionaries (a lock and a few additions); the Prometheus metric
families are built when ``/metrics`` is scraped. prometheus_client's own metric objects cost a couple of microseconds
per update, which at thousands of gateway calls per second and ten updates per call is worth avoiding.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from llmops.observability._tracing import span_attributes, status_name

__all__ = ["MetricsSpanProcessor", "PlatformMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_RATE_BUCKETS = (1, 5, 10, 25, 50, 75, 100, 150, 250, 500, 1000)
_SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

# name -> (help, label names, histogram buckets or None for a counter)
_METRICS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...] | None]] = {
    "llmops_requests": ("Requests by root span name and status", ("name", "status"), None),
    "llmops_stage_seconds": ("Duration of each stage (span)", ("stage",), _LATENCY_BUCKETS),
    "llmops_tokens": ("Tokens by model and direction", ("model", "direction"), None),
    "llmops_cost_usd": ("Cost in US dollars by model", ("model",), None),
    "llmops_time_to_first_token_seconds": ("Time to first token", ("model",), _LATENCY_BUCKETS),
    "llmops_gateway_calls": (
        "Gateway calls by requested model, serving alias, status and cache hit",
        ("model", "served_by", "status", "cache"),
        None,
    ),
    "llmops_gateway_call_seconds": ("Total latency of gateway calls", ("model",), _LATENCY_BUCKETS),
    "llmops_gateway_queue_seconds": ("Time a call waited for a local model", ("model",), _LATENCY_BUCKETS),
    "llmops_gateway_tokens_per_second": ("Decode speed of answers", ("model",), _RATE_BUCKETS),
    "llmops_gateway_retries": ("Retried upstream requests", ("model",), None),
    "llmops_gateway_fallbacks": ("Aliases that failed over", ("model",), None),
    "llmops_guardrail_checks": (
        "Guardrail decisions by policy, stage, rail and action",
        ("policy", "stage", "rail", "action"),
        None,
    ),
    "llmops_guardrail_triggers": (
        "Guardrail rails that acted (not pass or skipped)",
        ("stage", "rail", "action"),
        None,
    ),
    "llmops_guardrail_seconds": ("Time a rail took", ("rail",), _LATENCY_BUCKETS),
    "llmops_online_eval_score": ("Online evaluation scores of sampled answers", ("app", "metric"), _SCORE_BUCKETS),
}


@dataclass
class _Histogram:
    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class PlatformMetrics(Collector):
    """The platform's metrics, in its own registry (not prometheus_client's global one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, tuple[str, ...]], float] = {}
        self._histograms: dict[tuple[str, tuple[str, ...]], _Histogram] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def inc(self, name: str, labels: tuple[str, ...], value: float = 1.0) -> None:
        key = (name, labels)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + value

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        key = (name, labels)
        with self._lock:
            histogram = self._histograms.get(key)
            if histogram is None:
                histogram = self._histograms[key] = _Histogram(_METRICS[name][2] or ())
            histogram.observe(value)

    def observe_online_score(self, app: str, metric: str, value: float) -> None:
        """An online evaluation score of a sampled answer (see ``llmops.evaluation.OnlineEvaluator``)."""
        self.observe("llmops_online_eval_score", (app, metric), value)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counters = dict(self._counters)
            histograms = {k: (list(h.counts), h.total) for k, h in self._histograms.items()}
        for name, (documentation, label_names, buckets) in _METRICS.items():
            if buckets is None:
                counter = CounterMetricFamily(name, documentation, labels=label_names)
                for (metric, labels), value in counters.items():
                    if metric == name:
                        counter.add_metric(list(labels), value)
                yield counter
                continue
            histogram = HistogramMetricFamily(name, documentation, labels=label_names)
            for (metric, labels), (counts, total) in histograms.items():
                if metric != name:
                    continue
                cumulative, running = [], 0
                for bound, count in zip([*map(str, buckets), "+Inf"], counts, strict=True):
                    running += count
                    cumulative.append((bound, float(running)))
                histogram.add_metric(list(labels), cumulative, total)
            yield histogram

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsSpanProcessor(SpanProcessor):
    def __init__(self, metrics: PlatformMetrics) -> None:
        self._m = metrics

    def on_end(self, span: ReadableSpan) -> None:
        m = self._m
        attributes = span_attributes(span)
        seconds = ((span.end_time or 0) - (span.start_time or 0)) / 1e9
        stage = span.name.split(" ", 1)[0]  # "chat smollm2" -> "chat": keep label cardinality bounded
        m.observe("llmops_stage_seconds", (stage,), seconds)
        if span.parent is None:
            m.inc("llmops_requests", (stage, status_name(span)))
        if stage.startswith("guardrails."):
            self._guardrails(span)
        model = attributes.get(genai.GEN_AI_REQUEST_MODEL)
        if attributes.get(genai.GEN_AI_OPERATION_NAME) != "chat" or not isinstance(model, str):
            return
        served = str(attributes.get("llmops.served_by", model))
        cache = str(attributes.get("llmops.cache.hit", "none"))
        m.inc("llmops_gateway_calls", (model, served, status_name(span), cache))
        m.observe("llmops_gateway_call_seconds", (model,), seconds)
        m.inc("llmops_tokens", (served, "input"), _number(attributes.get(genai.GEN_AI_USAGE_INPUT_TOKENS)))
        m.inc("llmops_tokens", (served, "output"), _number(attributes.get(genai.GEN_AI_USAGE_OUTPUT_TOKENS)))
        m.inc("llmops_cost_usd", (served,), _number(attributes.get("llmops.cost_usd")))
        retries = attributes.get("llmops.retries")
        if retries:
            m.inc("llmops_gateway_retries", (model,), _number(retries))
        fallbacks = attributes.get("llmops.fallbacks")
        if isinstance(fallbacks, tuple | list) and fallbacks:
            m.inc("llmops_gateway_fallbacks", (model,), len(fallbacks))
        ttft = attributes.get(genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
        if isinstance(ttft, float | int):
            m.observe("llmops_time_to_first_token_seconds", (served,), float(ttft))
        rate = attributes.get("llmops.tokens_per_s")
        if isinstance(rate, float | int) and rate > 0:
            m.observe("llmops_gateway_tokens_per_second", (served,), float(rate))
        queued = attributes.get("llmops.queue_ms")
        if isinstance(queued, float | int):
            m.observe("llmops_gateway_queue_seconds", (served,), float(queued) / 1000)

    def _guardrails(self, span: ReadableSpan) -> None:
        for event in span.events:
            if event.name != "guardrail.decision" or not event.attributes:
                continue
            a = event.attributes
            rail, stage, action = (
                str(a.get("llmops.guardrail.rail")),
                str(a.get("llmops.guardrail.stage")),
                str(a.get("llmops.guardrail.action")),
            )
            self._m.inc("llmops_guardrail_checks", (str(a.get("llmops.guardrail.policy")), stage, rail, action))
            if action not in ("pass", "skipped"):
                self._m.inc("llmops_guardrail_triggers", (stage, rail, action))
            self._m.observe("llmops_guardrail_seconds", (rail,), _number(a.get("llmops.guardrail.latency_ms")) / 1000)


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
