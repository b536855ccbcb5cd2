"""One way to mark a span as failed, shared by every package that opens spans."""

from __future__ import annotations

from opentelemetry import trace

__all__ = ["mark_error"]


def mark_error(span: trace.Span, exc: BaseException) -> None:
    """Set the span's status to ERROR with the message, and record the exception (not for cancellations)."""
    span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)[:500]))
    if isinstance(exc, Exception):
        span.record_exception(exc)
