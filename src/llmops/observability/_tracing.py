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

from llmops.observability._journalled import END, NAME, START, STATUS, journalled
from llmops.observability._light import (
    UNSET,
    FinishedSpan,
    LightSpan,
    LightTracerProvider,
    clean_span,
    span_attributes,
)
from llmops.observability._request_metrics import request_metrics_row
from llmops.store import Journal
from llmops.store._journal import register_journal_expander

__all__ = ["REQUEST_ID", "TRACE_ENTRY", "StoreSpanProcessor", "Tracing", "span_attributes", "status_name"]

#: The attribute on a root span that names the request; `llmops traces REQUEST_ID` finds the trace by it.
REQUEST_ID = "llmops.request_id"
_MAX_OPEN_TRACES = 10_000


class StoreSpanProcessor(SpanProcessor):
    """Buffers the spans of each trace and journals them in one line when the trace's root span ends.

    The root span ends inside the request handler, so the trace is durable (in the journal, which survives a killed
    process) before the response goes out; the journal drains it into the store within milliseconds. The line holds
    the spans as they are (``_journalled.py``): the trace's ``traces``, ``spans`` and ``request_metrics`` rows are
    derived from it where the journal is drained (``_expand_traces``), so the request pays for one short list per
    span and the journal's one ``orjson`` call and ``write``.

    Every request gets its ``request_metrics`` row from its line, sampled or not. The spans of a successful
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
        if type(span) is LightSpan:
            # The light tracer collects a trace's spans on its root (see ``_light.py``): a child costs nothing
            # here, and the root brings the whole trace.
            if span.trace_root is not None:
                return
            if span.trace_spans is not None:
                self._end_light_trace(span, span.trace_spans)
                return
        # An SDK span, or a light span whose parent is not a running light span of this provider: collected here
        # by trace id until its root ends.
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

    def _end_light_trace(self, root: LightSpan, trace_spans: list[LightSpan]) -> None:
        trace_id = root.context[0]
        spans: list[FinishedSpan] = [*trace_spans, root]
        if self._open:  # spans of this trace whose parent was outside it (collected by on_end), if any
            with self._lock:
                strays = self._open.pop(trace_id, None)
            if strays:
                spans = [*strays, *spans]
        self._write(root, trace_id, spans)

    def keep(self, request_id: str) -> bool:
        """Store a sampled-out trace after all (feedback flagged it); False when it is not held any more."""
        with self._lock:
            held = self._sampled_out.pop(request_id, None)
        if held is None:
            return False
        root, spans = held
        trace_id = format_trace_id(root.context.trace_id)
        for attempt in range(2):
            # Its metrics row was written when the request ended: only the trace and its spans now.
            entry = {"trace_id": trace_id, "request_id": request_id, "sampled": False, "metrics": False,
                     "spans": journalled(spans)}  # fmt: skip
            try:
                self._journal.append({TRACE_ENTRY: [entry]})
                break
            except TypeError:  # see _write
                if attempt or not _clean_trace(spans):
                    raise
        return True

    def _write(self, root: FinishedSpan, trace_number: int, spans: list[FinishedSpan], *, retry: bool = True) -> None:
        """Journal a finished trace (``spans``, its root last)."""
        trace_id = trace_number.to_bytes(16, "big").hex()
        attributes = span_attributes(root)
        request_id = str(attributes.get(REQUEST_ID) or f"trace_{trace_id}")
        status = status_name(root)
        sampled = (
            status == "error"
            or bool(attributes.get("llmops.guardrails.blocked_by"))
            or (trace_number & 0xFFFFFFFF) < self._threshold
        )
        line: dict[str, list[dict[str, Any]]]
        if sampled:
            # The spans as they are (one orjson call, the journal's, writes them); the trace, span and metrics rows
            # are derived from them when the journal is drained (``_expand_traces``), not on the request path.
            entry = {"trace_id": trace_id, "request_id": request_id, "sampled": True, "metrics": True,
                     "spans": journalled(spans)}  # fmt: skip
            line = {TRACE_ENTRY: [entry]}
        else:
            # Only the metrics row is journalled: the spans (questions, answers) stay in memory, not on disk.
            metrics = request_metrics_row(
                request_id, trace_id, journalled(spans), status=status, sampled=False, created_at=_created_at(root)
            )
            with self._lock:
                if self._buffer:
                    self._sampled_out[request_id] = (root, spans)
                    if len(self._sampled_out) > self._buffer:
                        self._sampled_out.popitem(last=False)
            line = {"request_metrics": [metrics]}
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


def _expand_traces(entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rows of journalled traces (``_write``): each trace's ``traces`` row, its ``spans`` rows and, unless it
    was written earlier, its ``request_metrics`` row. Runs where the journal is drained (a thread, or the drainer
    process), not on the request path."""
    traces: list[dict[str, Any]] = []
    span_rows: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    for entry in entries:
        trace_id, request_id, spans = entry["trace_id"], entry["request_id"], entry["spans"]
        root = spans[-1]
        start = root[START]
        created_at = datetime.fromtimestamp(start / 1e9, UTC)
        status = "ok" if root[STATUS] is None else root[STATUS][0]
        # The trace row indexes the request; its attributes live once, on the root span (read back from there).
        traces.append({"request_id": request_id, "trace_id": trace_id, "name": root[NAME], "created_at": created_at,
                       "duration_ms": (root[END] - start) / 1e6, "status": status, "attributes": "{}"})  # fmt: skip
        for name, span_id, parent_id, span_start, end, span_status, attributes, events in spans:
            text, message = ("ok", None) if span_status is None else span_status
            span_rows.append(
                {
                    "trace_id": trace_id,
                    "span_id": span_id.to_bytes(8, "big").hex(),
                    "parent_span_id": None if parent_id is None else parent_id.to_bytes(8, "big").hex(),
                    "name": name,
                    "start_ns": span_start,
                    "end_ns": end,
                    "duration_ms": (end - span_start) / 1e6,
                    "status": text,
                    "status_message": message,
                    "attributes": attributes,
                    "events": [{"name": n, "time_ns": t, "attributes": a} for n, t, a in events],
                }
            )
        if entry["metrics"]:
            metrics.append(
                request_metrics_row(
                    request_id, trace_id, spans, status=status, sampled=entry["sampled"], created_at=created_at
                )
            )
    return {"traces": traces, "spans": span_rows, "request_metrics": metrics}


#: The name journal lines carry traces under (``_write``); expanded into rows by ``_expand_traces`` when drained.
TRACE_ENTRY = "llmops.trace"
# Registered as the tables are, when this module is imported: the drainer process imports it with the platform.
register_journal_expander(TRACE_ENTRY, _expand_traces)


def status_name(span: FinishedSpan) -> str:
    """``ok`` or ``error``: OpenTelemetry's UNSET means nothing went wrong."""
    status = span.status
    return "ok" if status is UNSET else "error" if status.status_code == StatusCode.ERROR else "ok"


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
