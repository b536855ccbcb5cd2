"""Span export over OTLP/HTTP (protobuf), to any OpenTelemetry collector or backend, beside the store.

Export runs on the batch processor's own thread: ending a span only puts it in a bounded queue, and when the queue
is full (the collector is slow or down) new spans are dropped, never waited for. The store keeps every trace
whatever happens to the export. The platform's light spans become the SDK's ``ReadableSpan`` objects the OTLP
encoder needs on that thread too (``ReadableSpanExporter``), not on the request path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence, Sized
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from llmops.observability._light import FinishedSpan, LightSpan, to_readable

__all__ = ["DroppingBatchSpanProcessor", "ReadableSpanExporter", "otlp_span_processor", "traces_url"]

logger = logging.getLogger("llmops.observability")

_TRACES_PATH = "/v1/traces"
_DROP_LOG_INTERVAL_S = 60.0


class DroppingBatchSpanProcessor(BatchSpanProcessor):
    """A `BatchSpanProcessor` that counts the spans it drops when its queue is full, and says so once a minute.

    The SDK's processor drops too, but logs a warning for every dropped span: with the collector down, thousands
    of lines a second in the server's log, each costing the request path a logging call. ``dropped`` is the count.
    Shutting down waits at most one export timeout.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int = 4096,
        schedule_delay_millis: float = 1000,
        max_export_batch_size: int = 512,
        export_timeout_millis: float = 5000,
    ) -> None:
        super().__init__(exporter, max_queue_size, schedule_delay_millis, max_export_batch_size, export_timeout_millis)
        self.dropped = 0
        self._capacity = max_queue_size
        # The queue's length is read (not changed) to drop before the SDK would log; without it, the SDK drops.
        queue = getattr(getattr(self, "_batch_processor", None), "_queue", None)
        self._queue: Sized | None = queue if isinstance(queue, Sized) else None
        self._reported = 0.0
        self._shutdown_timeout_ms = export_timeout_millis

    def on_end(self, span: FinishedSpan) -> None:
        if self._queue is not None and len(self._queue) >= self._capacity:
            self.dropped += 1
            now = time.monotonic()
            if now - self._reported >= _DROP_LOG_INTERVAL_S:
                self._reported = now
                logger.warning("OTLP export is behind: %d spans dropped so far (queue full)", self.dropped)
            return
        super().on_end(span)  # type: ignore[arg-type]  # the exporter converts light spans (ReadableSpanExporter)

    def shutdown(self) -> None:
        """Export what is queued, giving up after one export timeout (the SDK would wait 30 s for a dead
        collector, holding up the server's exit)."""
        batch = getattr(self, "_batch_processor", None)
        if batch is None:
            super().shutdown()  # type: ignore[no-untyped-call]
            return
        batch.shutdown(timeout_millis=self._shutdown_timeout_ms)


class ReadableSpanExporter(SpanExporter):
    """Hands ``exporter`` SDK ``ReadableSpan`` objects: light spans are converted as the batch is exported (on the
    batch processor's thread), SDK spans pass as they are."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        readable = [to_readable(s) if isinstance(s, LightSpan) else s for s in spans]
        return self.exporter.export(readable)

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def traces_url(endpoint: str) -> str:
    """The collector's traces URL: ``http://otel:4318`` becomes ``http://otel:4318/v1/traces``, as the
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` convention has it; a URL that already names a path is used as it is."""
    path = urlsplit(endpoint).path
    if path in ("", "/"):
        return endpoint.rstrip("/") + _TRACES_PATH
    return endpoint


def otlp_span_processor(
    endpoint: str,
    headers: dict[str, str],
    *,
    timeout_s: float = 5.0,
    max_queue_size: int = 4096,
    schedule_delay_ms: int = 1000,
    max_export_batch_size: int = 512,
) -> DroppingBatchSpanProcessor:
    """A processor that batches finished spans and posts them to ``endpoint`` over OTLP/HTTP.

    ``headers`` go with every request (e.g. ``{"authorization": "Bearer ..."}`` for a hosted backend). At most
    ``max_queue_size`` spans wait in memory; beyond that spans are dropped, so a dead collector costs the request
    path nothing (the returned processor's ``dropped`` counts them). ``timeout_s`` bounds one export, the exporter's
    retries included, and so how long shutting down can wait for a dead collector.

    >>> tracing.add_processor(otlp_span_processor("http://otel:4318", {}))  # doctest: +SKIP
    """
    exporter = OTLPSpanExporter(endpoint=traces_url(endpoint), headers=dict(headers), timeout=timeout_s)
    return DroppingBatchSpanProcessor(
        ReadableSpanExporter(exporter),
        max_queue_size=max_queue_size,
        schedule_delay_millis=schedule_delay_ms,
        max_export_batch_size=max_export_batch_size,
        export_timeout_millis=int(timeout_s * 1000),
    )
