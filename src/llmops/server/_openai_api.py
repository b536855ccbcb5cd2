"""The OpenAI-compatible surface: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``.

A model name that is a RAG app answers the last user message from the knowledge base, with ``citations`` as an extra
field of the response (and of the last stream chunk); any other name goes to the gateway. Streams carry usage in a
final chunk when ``stream_options.include_usage`` is set, and a failure after the stream started ends it with an
``error`` event and no ``[DONE]``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from llmops._platform import Platform
from llmops.gateway import (
    AuthenticationError,
    Caller,
    ChatRequest,
    ChatResult,
    LimitExceededError,
    ProviderError,
    TextDelta,
    ToolCallDelta,
    UnknownModelError,
    Usage,
    check_base_url,
    identify,
)
from llmops.rag import RagAnswer, new_request_id

__all__ = ["caller_of", "gateway_error", "openai_router"]


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
        )


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    user: str | None = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str | list[str] = Field(min_length=1)
    user: str | None = None
    encoding_format: Literal["float", "base64"] = "float"  # the openai SDK asks for base64 (float32 bytes)


@dataclass(frozen=True)
class _Final:
    """The end of a completion, whichever path produced it."""

    finish_reason: str
    text: str
    usage: Usage | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def openai_error(
    status: int, message: str, *, kind: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": code}}, status_code=status, headers=headers
    )


def gateway_error(exc: Exception) -> JSONResponse:
    """The OpenAI-shaped error response for a gateway failure."""
    if isinstance(exc, LimitExceededError):
        return openai_error(429, str(exc), kind="rate_limit_exceeded", code="rate_limit_exceeded",
                            headers={"retry-after": str(exc.retry_after)})  # fmt: skip
    if isinstance(exc, AuthenticationError):
        return openai_error(401, str(exc), kind="authentication_error", code="invalid_api_key")
    if isinstance(exc, UnknownModelError):
        return openai_error(404, str(exc), kind="invalid_request_error", code="model_not_found")
    if isinstance(exc, ProviderError) and exc.status in (400, 413, 422):
        return openai_error(400, str(exc), kind="invalid_request_error")
    return openai_error(502, str(exc), kind="upstream_error")


def caller_of(platform: Platform, http: Request, user: str | None, metadata: dict[str, str] | None) -> Caller:
    authorization = http.headers.get("authorization", "")
    bearer = authorization[7:].strip() if authorization.lower().startswith("bearer ") else None
    gateway = platform.settings.gateway
    return identify(bearer, gateway.api_keys, require_key=gateway.require_api_key, user=user, metadata=metadata)


def openai_router(platform: Platform) -> APIRouter:  # noqa: C901 - one closure per route
    router = APIRouter(prefix="/v1")

    @router.get("/models")
    async def list_models() -> dict[str, Any]:
        names = [*platform.served_models(), *platform.gateway.embedding_model_names()]
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "llmops"} for n in names],
        }

    @router.post("/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, http: Request) -> Response:
        request_id = new_request_id()
        supplied = body.base_url or body.api_base
        try:
            if supplied:
                check_base_url(supplied, allowed=platform.settings.gateway.allowed_base_urls)
                body = body.model_copy(update={"model": platform.gateway.adhoc_alias(supplied, body.model)})
            caller = caller_of(platform, http, body.user, body.metadata)
        except (ProviderError, AuthenticationError) as exc:
            return gateway_error(exc)
        if body.model not in platform.served_models() and not body.model.startswith("adhoc:"):
            return gateway_error(UnknownModelError(
                f"unknown model {body.model!r}; served models: {', '.join(platform.served_models())}"))  # fmt: skip
        is_rag = body.model in platform.rag_apps
        if is_rag and not any(m.role == "user" for m in body.messages):
            return openai_error(400, "a RAG model needs a user message to answer", kind="invalid_request_error")
        events = (
            _rag_events(platform, body, request_id)
            if is_rag
            else _gateway_events(platform, body.to_gateway(), request_id, caller)
        )
        chunks = _Chunks("chatcmpl-" + request_id.removeprefix("req_"), body.model)
        headers = {"x-request-id": request_id}
        if body.stream:
            # Run the stream up to its first event here, so an error before any output is a plain HTTP error.
            iterator = events.__aiter__()
            try:
                first = await iterator.__anext__()
            except (ProviderError, UnknownModelError, LimitExceededError) as exc:
                return gateway_error(exc)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_sse(first, iterator, chunks, include_usage), media_type="text/event-stream",
                                     headers=headers)  # fmt: skip
        try:
            final = _Final("stop", "", None)
            async for event in events:
                if isinstance(event, _Final):
                    final = event
        except (ProviderError, UnknownModelError, LimitExceededError) as exc:
            return gateway_error(exc)
        return Response(orjson.dumps(chunks.completion(final)), media_type="application/json", headers=headers)

    @router.post("/completions", response_model=None)
    async def completions(body: CompletionRequest, http: Request) -> Response:
        """The legacy completions API, answered by the chat model with the prompt as one user message."""
        if isinstance(body.prompt, list) and len(body.prompt) != 1:
            return openai_error(400, "one prompt per request", kind="invalid_request_error")
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        stop = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
        request = ChatRequest(
            model=body.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=tuple(stop),
            user=body.user,
        )
        request_id = new_request_id()
        try:
            caller = caller_of(platform, http, body.user, None)
            result = await platform.gateway.complete(request, request_id=request_id, caller=caller)
        except (ProviderError, UnknownModelError, LimitExceededError, AuthenticationError) as exc:
            return gateway_error(exc)
        return JSONResponse(
            {
                "id": "cmpl-" + request_id.removeprefix("req_"),
                "object": "text_completion",
                "created": int(time.time()),
                "model": body.model,
                "choices": [{"index": 0, "text": result.text, "finish_reason": result.finish_reason, "logprobs": None}],
                "usage": _usage(result.usage),
            },
            headers={"x-request-id": request_id},
        )

    @router.post("/embeddings", response_model=None)
    async def embeddings(body: EmbeddingRequest, http: Request) -> Response:
        texts = [body.input] if isinstance(body.input, str) else body.input
        try:
            caller_of(platform, http, body.user, None)
            result = await platform.gateway.embed(body.model, texts)
        except (ProviderError, UnknownModelError, AuthenticationError) as exc:
            return gateway_error(exc)
        return Response(
            orjson.dumps(
                {
                    "object": "list",
                    "data": [
                        {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                        for i, v in enumerate(result.vectors)
                    ],
                    "model": body.model,
                    "usage": {"prompt_tokens": result.input_tokens, "total_tokens": result.input_tokens},
                }
            ),
            media_type="application/json",
        )

    return router


_Event = TextDelta | ToolCallDelta | _Final


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector


async def _rag_events(platform: Platform, body: ChatCompletionRequest, request_id: str) -> AsyncIterator[_Event]:
    question = next(m.text() for m in reversed(body.messages) if m.role == "user")
    async for event in platform.rag(body.model).stream(question, request_id=request_id, user=body.user):
        if isinstance(event, RagAnswer):
            citations = [asdict(c) for c in event.citations]
            yield _Final("stop", event.answer, event.usage, [], {"request_id": request_id, "citations": citations})
        else:
            yield event


async def _gateway_events(
    platform: Platform, request: ChatRequest, request_id: str, caller: Caller
) -> AsyncIterator[_Event]:
    async for event in platform.gateway.stream(request, request_id=request_id, caller=caller):
        if isinstance(event, ChatResult):
            extra: dict[str, Any] = {"request_id": request_id}
            if event.cache_hit:
                extra["cache_hit"] = event.cache_hit
            yield _Final(event.finish_reason, event.text, event.usage, event.tool_calls, extra)
        else:
            yield event


def _usage(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


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
            "usage": _usage(final.usage),
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
        return {**self._base("chat.completion.chunk"), "choices": [], "usage": _usage(final.usage)}


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
    except (ProviderError, UnknownModelError, LimitExceededError) as exc:
        yield _data({"error": {"message": str(exc), "type": "upstream_error", "code": None}})
