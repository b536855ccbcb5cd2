"""Observability: traces (OpenTelemetry, GenAI conventions) stored durably, and Prometheus metrics."""

from llmops.observability._metrics import MetricsSpanProcessor, PlatformMetrics
from llmops.observability._traces import TraceNotFoundError, TraceReader
from llmops.observability._tracing import REQUEST_ID, StoreSpanProcessor, Tracing

__all__ = [
    "REQUEST_ID",
    "MetricsSpanProcessor",
    "PlatformMetrics",
    "StoreSpanProcessor",
    "TraceNotFoundError",
    "TraceReader",
    "Tracing",
]
