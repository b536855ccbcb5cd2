"""``POST /v1/chat/completions``: the gateway's hot path, served as a bare ASGI handler in front of FastAPI.

Every gateway call passes here, so the per-request cost of the web framework (middleware stack, dependency
resolution, response classes) is cut out: the body is parsed with orjson, validated with one pydantic model (errors
in FastAPI's 422 shape, naming the field), and the response written straight to the ASGI ``send``.

A model name that is a RAG app answers the last user message from the knowledge base, with ``citations`` as an extra
field of the response (and of the last stream chunk); any other name goes to the gateway. Both run the route's
guardrail policy: when a rail blocks or replaces the answer, the finish reason is ``content_filter`` (as OpenAI's own
filter reports it) and a ``guardrail`` field says which rail, which action and which policy version. Streams carry
usage in a final chunk when ``stream_options.include_usage`` is set, and a failure after the stream started ends it
with an ``error`` event and no ``[DONE]``.

Every answer carries the AI disclosure headers (``X-LLMOps-AI-Generated``, ``X-LLMOps-AI-Disclosure``). A RAG answer
the app holds for human review comes back as the neutral pending text, with ``status: pending_review`` and the
``review_id`` as extra fields; the answer itself is fetched from ``GET /api/answers/{request_id}`` once released.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from llmops._platform import Platform
from llmops.gateway import (
    Caller,
    ChatRequest,
    ChatResult,
    TextDelta,
    ToolCallDelta,
    UnknownModelError,
    Usage,
    check_base_url,
)
from llmops.governance import Identity
from llmops.rag import AIDisclosure, GuardrailStop, RagAnswer, new_request_id
from llmops.server._shared import (
    GATEWAY_ERRORS,
    ErrorResponse,
    authorization_of,
    caller_from,
    gateway_error,
    openai_error,
    usage_dict,
)

__all__ = ["ChatCompletionRequest", "ChatCompletions"]

PATH = "/v1/chat/completions"


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(p.text or "" for p in self.content if p.type == "text")

    def to_gateway(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        return message


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    base_url: str | None = Field(default=None, description="refused unless the operator allowlisted it")
    api_base: str | None = None

    def to_gateway(self) -> ChatRequest:
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return ChatRequest(
            model=self.model,
            messages=[m.to_gateway() for m in self.messages],
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(stop),
            seed=self.seed,
            tools=self.tools,
            tool_choice=self.tool_choice,
            response_format=self.response_format,
            user=self.user,
            metadata=dict(self.metadata or {}),
            stream=self.stream,
        )


_REQUEST = TypeAdapter(ChatCompletionRequest)


@dataclass(frozen=True)
class _Final:
    """The end of a completion, whichever path produced it."""

    finish_reason: str
    text: str
    usage: Usage | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


_Event = TextDelta | ToolCallDelta | _Final


class ChatCompletions:
    """Serves ``POST /v1/chat/completions`` and hands every other request to ``app``."""

    def __init__(self, app: ASGIApp, platform: Platform) -> None:
        self.app = app
        self.platform = platform
        self._disclosure = AIDisclosure(platform.settings.transparency.disclosure).raw_headers
        self._app_projects = {app.name: app.project for app in platform.settings.rag_apps}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _send_error(send, ErrorResponse(405, {"detail": "Method Not Allowed"}, {"allow": "POST"}))
            return
        body = await _read(receive)
        try:
            request = _REQUEST.validate_python(orjson.loads(body))
        except orjson.JSONDecodeError as exc:
            detail = [{"type": "json_invalid", "loc": ["body", exc.pos], "msg": "JSON decode error", "input": {},
                       "ctx": {"error": exc.msg}}]  # fmt: skip
            await _send_error(send, ErrorResponse(422, {"detail": detail}))
            return
        except ValidationError as exc:
            detail = [{"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"], "input": e.get("input")}
                      for e in exc.errors(include_url=False)]  # fmt: skip
            await _send_error(send, ErrorResponse(422, {"detail": detail}))
            return
        authorization = authorization_of(scope.get("headers") or ())
        identity = scope.get("state", {}).get("identity")
        project = identity.project if isinstance(identity, Identity) else None
        await self._answer(request, authorization, send, project)

    async def _answer(
        self, body: ChatCompletionRequest, authorization: str | None, send: Send, project: str | None = None
    ) -> None:
        """``project``: the caller's (from the access guard); a RAG app of another project is an unknown model."""
        platform = self.platform
        request_id = new_request_id()
        supplied = body.base_url or body.api_base
        try:
            if supplied:
                check_base_url(supplied, allowed=platform.settings.gateway.allowed_base_urls)
                body = body.model_copy(update={"model": platform.gateway.adhoc_alias(supplied, body.model)})
            caller = caller_from(platform, authorization, body.user, body.metadata)
            foreign = project is not None and self._app_projects.get(body.model, project) != project
            if foreign or (body.model not in platform.served_models() and not body.model.startswith("adhoc:")):
                mine = (
                    m
                    for m in platform.served_models()
                    if project is None or self._app_projects.get(m, project) == project
                )
                served = ", ".join(mine)
                raise UnknownModelError(f"unknown model {body.model!r}; served models: {served}")
        except GATEWAY_ERRORS as exc:
            await _send_error(send, gateway_error(exc))
            return
        is_rag = body.model in platform.rag_apps
        if is_rag and not any(m.role == "user" for m in body.messages):
            await _send_error(send, openai_error(400, "a RAG model needs a user message", kind="invalid_request_error"))
            return
        chunks = _Chunks("chatcmpl-" + request_id.removeprefix("req_"), body.model)
        if not body.stream and not is_rag:  # the gateway's whole-answer path: no event stream on the way
            try:
                outcome = await platform.guarded_gateway.complete(
                    body.to_gateway(), request_id=request_id, caller=caller
                )
            except GATEWAY_ERRORS as exc:
                await _send_error(send, gateway_error(exc))
                return
            await self._send_completion(send, chunks, _final_of(outcome, request_id), request_id)
            return
        events = (
            _rag_events(platform, body, request_id) if is_rag else _gateway_events(platform, body, request_id, caller)
        )
        iterator = events.__aiter__()
        final: _Final | None = None
        try:
            # Run up to the first event before answering, so a failure before any output is a plain HTTP error.
            first = await iterator.__anext__()
            if not body.stream:
                final = first if isinstance(first, _Final) else None
                async for event in iterator:
                    if isinstance(event, _Final):
                        final = event
        except GATEWAY_ERRORS as exc:
            await _send_error(send, gateway_error(exc))
            return
        if not body.stream:
            if final is None:  # a stream must end with its result; without one, the answer is not complete
                await _send_error(send, openai_error(502, "the answer ended without finishing", kind="upstream_error"))
                return
            await self._send_completion(send, chunks, final, request_id)
            return
        await _start(send, 200, "text/event-stream", request_id, self._disclosure)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        try:
            async for piece in _sse(first, iterator, chunks, include_usage):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        finally:
            await iterator.aclose()  # type: ignore[attr-defined]  # the client left: stop the upstream too
        await send({"type": "http.response.body", "body": b""})

    async def _send_completion(self, send: Send, chunks: _Chunks, final: _Final, request_id: str) -> None:
        payload = orjson.dumps(chunks.completion(final))
        await _start(send, 200, "application/json", request_id, self._disclosure, len(payload))
        await send({"type": "http.response.body", "body": payload})


async def _read(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _start(
    send: Send,
    status: int,
    content_type: str,
    request_id: str,
    extra: list[tuple[bytes, bytes]],
    length: int | None = None,
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"x-request-id", request_id.encode()), *extra]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    else:
        headers.append((b"cache-control", b"no-cache"))
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _send_error(send: Send, error: ErrorResponse) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(error.body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": error.body})


async def _rag_events(platform: Platform, body: ChatCompletionRequest, request_id: str) -> AsyncIterator[_Event]:
    question = next(m.text() for m in reversed(body.messages) if m.role == "user")
    async for event in platform.rag(body.model).stream(question, request_id=request_id, user=body.user):
        if isinstance(event, RagAnswer):
            extra: dict[str, Any] = {"request_id": request_id, "citations": [asdict(c) for c in event.citations]}
            if event.grounding_score is not None:
                extra["grounding_score"] = event.grounding_score
            if event.status == "pending_review":
                extra.update(status=event.status, review_id=event.review_id)
            finish = "stop"
            if event.guardrail is not None:
                finish, extra["guardrail"] = "content_filter", event.guardrail.to_dict()
            yield _Final(finish, event.answer, event.usage, [], extra)
        elif not isinstance(event, GuardrailStop):  # the answer that follows carries it
            yield event


async def _gateway_events(
    platform: Platform, body: ChatCompletionRequest, request_id: str, caller: Caller
) -> AsyncIterator[_Event]:
    async for event in platform.guarded_gateway.stream(body.to_gateway(), request_id=request_id, caller=caller):
        if isinstance(event, GuardrailStop):
            if event.stage == "input":
                yield TextDelta(event.message)
            yield _final_of(event, request_id)
            return
        yield _final_of(event, request_id) if isinstance(event, ChatResult) else event


def _final_of(outcome: ChatResult | GuardrailStop, request_id: str) -> _Final:
    """The end of a gateway answer: its result, or the stop of the rail that ended it (``content_filter``)."""
    if isinstance(outcome, GuardrailStop):
        return _Final("content_filter", outcome.message, None, [], {"request_id": request_id,
                                                                    "guardrail": outcome.to_dict()})  # fmt: skip
    extra: dict[str, Any] = {"request_id": request_id}
    if outcome.cache_hit:
        extra["cache_hit"] = outcome.cache_hit
    return _Final(outcome.finish_reason, outcome.text, outcome.usage, outcome.tool_calls, extra)


class _Chunks:
    """Builds OpenAI response objects for one completion."""

    def __init__(self, completion_id: str, model: str) -> None:
        self.id = completion_id
        self.model = model
        self.created = int(time.time())

    def _base(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def completion(self, final: _Final) -> dict[str, Any]:
        # The final text is the answer: for RAG it may differ from the streamed text (output rails, trimming).
        message: dict[str, Any] = {"role": "assistant", "content": final.text or (None if final.tool_calls else "")}
        if final.tool_calls:
            message["tool_calls"] = final.tool_calls
        return {
            **self._base("chat.completion"),
            "choices": [{"index": 0, "message": message, "finish_reason": final.finish_reason}],
            "usage": usage_dict(final.usage),
            **final.extra,
        }

    def delta(self, event: TextDelta | ToolCallDelta, *, first: bool) -> dict[str, Any]:
        delta: dict[str, Any]
        if isinstance(event, TextDelta):
            delta = {"content": event.text}
        else:
            call: dict[str, Any] = {"index": event.index, "function": {"arguments": event.arguments}}
            if event.id:
                call["id"], call["type"] = event.id, "function"
            if event.name:
                call["function"]["name"] = event.name
            delta = {"tool_calls": [call]}
        if first:
            delta["role"] = "assistant"
        return {**self._base("chat.completion.chunk"), "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}

    def finish(self, final: _Final) -> dict[str, Any]:
        return {
            **self._base("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": {}, "finish_reason": final.finish_reason}],
            **final.extra,
        }

    def usage_chunk(self, final: _Final) -> dict[str, Any]:
        return {**self._base("chat.completion.chunk"), "choices": [], "usage": usage_dict(final.usage)}


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _sse(
    first: _Event, rest: AsyncIterator[_Event], chunks: _Chunks, include_usage: bool
) -> AsyncIterator[bytes]:
    """Server-sent events. A failure after the stream started ends it with an error event and no ``[DONE]``."""
    is_first = True

    async def events() -> AsyncIterator[_Event]:
        yield first
        async for event in rest:
            yield event

    try:
        async for event in events():
            if isinstance(event, _Final):
                yield _data(chunks.finish(event))
                if include_usage:
                    yield _data(chunks.usage_chunk(event))
            else:
                yield _data(chunks.delta(event, first=is_first))
                is_first = False
        yield b"data: [DONE]\n\n"
    except GATEWAY_ERRORS as exc:
        yield _data({"error": {"message": str(exc), "type": "upstream_error", "code": None}})
