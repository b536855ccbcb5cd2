"""Observability: traces (OpenTelemetry, GenAI conventions) stored durably and exportable over OTLP, Prometheus
metrics, per-request metrics and their aggregates, semantic drift, and trace retention."""

from llmops.observability._aggregates import DIMENSIONS, METRICS, Aggregate, MetricsQuery, UnknownMetricError
from llmops.observability._drift import DriftDetector, DriftResult, TopicCluster
from llmops.observability._drift_monitor import DriftMonitor
from llmops.observability._export import otlp_span_processor
from llmops.observability._metrics import MetricsSpanProcessor, PlatformMetrics
from llmops.observability._retention import TraceRetention
from llmops.observability._traces import TraceNotFoundError, TraceReader
from llmops.observability._tracing import REQUEST_ID, StoreSpanProcessor, Tracing

__all__ = [
    "DIMENSIONS",
    "METRICS",
    "REQUEST_ID",
    "Aggregate",
    "DriftDetector",
    "DriftMonitor",
    "DriftResult",
    "MetricsQuery",
    "MetricsSpanProcessor",
    "PlatformMetrics",
    "StoreSpanProcessor",
    "TopicCluster",
    "TraceNotFoundError",
    "TraceReader",
    "TraceRetention",
    "Tracing",
    "UnknownMetricError",
    "otlp_span_processor",
]
