"""A finished span as the journal carries it: a compact list that the journal's one ``orjson`` call writes as it is.

    [name, span_id, parent_span_id, start_ns, end_ns, status, attributes, events]

Ids are integers (``parent_span_id`` is None for a span without a parent), ``status`` is None for a span whose status
was never set, else ``[text, message]`` (text ``ok`` or ``error``), and ``events`` are ``[name, time_ns, attributes]``
lists. A trace is journalled as the list of its spans, its root last. Building this costs the request path a few
hundred nanoseconds per span; the ``spans`` rows (hex ids, durations, event objects) and the request's metrics row
are derived from it when the journal is drained (``_tracing.py``), off the request path.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import StatusCode

from llmops.observability._light import UNSET, FinishedSpan, LightSpan, span_attributes

__all__ = ["ATTRIBUTES", "END", "EVENTS", "NAME", "PARENT_ID", "SPAN_ID", "START", "STATUS", "journalled"]

NAME, SPAN_ID, PARENT_ID, START, END, STATUS, ATTRIBUTES, EVENTS = range(8)


def journalled(spans: list[FinishedSpan]) -> list[list[Any]]:
    """``spans`` (their root last) as the journal carries them. Attribute and event dicts are the spans' own, not
    copies (light spans'; an SDK span's are copied)."""
    error = StatusCode.ERROR
    out = []
    for span in spans:
        parent = span.parent
        status = span.status
        if type(span) is LightSpan:
            attributes = span.attributes
            events: list[list[Any]] = [[e.name, e.timestamp, e.attributes] for e in span.events] if span.events else []
        else:
            attributes = span_attributes(span)
            events = [[e.name, e.timestamp, dict(e.attributes or {})] for e in span.events]
        out.append(
            [
                span.name,
                span.context[1],  # SpanContext is a tuple: (trace_id, span_id, ...)
                None if parent is None else parent[1],
                span.start_time or 0,
                span.end_time or 0,
                None
                if status is UNSET  # most spans: their status was never set (one shared object)
                else ["error" if status.status_code is error else "ok", status.description],
                attributes,
                events,
            ]
        )
    return out
