"""Tracing through the OpenTelemetry API; every finished trace is journalled durably before the request is answered.

The platform owns its own tracer provider (never the process-global one), so two platforms in one process, as in
tests, do not share spans. It is a ``LightTracerProvider`` (``_light.py``): the OpenTelemetry API without the SDK's
per-span work on the request path; the SDK's processors and exporters still take its spans (see ``_export.py``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import StatusCode, format_trace_id

from llmops.observability._light import UNSET, FinishedSpan, LightSpan, LightTracerProvider, clean_span
from llmops.observability._request_metrics import request_metrics_row
from llmops.store import Journal

__all__ = ["REQUEST_ID", "StoreSpanProcessor", "Tracing", "span_attributes", "status_name"]

#: The attribute on a root span that names the request; `llmops traces REQUEST_ID` finds the trace by it.
REQUEST_ID = "llmops.request_id"
_MAX_OPEN_TRACES = 10_000


def span_attributes(span: FinishedSpan) -> dict[str, Any]:
    """A span's attributes as a plain dict (primitives, or sequences of them, which orjson writes as they are).

    For a ``LightSpan`` this is the span's own dict, not a copy (a finished span's attributes do not change): do not
    modify it; its values are as they were set (see ``_light.py``). For an SDK span, the public ``span.attributes``
    is a read-only proxy over BoundedAttributes whose copy costs a Python-level call per key, so the plain dict
    underneath is copied directly when it is there.
    """
    if type(span) is LightSpan:
        return span.attributes
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
        self._open: OrderedDict[int, list[FinishedSpan]] = OrderedDict()
        self._lock = threading.Lock()
        self._threshold = int(sample_rate * (1 << 32))
        self._sampled_out: OrderedDict[str, tuple[FinishedSpan, list[FinishedSpan]]] = OrderedDict()
        self._buffer = sampled_out_buffer

    def on_end(self, span: FinishedSpan) -> None:
        context = span.context
        if context is None:
            return
        trace_id = context[0]  # SpanContext is a tuple: (trace_id, span_id, is_remote, ...)
        parent = span.parent
        opened = self._open
        with self._lock:
            spans = opened.get(trace_id)
            if spans is None:
                spans = opened[trace_id] = []
            spans.append(span)
            if parent is not None and not parent[2]:  # a local parent: the trace goes on
                if len(opened) > _MAX_OPEN_TRACES:  # roots that never end must not grow memory forever
                    opened.popitem(last=False)
                return
            del opened[trace_id]
        self._write(span, trace_id, spans)

    def keep(self, request_id: str) -> bool:
        """Store a sampled-out trace after all (feedback flagged it); False when it is not held any more."""
        with self._lock:
            held = self._sampled_out.pop(request_id, None)
        if held is None:
            return False
        root, spans = held
        trace_id = format_trace_id(root.context.trace_id)
        for attempt in range(2):
            created_at = _created_at(root)
            span_rows = _span_rows(trace_id, root, span_attributes(root), spans)
            trace_row = _trace_row(request_id, trace_id, root, status_name(root), created_at)
            try:
                self._journal.append({"traces": [trace_row], "spans": span_rows})
                break
            except TypeError:  # see _write
                if attempt or not _clean_trace(spans):
                    raise
        return True

    def _write(self, root: FinishedSpan, trace_number: int, spans: list[FinishedSpan], *, retry: bool = True) -> None:
        trace_id = trace_number.to_bytes(16, "big").hex()
        attributes = span_attributes(root)
        request_id = str(attributes.get(REQUEST_ID) or f"trace_{trace_id}")
        status = status_name(root)
        sampled = (
            status == "error"
            or bool(attributes.get("llmops.guardrails.blocked_by"))
            or (trace_number & 0xFFFFFFFF) < self._threshold
        )
        created_at = _created_at(root)
        if not sampled:
            pairs = [(s, attributes if s is root else span_attributes(s)) for s in spans]
            metrics = request_metrics_row(
                request_id, trace_id, root, attributes, pairs, status=status, sampled=False, created_at=created_at
            )
            with self._lock:
                if self._buffer:
                    self._sampled_out[request_id] = (root, spans)
                    if len(self._sampled_out) > self._buffer:
                        self._sampled_out.popitem(last=False)
            line: dict[str, list[dict[str, Any]]] = {"request_metrics": [metrics]}
        else:
            span_rows = _span_rows(trace_id, root, attributes, spans)
            # The span rows pair each span with the attributes already taken (no second copy of an SDK span's).
            pairs = [(s, row["attributes"]) for s, row in zip(spans, span_rows, strict=True)]
            metrics = request_metrics_row(
                request_id, trace_id, root, attributes, pairs, status=status, sampled=True, created_at=created_at
            )
            trace_row = _trace_row(request_id, trace_id, root, status, created_at)
            # One orjson call (the journal's) serialises the whole line; JSON columns go in as objects, which the
            # drain inserts as JSON.
            line = {"traces": [trace_row], "spans": span_rows, "request_metrics": [metrics]}
        try:
            self._journal.append(line)
        except TypeError:
            # A value orjson cannot write (light spans keep attribute values as given): clean the trace's spans as
            # the SDK would have (objects become their str) and write it again.
            if not retry or not _clean_trace(spans):
                raise
            self._write(root, trace_number, spans, retry=False)

    def shutdown(self) -> None:
        with self._lock:
            self._open.clear()
            self._sampled_out.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _clean_trace(spans: list[FinishedSpan]) -> bool:
    """Clean the light spans' attributes in place (see ``clean_span``); False when none changed."""
    changed = False
    for span in spans:
        if type(span) is LightSpan and clean_span(span):
            changed = True
    return changed


def _created_at(root: FinishedSpan) -> datetime:
    return datetime.fromtimestamp((root.start_time or 0) / 1e9, UTC)


def _trace_row(request_id: str, trace_id: str, root: FinishedSpan, status: str, created_at: datetime) -> dict[str, Any]:
    # The trace row indexes the request; its attributes live once, on the root span (read back from there).
    return {
        "request_id": request_id,
        "trace_id": trace_id,
        "name": root.name,
        "created_at": created_at,
        "duration_ms": _duration_ms(root),
        "status": status,
        "attributes": "{}",
    }


def _span_rows(
    trace_id: str, root: FinishedSpan, root_attributes: dict[str, Any], spans: list[FinishedSpan]
) -> list[dict[str, Any]]:
    """The ``spans`` rows of a trace. JSON columns go in as objects: the journal serialises the whole line at once,
    and draining inserts them as JSON (the same text as serialising each one here)."""
    rows = []
    error = StatusCode.ERROR
    root_id = root.context[1]
    root_hex = root_id.to_bytes(8, "big").hex()  # most spans' parent: formatted once
    for span in spans:
        if span is root:
            attributes = root_attributes
            span_hex = root_hex
        else:
            attributes = span.attributes if type(span) is LightSpan else span_attributes(span)
            span_hex = span.context[1].to_bytes(8, "big").hex()
        parent = span.parent
        if parent is None:
            parent_hex = None
        else:
            parent_id = parent[1]
            parent_hex = root_hex if parent_id == root_id else parent_id.to_bytes(8, "big").hex()
        if not span.events:
            events: list[dict[str, Any]] = []
        elif type(span) is LightSpan:
            events = [{"name": e.name, "time_ns": e.timestamp, "attributes": e.attributes} for e in span.events]
        else:
            events = [
                {"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})} for e in span.events
            ]
        start, end, status = span.start_time or 0, span.end_time or 0, span.status
        if status is UNSET:  # most spans: their status was never set (a shared object)
            status_text, message = "ok", None
        else:
            status_text = "error" if status.status_code is error else "ok"
            message = status.description
        rows.append(
            {
                "trace_id": trace_id,
                "span_id": span_hex,
                "parent_span_id": parent_hex,
                "name": span.name,
                "start_ns": start,
                "end_ns": end,
                "duration_ms": (end - start) / 1e6,
                "status": status_text,
                "status_message": message,
                "attributes": attributes,
                "events": events,
            }
        )
    return rows


def status_name(span: FinishedSpan) -> str:
    """``ok`` or ``error``: OpenTelemetry's UNSET means nothing went wrong."""
    status = span.status
    return "ok" if status is UNSET else "error" if status.status_code == StatusCode.ERROR else "ok"


def _duration_ms(span: FinishedSpan) -> float:
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
        self.provider = LightTracerProvider(resource=Resource.create({"service.name": service_name}))
        self.store_processor = StoreSpanProcessor(
            journal, sample_rate=sample_rate, sampled_out_buffer=sampled_out_buffer
        )
        self.provider.add_span_processor(self.store_processor)
        self.tracer: trace.Tracer = self.provider.get_tracer("llmops")

    def add_processor(self, processor: SpanProcessor) -> None:
        self.provider.add_span_processor(processor)

    def shutdown(self) -> None:
        self.provider.shutdown()
