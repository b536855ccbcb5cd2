"""OpenAI's chat-completions wire format: the request body, and the server-sent events of a streamed answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from llmops.gateway._types import ChatRequest, Finish, ProviderError, StreamEvent, TextDelta, ToolCallDelta, Usage

__all__ = ["OpenAIChatFormat"]


class OpenAIChatFormat:
    """Speaks ``POST {base}/chat/completions`` with ``stream: true`` and usage in the last chunk."""

    path = "/chat/completions"

    def body(self, model: str, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": request.messages,
            "stream": request.stream,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if request.tools:
            body["tools"] = request.tools
        if request.tool_choice is not None:
            body["tool_choice"] = request.tool_choice
        if request.response_format is not None:
            body["response_format"] = request.response_format
        if request.user:
            body["user"] = request.user
        return body

    def parse(self, data: dict[str, Any], *, upstream: str, model: str) -> list[StreamEvent]:
        """The events of a whole (non-streamed) response."""
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
            u = data["usage"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ProviderError(f"{upstream} sent an incomplete response: {str(data)[:200]}") from exc
        events: list[StreamEvent] = [TextDelta(message["content"])] if message.get("content") else []
        for index, call in enumerate(message.get("tool_calls") or []):
            function = call.get("function") or {}
            events.append(ToolCallDelta(index, call.get("id"), function.get("name"), function.get("arguments") or ""))
        cached = int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        usage = Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)), False, cached)
        reason = choice.get("finish_reason") or "stop"
        events.append(Finish(reason=reason, usage=usage, response_model=data.get("model") or model))
        return events

    async def events(
        self,
        sse: AsyncIterator[tuple[str | None, bytes]],
        *,
        upstream: str,
        model: str,
        estimate: Callable[[str], int],
        prompt_text: str,
    ) -> AsyncIterator[StreamEvent]:
        finish_reason: str | None = None
        usage: Usage | None = None
        response_model = model
        produced: list[str] = []
        async for _event, data in sse:
            if data == b"[DONE]":
                break
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise ProviderError(f"{upstream} sent a malformed stream chunk: {data[:200]!r}") from exc
            if "error" in chunk:
                raise ProviderError(f"{upstream} failed mid-stream: {chunk['error']}")
            response_model = chunk.get("model") or response_model
            if chunk.get("usage"):
                u = chunk["usage"]
                cached = int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
                usage = Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)), False, cached)
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    produced.append(delta["content"])
                    yield TextDelta(delta["content"])
                for call in delta.get("tool_calls") or []:
                    function = call.get("function") or {}
                    yield ToolCallDelta(
                        int(call.get("index", 0)), call.get("id"), function.get("name"), function.get("arguments") or ""
                    )
                finish_reason = choice.get("finish_reason") or finish_reason
        if finish_reason is None:
            raise ProviderError(f"{upstream} ended the stream before the answer was complete", retryable=True)
        if usage is None:
            usage = Usage(estimate(prompt_text), estimate("".join(produced)), estimated=True)
        yield Finish(reason=finish_reason, usage=usage, response_model=response_model)
