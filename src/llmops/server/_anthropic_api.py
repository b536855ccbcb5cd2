"""An Anthropic-compatible surface, ``POST /v1/messages``, so the ``anthropic`` SDK works against llmops unchanged.

Requests are translated to the gateway's chat shape (system, text and tool blocks, tools), answered by any model the
gateway serves, and returned as an Anthropic message or as its server-sent events, with the AI disclosure headers.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from llmops._platform import Platform
from llmops.gateway import (
    AuthenticationError,
    ChatRequest,
    ChatResult,
    LimitExceededError,
    ProviderError,
    TextDelta,
    ToolCallDelta,
    UnknownModelError,
)
from llmops.rag import AIDisclosure, GuardrailStop, new_request_id
from llmops.server._shared import caller_from

__all__ = ["anthropic_router"]

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ERRORS = (ProviderError, UnknownModelError, LimitExceededError, AuthenticationError)


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool = False
    temperature: float = Field(default=0.0, ge=0.0, le=1.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop_sequences: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None

    def to_gateway(self) -> ChatRequest:
        messages: list[dict[str, Any]] = []
        if self.system:
            system = self.system if isinstance(self.system, str) else "".join(b.get("text", "") for b in self.system)
            messages.append({"role": "system", "content": system})
        for message in self.messages:
            messages.extend(_from_anthropic(message))
        tools = [
            {"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                              "parameters": t.get("input_schema", {})}}
            for t in self.tools or []
        ]  # fmt: skip
        choice: Any = None
        if self.tool_choice:
            kind = str(self.tool_choice.get("type"))
            choice = {"any": "required", "auto": "auto", "none": "none"}.get(kind) or {
                "type": "function", "function": {"name": self.tool_choice.get("name")}}  # fmt: skip
        user = (self.metadata or {}).get("user_id")
        return ChatRequest(
            model=self.model,
            messages=messages,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(self.stop_sequences or ()),
            tools=tools or None,
            tool_choice=choice,
            user=user,
        )


def _from_anthropic(message: dict[str, Any]) -> list[dict[str, Any]]:
    role, content = message.get("role"), message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    text = "".join(b.get("text", "") for b in content or [] if b.get("type") == "text")
    calls = [
        {
            "id": b["id"],
            "type": "function",
            "function": {"name": b["name"], "arguments": orjson.dumps(b.get("input", {})).decode()},
        }
        for b in content or []
        if b.get("type") == "tool_use"
    ]
    results = [
        {"role": "tool", "tool_call_id": b["tool_use_id"], "content": _block_text(b.get("content"))}
        for b in content or []
        if b.get("type") == "tool_result"
    ]
    out: list[dict[str, Any]] = [*results]
    if text or calls or not results:
        entry: dict[str, Any] = {"role": role, "content": text}
        if calls:
            entry["tool_calls"] = calls
        out.append(entry)
    return out


def _block_text(content: Any) -> str:
    return content if isinstance(content, str) else "".join(x.get("text", "") for x in content or [])


def _error(exc: Exception) -> JSONResponse:
    status, kind = 500, "api_error"
    if isinstance(exc, LimitExceededError):
        status, kind = 429, "rate_limit_error"
    elif isinstance(exc, AuthenticationError):
        status, kind = 401, "authentication_error"
    elif isinstance(exc, UnknownModelError):
        status, kind = 404, "not_found_error"
    elif isinstance(exc, ProviderError):
        status, kind = (400, "invalid_request_error") if exc.status in (400, 413, 422) else (502, "api_error")
    return JSONResponse({"type": "error", "error": {"type": kind, "message": str(exc)}}, status_code=status)


def _content(result: ChatResult) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": result.text}] if result.text else []
    for call in result.tool_calls:
        arguments = call["function"]["arguments"] or "{}"
        blocks.append({"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
                       "input": orjson.loads(arguments)})  # fmt: skip
    return blocks


def _ending(end: ChatResult | GuardrailStop, block: int, open_kind: str | None) -> list[bytes]:
    """The last events: the stop reason and usage, or for a guardrail stop the reason ``refusal`` (with the policy's
    message when nothing was said yet)."""
    if isinstance(end, ChatResult):
        finish = {"stop_reason": _STOP.get(end.finish_reason, "end_turn"), "stop_sequence": None}
        usage = {"output_tokens": end.usage.output_tokens, "input_tokens": end.usage.input_tokens}
        closing = [_event("content_block_stop", {"index": block})] if open_kind is not None else []
        return [*closing, _event("message_delta", {"delta": finish, "usage": usage}), _event("message_stop", {})]
    stop = end
    events = []
    if stop.stage == "input":
        block, open_kind = block + 1, "text"
        events.append(_event("content_block_start", {"index": block, "content_block": {"type": "text", "text": ""}}))
        delta = {"type": "text_delta", "text": stop.message}
        events.append(_event("content_block_delta", {"index": block, "delta": delta}))
    if open_kind is not None:
        events.append(_event("content_block_stop", {"index": block}))
    refusal = {"stop_reason": "refusal", "stop_sequence": None}
    ending = {"delta": refusal, "usage": {"output_tokens": 0}, "guardrail": stop.to_dict()}
    events.append(_event("message_delta", ending))
    events.append(_event("message_stop", {}))
    return events


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **payload}) + b"\n\n"


def anthropic_router(platform: Platform) -> APIRouter:
    router = APIRouter(prefix="/v1")
    disclosure = AIDisclosure(platform.settings.transparency.disclosure)

    @router.post("/messages", response_model=None)
    async def messages(body: MessagesRequest, http: Request) -> Response:
        request_id = new_request_id()
        message_id = "msg_" + request_id.removeprefix("req_")
        try:
            caller = caller_from(platform, http.headers.get("authorization"), body.to_gateway().user, None)
            if body.model not in platform.gateway.model_names():
                raise UnknownModelError(
                    f"unknown model {body.model!r}; served: {', '.join(platform.gateway.model_names())}"
                )
        except _ERRORS as exc:
            return _error(exc)
        stream = platform.guarded_gateway.stream(body.to_gateway(), request_id=request_id, caller=caller)
        headers = {"x-request-id": request_id, **disclosure.headers}
        if not body.stream:
            try:
                result = next(e for e in [e async for e in stream] if isinstance(e, ChatResult | GuardrailStop))
            except _ERRORS as exc:
                return _error(exc)
            if isinstance(result, GuardrailStop):  # Anthropic's own classifiers report "refusal"
                return Response(orjson.dumps({
                    "id": message_id, "type": "message", "role": "assistant", "model": body.model,
                    "content": [{"type": "text", "text": result.message}], "stop_reason": "refusal",
                    "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
                    "guardrail": result.to_dict(),
                }), media_type="application/json", headers=headers)  # fmt: skip
            return Response(orjson.dumps({
                "id": message_id, "type": "message", "role": "assistant", "model": body.model,
                "content": _content(result), "stop_reason": _STOP.get(result.finish_reason, "end_turn"),
                "stop_sequence": None,
                "usage": {"input_tokens": result.usage.input_tokens, "output_tokens": result.usage.output_tokens},
            }), media_type="application/json", headers=headers)  # fmt: skip
        iterator = stream.__aiter__()
        try:
            first = await iterator.__anext__()
        except _ERRORS as exc:
            return _error(exc)
        return StreamingResponse(_sse(first, iterator, message_id, body.model), media_type="text/event-stream",
                                 headers=headers)  # fmt: skip

    return router


async def _sse(first: Any, rest: AsyncIterator[Any], message_id: str, model: str) -> AsyncIterator[bytes]:
    """Anthropic's event sequence; a failure mid-stream ends it with an ``error`` event and no ``message_stop``."""
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    yield _event("message_start", {"message": message})
    block = -1
    open_kind: str | None = None
    tool_blocks: dict[int, int] = {}

    async def events() -> AsyncIterator[Any]:
        yield first
        async for event in rest:
            yield event

    try:
        async for event in events():
            if isinstance(event, TextDelta):
                if open_kind != "text":
                    if open_kind is not None:
                        yield _event("content_block_stop", {"index": block})
                    block, open_kind = block + 1, "text"
                    yield _event("content_block_start", {"index": block, "content_block": {"type": "text", "text": ""}})
                yield _event(
                    "content_block_delta", {"index": block, "delta": {"type": "text_delta", "text": event.text}}
                )
            elif isinstance(event, ToolCallDelta):
                if event.index not in tool_blocks:
                    if open_kind is not None:
                        yield _event("content_block_stop", {"index": block})
                    block, open_kind = block + 1, "tool"
                    tool_blocks[event.index] = block
                    start = {"type": "tool_use", "id": event.id or f"toolu_{secrets.token_hex(8)}",
                             "name": event.name or "", "input": {}}  # fmt: skip
                    yield _event("content_block_start", {"index": block, "content_block": start})
                if event.arguments:
                    yield _event("content_block_delta", {"index": tool_blocks[event.index],
                                 "delta": {"type": "input_json_delta", "partial_json": event.arguments}})  # fmt: skip
            elif isinstance(event, ChatResult | GuardrailStop):
                for piece in _ending(event, block, open_kind):
                    yield piece
    except _ERRORS as exc:
        yield _event("error", {"error": {"type": "api_error", "message": str(exc)}})
