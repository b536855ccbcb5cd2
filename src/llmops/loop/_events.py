"""Events from finished requests that trigger rules can count: guardrail blocks and failed requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from llmops.observability._tracing import span_attributes, status_name

__all__ = ["RequestEventsProcessor"]


class RequestEventsProcessor(SpanProcessor):
    """Announces ``guardrail_block`` (with the rail and app) and ``request_error`` for each finished request."""

    def __init__(self, notify: Callable[[str, dict[str, Any]], None]) -> None:
        self._notify = notify

    def on_end(self, span: ReadableSpan) -> None:
        parent = span.parent
        if parent is not None and not parent[2]:  # a child span (SpanContext is a tuple; [2] is is_remote)
            return
        if not span.attributes:
            return
        blocked = span.attributes.get("llmops.guardrails.blocked_by")
        error = status_name(span) == "error"
        if not blocked and not error:
            return
        attributes = span_attributes(span)
        app = attributes.get("llmops.rag.app") or attributes.get("llmops.caller.app")
        name = span.name.split(" ", 1)[0]
        if blocked:
            self._notify("guardrail_block", {"rail": blocked, "app": app, "kind": name})
        if error:
            self._notify("request_error", {"app": app, "kind": name, "message": span.status.description or ""})
