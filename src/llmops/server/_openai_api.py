"""The OpenAI-compatible surface: ``/v1/models`` and ``/v1/chat/completions`` (streamed and not).

A model name that is a RAG app answers the last user message from the knowledge base, with ``citations`` as an extra
field of the response (and of the last stream chunk); any other name goes straight to the gateway.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from llmops._platform import Platform
from llmops.gateway import ChatRequest, ChatResult, ProviderError, TextDelta, UnknownModelError, Usage
from llmops.rag import RagAnswer, new_request_id

__all__ = ["openai_router"]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


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

    def to_gateway(self) -> ChatRequest:
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return ChatRequest(
            model=self.model,
            messages=[
                {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages
            ],
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(stop),
            seed=self.seed,
        )


@dataclass(frozen=True)
class _Final:
    """The end of a completion, whichever path produced it."""

    finish_reason: str
    text: str
    usage: Usage | None
    extra: dict[str, Any] = field(default_factory=dict)


def openai_error(status: int, message: str, *, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)


def openai_router(platform: Platform) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/models")
    async def list_models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "llmops"} for name in platform.served_models()
            ],
        }

    @router.post("/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, http: Request) -> JSONResponse | StreamingResponse:
        request_id = new_request_id()
        completion_id = "chatcmpl-" + request_id.removeprefix("req_")
        if body.model not in platform.served_models():
            return openai_error(
                404,
                f"unknown model {body.model!r}; served models: {', '.join(platform.served_models())}",
                kind="invalid_request_error",
                code="model_not_found",
            )
        is_rag = body.model in platform.rag_apps
        if is_rag and not any(m.role == "user" for m in body.messages):
            return openai_error(400, "a RAG model needs a user message to answer", kind="invalid_request_error")
        events = _rag_events(platform, body, request_id) if is_rag else _gateway_events(platform, body, request_id)
        chunks = _Chunks(completion_id, body.model)
        headers = {"x-request-id": request_id}
        if body.stream:
            return StreamingResponse(_sse(events, chunks, body), media_type="text/event-stream", headers=headers)
        try:
            final = _Final("stop", "", None)
            async for event in events:
                if isinstance(event, _Final):
                    final = event
        except ProviderError as exc:
            return openai_error(exc.status if exc.status == 400 else 502, str(exc), kind="upstream_error")
        except UnknownModelError as exc:
            return openai_error(404, str(exc), kind="invalid_request_error", code="model_not_found")
        return JSONResponse(chunks.completion(final), headers=headers)

    return router


_Event = TextDelta | _Final


async def _rag_events(platform: Platform, body: ChatCompletionRequest, request_id: str) -> AsyncIterator[_Event]:
    question = next(m.text() for m in reversed(body.messages) if m.role == "user")
    async for event in platform.rag(body.model).stream(question, request_id=request_id):
        if isinstance(event, RagAnswer):
            citations = [asdict(c) for c in event.citations]
            yield _Final("stop", event.answer, event.usage, {"request_id": request_id, "citations": citations})
        else:
            yield event


async def _gateway_events(platform: Platform, body: ChatCompletionRequest, request_id: str) -> AsyncIterator[_Event]:
    async for event in platform.gateway.stream(body.to_gateway(), request_id=request_id):
        if isinstance(event, ChatResult):
            yield _Final(event.finish_reason, event.text, event.usage, {"request_id": request_id})
        else:
            yield event


class _Chunks:
    """Builds OpenAI response objects for one completion."""

    def __init__(self, completion_id: str, model: str) -> None:
        self.id = completion_id
        self.model = model
        self.created = int(time.time())

    def _base(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    @staticmethod
    def usage(final: _Final) -> dict[str, int]:
        usage = final.usage
        if usage is None:
            return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        return {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
        }

    def completion(self, final: _Final) -> dict[str, Any]:
        # The final text is the answer: for RAG it may differ from the streamed text (output rails, trimming).
        return {
            **self._base("chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": final.text},
                    "finish_reason": final.finish_reason,
                }
            ],
            "usage": self.usage(final),
            **final.extra,
        }

    def delta(self, text: str, *, first: bool) -> dict[str, Any]:
        delta: dict[str, str] = {"content": text}
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
        return {**self._base("chat.completion.chunk"), "choices": [], "usage": self.usage(final)}


def _data(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _sse(events: AsyncIterator[_Event], chunks: _Chunks, body: ChatCompletionRequest) -> AsyncIterator[str]:
    """Server-sent events. A failure after the stream started ends it with an error event and no ``[DONE]``."""
    first = True
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                yield _data(chunks.delta(event.text, first=first))
                first = False
            else:
                yield _data(chunks.finish(event))
                if body.stream_options is not None and body.stream_options.include_usage:
                    yield _data(chunks.usage_chunk(event))
        yield "data: [DONE]\n\n"
    except (ProviderError, UnknownModelError) as exc:
        yield _data({"error": {"message": str(exc), "type": "upstream_error", "code": None}})
