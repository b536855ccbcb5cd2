"""Guardrails in the request path: the RAG pipeline's helpers, and gateway calls guarded the same way.

A guarded gateway call has the RAG trace's shape: a root span ``guarded <model>`` with ``guardrails.input``, the
gateway's ``chat <model>`` span and ``guardrails.output`` under it. The input rails see the last user message (the
model gets it redacted or pseudonymised when a rail says so); the output rails see the answer as it streams, and a
violation ends the stream with a `GuardrailStop` instead of the rest of the text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai

from llmops._spans import mark_error
from llmops.gateway import Caller, ChatRequest, ChatResult, Gateway, TextDelta, ToolCallDelta
from llmops.guardrails import GuardrailEngine, Guardrails, GuardResult, span_payload

__all__ = ["GuardedGateway", "GuardrailStop", "record_check"]

# Checks of short texts take well under a millisecond: run them on the event loop, where a hop to a worker thread
# and back would cost more than the check (2.2 ms added per gateway call with the hops, measured at 1 concurrent).
_INLINE_CHARS = 2000


@dataclass(frozen=True)
class GuardrailStop:
    """A rail ended the answer: what to tell the client instead (streams end with it, before the final result)."""

    stage: str
    rail: str
    action: str
    policy: str
    message: str

    @classmethod
    def of(cls, result: GuardResult) -> GuardrailStop:
        return cls(result.stage, result.blocked_by or "", result.action or "block", result.policy, result.message or "")

    def to_dict(self) -> dict[str, str]:
        return {"stage": self.stage, "rail": self.rail, "action": self.action, "policy": self.policy,
                "message": self.message}  # fmt: skip


def record_check(span: trace.Span, result: GuardResult | None) -> None:
    """The check's decisions on ``span``: attributes, and one ``guardrail.decision`` event per rail."""
    if result is None:
        span.set_attributes({"llmops.guardrails.policy": "none", "llmops.guardrails.allowed": True})
        return
    attributes, events = span_payload(result)
    span.set_attributes(attributes)
    for event in events:
        span.add_event("guardrail.decision", event)


class GuardedGateway:
    """Gateway calls with the route's guardrail policy around them (unguarded routes go straight through)."""

    def __init__(self, gateway: Gateway, guardrails: Guardrails, tracer: trace.Tracer) -> None:
        self._gateway = gateway
        self._guardrails = guardrails
        self._tracer = tracer

    async def complete(
        self, request: ChatRequest, *, request_id: str, caller: Caller | None = None
    ) -> ChatResult | GuardrailStop:
        """The whole answer, or the stop of the rail that ended it. An unguarded route takes the gateway's
        whole-answer path (`Gateway.complete`); a guarded one runs the stream the rails read as it comes."""
        engine = self._guardrails.engine(request.model)
        if engine is None:
            return await self._gateway.complete(request, request_id=request_id, caller=caller)
        outcome: ChatResult | GuardrailStop | None = None
        async for event in self._guarded_stream(engine, request, request_id, caller):
            if isinstance(event, ChatResult | GuardrailStop):
                outcome = event
        assert outcome is not None  # the stream ends with a result or a stop, or raises
        return outcome

    async def stream(
        self, request: ChatRequest, *, request_id: str, caller: Caller | None = None
    ) -> AsyncIterator[TextDelta | ToolCallDelta | ChatResult | GuardrailStop]:
        engine = self._guardrails.engine(request.model)
        if engine is None:
            async for plain in self._gateway.stream(request, request_id=request_id, caller=caller):
                yield plain
            return
        async for event in self._guarded_stream(engine, request, request_id, caller):
            yield event

    async def _guarded_stream(
        self, engine: GuardrailEngine, request: ChatRequest, request_id: str, caller: Caller | None
    ) -> AsyncIterator[TextDelta | ToolCallDelta | ChatResult | GuardrailStop]:
        """The stream under ``engine`` (the route's policy, resolved once by the caller), in its root span."""
        root = self._tracer.start_span(f"guarded {request.model}", kind=trace.SpanKind.SERVER)
        root.set_attributes({"llmops.request_id": request_id, genai.GEN_AI_REQUEST_MODEL: request.model})
        ctx = trace.set_span_in_context(root)
        try:
            async for event in self._guarded(engine, request, caller, ctx, root, request_id):
                yield event
        except BaseException as exc:
            mark_error(root, exc)
            raise
        finally:
            root.end()

    async def _guarded(
        self,
        engine: GuardrailEngine,
        request: ChatRequest,
        caller: Caller | None,
        ctx: Context,
        root: trace.Span,
        request_id: str,
    ) -> AsyncIterator[TextDelta | ToolCallDelta | ChatResult | GuardrailStop]:
        position = next((i for i in range(len(request.messages) - 1, -1, -1)
                         if request.messages[i].get("role") == "user"), None)  # fmt: skip
        question = str(request.messages[position].get("content") or "") if position is not None else ""
        with self._tracer.start_as_current_span("guardrails.input", context=ctx) as span:
            user = caller.user if caller else None
            checked = (
                engine.check_input(question, user=user)
                if len(question) <= _INLINE_CHARS
                else await asyncio.to_thread(engine.check_input, question, user=user)
            )
            record_check(span, checked)
        if not checked.allowed:
            root.set_attribute("llmops.guardrails.blocked_by", checked.blocked_by or "")
            yield GuardrailStop.of(checked)
            return
        pseudonymizer = checked.pseudonymizer
        if position is not None and checked.text != question:
            messages = list(request.messages)
            messages[position] = {**messages[position], "content": checked.text}
            request = replace(request, messages=messages)
        system = "\n".join(str(m.get("content") or "") for m in request.messages if m.get("role") == "system")
        supplied = [str(m.get("content") or "") for m in request.messages if m.get("role") == "user"]
        guard = (
            engine.stream(supplied=supplied, system_prompt=system) if engine.has("output") or engine.restores else None
        )
        result: ChatResult | None = None
        stopped: GuardrailStop | None = None
        started = time.perf_counter()
        events = self._gateway.stream(request, context=ctx, request_id=request_id, caller=caller)
        try:
            async for event in events:
                if isinstance(event, ChatResult):
                    result = event
                elif isinstance(event, TextDelta) and guard is not None:
                    step = guard.feed(event.text)
                    if step.text:
                        yield TextDelta(engine.restore(step.text, pseudonymizer))
                    if step.stopped is not None:
                        stopped = GuardrailStop.of(step.stopped)
                        break
                else:
                    yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # stops the upstream when a rail ended the answer
        with self._tracer.start_as_current_span("guardrails.output", context=ctx) as span:
            if guard is not None and stopped is None:
                held = len(guard.released) + len(guard.pending)
                step = guard.finish() if held <= _INLINE_CHARS else await asyncio.to_thread(guard.finish)
                if step.text:
                    yield TextDelta(engine.restore(step.text, pseudonymizer))
                if step.stopped is not None:
                    stopped = GuardrailStop.of(step.stopped)
            if guard is not None:
                record_check(span, guard.result(""))
            span.set_attribute("llmops.guardrails.stream_ms", (time.perf_counter() - started) * 1000)
        if stopped is not None:
            root.set_attribute("llmops.guardrails.blocked_by", stopped.rail)
            yield stopped
            return
        assert result is not None
        if guard is not None:
            result = replace(result, text=engine.restore(guard.released, pseudonymizer))
        yield result
