"""Tracing on the OpenTelemetry SDK; every finished trace is journalled durably before the request is answered.

The platform owns its own ``TracerProvider`` (never the process-global one), so two platforms in one process, as in
tests, do not share spans.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode, format_span_id, format_trace_id

from llmops.observability._request_metrics import request_metrics_row
from llmops.store import Journal

__all__ = ["REQUEST_ID", "StoreSpanProcessor", "Tracing", "span_attributes", "status_name"]

#: The attribute on a root span that names the request; `llmops traces REQUEST_ID` finds the trace by it.
REQUEST_ID = "llmops.request_id"
_MAX_OPEN_TRACES = 10_000


def span_attributes(span: ReadableSpan) -> dict[str, Any]:
    """A plain copy of a span's attributes (primitives or tuples of them, which orjson writes as they are).

    The public ``span.attributes`` is a read-only proxy over the SDK's BoundedAttributes, and copying it costs a
    Python-level call per key (tens of microseconds per span at two dozen attributes). The plain dict underneath is
    copied directly when it is there; the public path stays as the fallback.
    """
    bounded = getattr(span, "_attributes", None)
    raw = getattr(bounded, "_dict", None)
    if isinstance(raw, dict):
        return dict(raw)
    return dict(span.attributes or {})


class StoreSpanProcessor(SpanProcessor):
    """Buffers the spans of each trace and journals them in one line when the trace's root span ends.

    The root span ends inside the request handler, so the trace is durable (in the journal, which survives a killed
    process) before the response goes out; the journal drains it into the store within milliseconds.

    Every request gets its ``request_metrics`` row in the same line, sampled or not. The spans of a successful
    request are kept for ``sample_rate`` of the traces (decided on the trace id, so replicas agree); errors and
    guardrail blocks are always kept, and the last ``sampled_out_buffer`` sampled-out traces stay in memory so that
    negative feedback arriving later can still keep them (`keep`).
    """

    def __init__(self, journal: Journal, *, sample_rate: float = 1.0, sampled_out_buffer: int = 5_000) -> None:
        self._journal = journal
        self._open: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._lock = threading.Lock()
        self._threshold = int(sample_rate * (1 << 32))
        self._sampled_out: OrderedDict[str, tuple[ReadableSpan, list[ReadableSpan]]] = OrderedDict()
        self._buffer = sampled_out_buffer

    def on_end(self, span: ReadableSpan) -> None:
        context = span.get_span_context()
        if context is None:
            return
        is_root = span.parent is None or span.parent.is_remote
        with self._lock:
            spans = self._open.setdefault(context.trace_id, [])
            spans.append(span)
            if not is_root:
                if len(self._open) > _MAX_OPEN_TRACES:  # roots that never end must not grow memory forever
                    self._open.popitem(last=False)
                return
            del self._open[context.trace_id]
        self._write(span, spans)

    def keep(self, request_id: str) -> bool:
        """Store a sampled-out trace after all (feedback flagged it); False when it is not held any more."""
        with self._lock:
            held = self._sampled_out.pop(request_id, None)
        if held is None:
            return False
        root, spans = held
        trace_row, span_rows = self._rows(root, span_attributes(root), spans, request_id)
        self._journal.append({"traces": [trace_row], "spans": span_rows})
        return True

    def _sampled(self, root: ReadableSpan, attributes: dict[str, Any], status: str) -> bool:
        if status == "error" or attributes.get("llmops.guardrails.blocked_by"):
            return True
        return (root.get_span_context().trace_id & 0xFFFFFFFF) < self._threshold  # type: ignore[union-attr]

    def _write(self, root: ReadableSpan, spans: list[ReadableSpan]) -> None:
        trace_id = format_trace_id(root.get_span_context().trace_id)  # type: ignore[union-attr]
        attributes = span_attributes(root)
        request_id = str(attributes.get(REQUEST_ID) or f"trace_{trace_id}")
        status = status_name(root)
        sampled = self._sampled(root, attributes, status)
        pairs = [(s, attributes if s is root else span_attributes(s)) for s in spans]
        metrics = request_metrics_row(request_id, trace_id, root, attributes, pairs, status=status, sampled=sampled)
        if not sampled:
            with self._lock:
                if self._buffer:
                    self._sampled_out[request_id] = (root, spans)
                    if len(self._sampled_out) > self._buffer:
                        self._sampled_out.popitem(last=False)
            self._journal.append({"request_metrics": [metrics]})
            return
        trace_row, span_rows = self._rows(root, attributes, spans, request_id, pairs)
        self._journal.append({"traces": [trace_row], "spans": span_rows, "request_metrics": [metrics]})

    def _rows(
        self,
        root: ReadableSpan,
        attributes: dict[str, Any],
        spans: list[ReadableSpan],
        request_id: str,
        pairs: list[tuple[ReadableSpan, dict[str, Any]]] | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        trace_id = format_trace_id(root.get_span_context().trace_id)  # type: ignore[union-attr]
        # The trace row indexes the request; its attributes live once, on the root span (read back from there).
        trace_row = {
            "request_id": request_id,
            "trace_id": trace_id,
            "name": root.name,
            "created_at": datetime.fromtimestamp((root.start_time or 0) / 1e9, UTC),
            "duration_ms": _duration_ms(root),
            "status": status_name(root),
            "attributes": "{}",
        }
        span_rows = []
        for span, span_attrs in pairs or [(s, attributes if s is root else span_attributes(s)) for s in spans]:
            context = span.get_span_context()
            assert context is not None
            span_rows.append(
                {
                    "trace_id": trace_id,
                    "span_id": format_span_id(context.span_id),
                    "parent_span_id": format_span_id(span.parent.span_id) if span.parent else None,
                    "name": span.name,
                    "start_ns": span.start_time or 0,
                    "end_ns": span.end_time or 0,
                    "duration_ms": _duration_ms(span),
                    "status": status_name(span),
                    "status_message": span.status.description,
                    # JSON columns go into the journal already serialised, so draining does not redo it.
                    "attributes": orjson.dumps(span_attrs).decode(),
                    "events": orjson.dumps(
                        [
                            {"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})}
                            for e in span.events
                        ]
                    ).decode(),
                }
            )
        return trace_row, span_rows

    def shutdown(self) -> None:
        with self._lock:
            self._open.clear()
            self._sampled_out.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def status_name(span: ReadableSpan) -> str:
    """``ok`` or ``error``: OpenTelemetry's UNSET means nothing went wrong."""
    return "error" if span.status.status_code == StatusCode.ERROR else "ok"


def _duration_ms(span: ReadableSpan) -> float:
    return ((span.end_time or 0) - (span.start_time or 0)) / 1e6


class Tracing:
    """The platform's tracer provider and tracer; extra processors (metrics, exporters) are added by the owner."""

    def __init__(
        self,
        journal: Journal,
        *,
        service_name: str = "llmops",
        sample_rate: float = 1.0,
        sampled_out_buffer: int = 5_000,
    ) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.store_processor = StoreSpanProcessor(
            journal, sample_rate=sample_rate, sampled_out_buffer=sampled_out_buffer
        )
        self.provider.add_span_processor(self.store_processor)
        self.tracer: trace.Tracer = self.provider.get_tracer("llmops")

    def add_processor(self, processor: SpanProcessor) -> None:
        self.provider.add_span_processor(processor)

    def shutdown(self) -> None:
        self.provider.shutdown()
