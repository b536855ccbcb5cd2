"""Prometheus metrics, derived from finished spans so that every stage is measured the same way, in one place.

The request path only adds numbers to plain dictionaries (a lock and a few additions); the Prometheus metric
families are built when ``/metrics`` is scraped. prometheus_client's own metric objects cost a couple of microseconds
per update, which at thousands of gateway calls per second and ten updates per call is worth avoiding.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from llmops.observability._light import FinishedSpan, LightSpan
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
    "llmops_rag_answers": (
        "RAG answers by app, prompt version, index snapshot and outcome (answered, abstained, blocked, error)",
        ("app", "prompt_version", "snapshot", "outcome"),
        None,
    ),
    "llmops_rag_seconds": ("End-to-end latency of RAG answers", ("app", "prompt_version"), _LATENCY_BUCKETS),
    "llmops_rag_grounding_score": ("Grounding score of RAG answers", ("app", "prompt_version"), _SCORE_BUCKETS),
    "llmops_rag_unsupported_answers": (
        "RAG answers with at least one claim the sources do not support (hallucination)",
        ("app", "prompt_version"),
        None,
    ),
    "llmops_rag_cost_usd": ("Cost of RAG answers in US dollars", ("app", "prompt_version"), None),
}


_Key = tuple[str, tuple[str, ...]]  # (metric name, label values)


class _Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class PlatformMetrics(Collector):
    """The platform's metrics, in its own registry (not prometheus_client's global one).

    Each labelled series is a small object (``_Counter``, ``_Histogram``) that updaters may hold on to: updating
    one is an addition under the lock, without hashing its labels again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[_Key, _Counter] = {}
        self._histograms: dict[_Key, _Histogram] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def inc(self, name: str, labels: tuple[str, ...], value: float = 1.0) -> None:
        with self._lock:
            self._counter((name, labels)).value += value

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        with self._lock:
            self._histogram((name, labels)).observe(value)

    def _counter(self, key: _Key) -> _Counter:
        """The counter of ``key``, created when new (called with the lock held)."""
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = _Counter()
        return counter

    def _histogram(self, key: _Key) -> _Histogram:
        """The histogram of ``key``, created when new (called with the lock held)."""
        histogram = self._histograms.get(key)
        if histogram is None:
            histogram = self._histograms[key] = _Histogram(_METRICS[key[0]][2] or ())
        return histogram

    def observe_online_score(self, app: str, metric: str, value: float) -> None:
        """An online evaluation score of a sampled answer (see ``llmops.evaluation.OnlineEvaluator``)."""
        self.observe("llmops_online_eval_score", (app, metric), value)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counters = {k: c.value for k, c in self._counters.items()}
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


_OPERATION = genai.GEN_AI_OPERATION_NAME
_REQUEST_MODEL = genai.GEN_AI_REQUEST_MODEL
_INPUT_TOKENS = genai.GEN_AI_USAGE_INPUT_TOKENS
_OUTPUT_TOKENS = genai.GEN_AI_USAGE_OUTPUT_TOKENS
_TTFT = genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
_CACHE_LIMIT = 10_000  # label combinations remembered per processor (bounded, like the labels themselves)
# What a guardrail decision's series are labelled by, read from the event's attributes in one call.
_DECISION_LABELS = (
    "llmops.guardrail.policy",
    "llmops.guardrail.stage",
    "llmops.guardrail.rail",
    "llmops.guardrail.action",
)
_decision_labels = itemgetter(*_DECISION_LABELS)


class _CallSeries:
    """The series one kind of gateway call updates (requested model, serving alias, status, cache); the ones
    that not every call has are created when first needed, as they would be without this cache."""

    __slots__ = ("calls", "cost", "queue", "rate", "seconds", "served", "tokens_in", "tokens_out", "ttft")

    def __init__(self, m: PlatformMetrics, model: str, served: str, status: str, cache: str) -> None:
        self.served = served
        self.calls = m._counter(("llmops_gateway_calls", (model, served, status, cache)))
        self.seconds = m._histogram(("llmops_gateway_call_seconds", (model,)))
        self.tokens_in = m._counter(("llmops_tokens", (served, "input")))
        self.tokens_out = m._counter(("llmops_tokens", (served, "output")))
        self.cost = m._counter(("llmops_cost_usd", (served,)))
        self.ttft: _Histogram | None = None
        self.rate: _Histogram | None = None
        self.queue: _Histogram | None = None


class _AnswerSeries:
    """The series one kind of RAG answer updates (app, prompt version, snapshot, outcome)."""

    __slots__ = ("answers", "app", "cost", "grounding", "seconds", "unsupported", "version")

    def __init__(self, m: PlatformMetrics, app: str, version: str, snapshot: str, outcome: str) -> None:
        self.app, self.version = app, version
        self.answers = m._counter(("llmops_rag_answers", (app, version, snapshot, outcome)))
        self.seconds = m._histogram(("llmops_rag_seconds", (app, version)))
        self.cost = m._counter(("llmops_rag_cost_usd", (app, version)))
        self.grounding: _Histogram | None = None
        self.unsupported: _Counter | None = None


class MetricsSpanProcessor(SpanProcessor):
    """Updates the platform's metrics from each finished span.

    The spans of a light trace (``_light.py``) are recorded together when its root ends, under one lock: a child
    span costs nothing when it ends. So a child's stage time is counted once its trace is over (milliseconds for a
    request; a long ingestion's stages when it finishes); a child that ends after its root is counted when it ends.
    Other spans are recorded as they end. The series a span name, a gateway call, a RAG answer or a guardrail
    decision updates are looked up once per label combination and remembered: most spans cost a couple of
    additions.
    """

    def __init__(self, metrics: PlatformMetrics) -> None:
        self._m = metrics
        # span name -> its stage, the stage's llmops_stage_seconds, whether it is a guardrails stage
        self._stages: dict[str, tuple[str, _Histogram, bool]] = {}
        # (policy, stage, rail, action) as an event has them -> checks, triggers (None when the rail passed), seconds
        self._decisions: dict[tuple[object, ...], tuple[_Counter, _Counter | None, _Histogram]] = {}
        self._calls: dict[tuple[str, str, str, str], _CallSeries] = {}
        self._answers: dict[tuple[str, str, str, str], _AnswerSeries] = {}

    def on_end(self, span: FinishedSpan) -> None:
        if type(span) is not LightSpan:
            with self._m._lock:
                self._record(span, span_attributes(span))
            return
        root = span.trace_root
        if root is not None and root.end_time is None:
            return  # recorded with its trace when the root ends (see the class's documentation)
        trace_spans = span.trace_spans  # the spans of a root's trace that ended before it
        with self._m._lock:
            if trace_spans:
                for child in trace_spans:
                    self._record(child, child.attributes)
            self._record(span, span.attributes)

    def _record(self, span: FinishedSpan, attributes: dict[str, Any]) -> None:
        """One span's metrics (called with the metrics' lock held)."""
        seconds = ((span.end_time or 0) - (span.start_time or 0)) / 1e9
        known = self._stages.get(span.name)
        if known is None:
            known = self._stage(span.name)
        stage, histogram, guardrails = known
        histogram.counts[bisect_left(histogram.bounds, seconds)] += 1
        histogram.total += seconds
        if span.parent is None:
            status = status_name(span)
            self._m._counter(("llmops_requests", (stage, status))).value += 1
            if stage == "rag":
                self._rag(status, attributes, seconds)
        if guardrails:
            self._guardrails(span)
        if attributes.get(_OPERATION) == "chat":
            model = attributes.get(_REQUEST_MODEL)
            if isinstance(model, str):
                self._chat(span, attributes, model, seconds)

    def _stage(self, name: str) -> tuple[str, _Histogram, bool]:
        stage = name.split(" ", 1)[0]  # "chat smollm2" -> "chat": keep label cardinality bounded
        known = (stage, self._m._histogram(("llmops_stage_seconds", (stage,))), stage.startswith("guardrails."))
        if len(self._stages) < _CACHE_LIMIT:
            self._stages[name] = known
        return known

    def _guardrails(self, span: FinishedSpan) -> None:
        """One count per ``guardrail.decision`` event, one more when the rail acted, and the rail's time."""
        cache = self._decisions
        for event in span.events:
            a = event.attributes
            if event.name != "guardrail.decision" or not a:
                continue
            try:
                raw = _decision_labels(a)  # the rails write all four (one C call, not four lookups)
            except KeyError:
                raw = tuple(a.get(label) for label in _DECISION_LABELS)
            series = cache.get(raw)
            if series is None:
                series = self._decision(raw)
            checks, triggers, rail_seconds = series
            checks.value += 1
            if triggers is not None:
                triggers.value += 1
            latency = a.get("llmops.guardrail.latency_ms")
            value = latency / 1000 if isinstance(latency, (int, float)) else 0.0
            rail_seconds.counts[bisect_left(rail_seconds.bounds, value)] += 1
            rail_seconds.total += value

    def _decision(self, raw: tuple[object, ...]) -> tuple[_Counter, _Counter | None, _Histogram]:
        policy, stage, rail, action = (str(v) for v in raw)
        m = self._m
        series = (
            m._counter(("llmops_guardrail_checks", (policy, stage, rail, action))),
            None if action in ("pass", "skipped") else m._counter(("llmops_guardrail_triggers", (stage, rail, action))),
            m._histogram(("llmops_guardrail_seconds", (rail,))),
        )
        if len(self._decisions) < _CACHE_LIMIT:
            self._decisions[raw] = series
        return series

    def _chat(self, span: FinishedSpan, attributes: dict[str, Any], model: str, seconds: float) -> None:
        """A gateway call's metrics (called with the metrics' lock held)."""
        m = self._m
        key = (
            model,
            str(attributes.get("llmops.served_by", model)),
            status_name(span),
            str(attributes.get("llmops.cache.hit", "none")),
        )
        series = self._calls.get(key)
        if series is None:
            series = _CallSeries(m, *key)
            if len(self._calls) < _CACHE_LIMIT:
                self._calls[key] = series
        series.calls.value += 1
        histogram = series.seconds
        histogram.counts[bisect_left(histogram.bounds, seconds)] += 1
        histogram.total += seconds
        series.tokens_in.value += _number(attributes.get(_INPUT_TOKENS))
        series.tokens_out.value += _number(attributes.get(_OUTPUT_TOKENS))
        series.cost.value += _number(attributes.get("llmops.cost_usd"))
        retries = attributes.get("llmops.retries")
        if retries:
            m._counter(("llmops_gateway_retries", (model,))).value += _number(retries)
        fallbacks = attributes.get("llmops.fallbacks")
        if isinstance(fallbacks, tuple | list) and fallbacks:
            m._counter(("llmops_gateway_fallbacks", (model,))).value += len(fallbacks)
        served = series.served
        ttft = attributes.get(_TTFT)
        if isinstance(ttft, float | int):
            if series.ttft is None:
                series.ttft = m._histogram(("llmops_time_to_first_token_seconds", (served,)))
            series.ttft.observe(float(ttft))
        rate = attributes.get("llmops.tokens_per_s")
        if isinstance(rate, float | int) and rate > 0:
            if series.rate is None:
                series.rate = m._histogram(("llmops_gateway_tokens_per_second", (served,)))
            series.rate.observe(float(rate))
        queued = attributes.get("llmops.queue_ms")
        if isinstance(queued, float | int):
            if series.queue is None:
                series.queue = m._histogram(("llmops_gateway_queue_seconds", (served,)))
            series.queue.observe(float(queued) / 1000)

    def _rag(self, status: str, attributes: dict[str, Any], seconds: float) -> None:
        """A RAG answer's quality, latency and cost by app and prompt version (called with the metrics' lock
        held)."""
        if status == "error":
            outcome = "error"
        elif attributes.get("llmops.guardrails.blocked_by"):
            outcome = "blocked"
        elif attributes.get("llmops.rag.abstained"):
            outcome = "abstained"
        else:
            outcome = "answered"
        key = (
            str(attributes.get("llmops.rag.app", "")),
            str(attributes.get("llmops.prompt.version", "")),
            str(attributes.get("llmops.index.snapshot", "")),
            outcome,
        )
        series = self._answers.get(key)
        if series is None:
            series = _AnswerSeries(self._m, *key)
            if len(self._answers) < _CACHE_LIMIT:
                self._answers[key] = series
        series.answers.value += 1
        histogram = series.seconds
        histogram.counts[bisect_left(histogram.bounds, seconds)] += 1
        histogram.total += seconds
        series.cost.value += _number(attributes.get("llmops.cost_usd"))
        grounding = attributes.get("llmops.guardrails.grounding_score")
        if isinstance(grounding, float | int):
            if series.grounding is None:
                series.grounding = self._m._histogram(("llmops_rag_grounding_score", (series.app, series.version)))
            series.grounding.observe(float(grounding))
            if _number(attributes.get("llmops.guardrails.unsupported_claims")) > 0:
                if series.unsupported is None:
                    series.unsupported = self._m._counter(
                        ("llmops_rag_unsupported_answers", (series.app, series.version))
                    )
                series.unsupported.value += 1


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0
