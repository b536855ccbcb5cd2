"""Anthropic's Messages API wire format (native, not through an OpenAI shim).

Requests: system messages become the ``system`` field; assistant tool calls become ``tool_use`` blocks and ``tool``
messages ``tool_result`` blocks; OpenAI-style tools map to ``name``/``description``/``input_schema``. Streams:
``message_start`` (input tokens), ``content_block_*`` (text and tool-use JSON), ``message_delta`` (stop reason, output
tokens), ``message_stop``; an ``error`` event is a failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from llmops.gateway._types import ChatRequest, Finish, ProviderError, StreamEvent, TextDelta, ToolCallDelta, Usage

__all__ = ["AnthropicMessagesFormat", "to_anthropic_messages"]

_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}
_RETRYABLE_ERRORS = {"overloaded_error", "api_error", "rate_limit_error"}
DEFAULT_MAX_TOKENS = 1024  # the Messages API requires max_tokens


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def to_anthropic_messages(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """OpenAI-shaped messages → (system, Anthropic messages)."""
    system = [_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            continue
        if role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id"),
                "content": _text(message.get("content")),
            }
            out.append({"role": "user", "content": [block]})
            continue
        blocks: list[dict[str, Any]] = []
        text = _text(message.get("content"))
        if text:
            blocks.append({"type": "text", "text": text})
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            arguments = function.get("arguments") or "{}"
            blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                           "input": orjson.loads(arguments) if isinstance(arguments, str) else arguments})  # fmt: skip
        out.append({"role": "assistant" if role == "assistant" else "user", "content": blocks or text})
    return ("\n\n".join(system) or None), out


class AnthropicMessagesFormat:
    """Speaks ``POST {base}/v1/messages`` with ``stream: true``."""

    path = "/v1/messages"

    def body(self, model: str, request: ChatRequest) -> dict[str, Any]:
        system, messages = to_anthropic_messages(request.messages)
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "stream": request.stream,
            "temperature": min(request.temperature, 1.0),  # the Messages API caps temperature at 1
        }
        if request.top_p < 1.0:
            body["top_p"] = request.top_p
        if system:
            body["system"] = system
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        if request.tools:
            body["tools"] = [
                {
                    "name": t["function"]["name"],
                    "description": t["function"].get("description", ""),
                    "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}},
                }
                for t in request.tools
                if t.get("type", "function") == "function"
            ]
        choice = request.tool_choice
        if choice == "required":
            body["tool_choice"] = {"type": "any"}
        elif isinstance(choice, dict) and choice.get("function"):
            body["tool_choice"] = {"type": "tool", "name": choice["function"]["name"]}
        elif choice in ("auto", "none"):
            body["tool_choice"] = {"type": choice}
        if request.user:
            body["metadata"] = {"user_id": request.user}
        return body

    def parse(self, data: dict[str, Any], *, upstream: str, model: str) -> list[StreamEvent]:
        """The events of a whole (non-streamed) message."""
        if data.get("type") == "error":
            error = data.get("error") or {}
            raise ProviderError(f"{upstream} failed: {error.get('type')}: {error.get('message')}",
                                retryable=error.get("type") in _RETRYABLE_ERRORS)  # fmt: skip
        events: list[StreamEvent] = []
        calls = 0
        for block in data.get("content") or []:
            if block.get("type") == "text" and block.get("text"):
                events.append(TextDelta(block["text"]))
            elif block.get("type") == "tool_use":
                arguments = orjson.dumps(block.get("input") or {}).decode()
                events.append(ToolCallDelta(calls, block.get("id"), block.get("name"), arguments))
                calls += 1
        u = data.get("usage") or {}
        cached = int(u.get("cache_read_input_tokens", 0) or 0)
        usage = Usage(int(u.get("input_tokens", 0)) + cached, int(u.get("output_tokens", 0)), False, cached)
        reason = _STOP_REASONS.get(data.get("stop_reason") or "end_turn", data.get("stop_reason") or "stop")
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
        input_tokens = output_tokens = cached = 0
        stop_reason: str | None = None
        response_model = model
        stopped = False
        tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool-call index
        async for event, data in sse:
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise ProviderError(f"{upstream} sent a malformed event: {data[:200]!r}") from exc
            kind = payload.get("type") or event
            if kind == "error":
                error = payload.get("error") or {}
                raise ProviderError(f"{upstream} failed mid-stream: {error.get('type')}: {error.get('message')}",
                                    retryable=error.get("type") in _RETRYABLE_ERRORS)  # fmt: skip
            if kind == "message_start":
                message = payload.get("message") or {}
                response_model = message.get("model") or response_model
                usage = message.get("usage") or {}
                input_tokens = int(usage.get("input_tokens", 0)) + int(usage.get("cache_read_input_tokens", 0) or 0)
                cached = int(usage.get("cache_read_input_tokens", 0) or 0)
                output_tokens = int(usage.get("output_tokens", 0))
            elif kind == "content_block_start":
                block = payload.get("content_block") or {}
                if block.get("type") == "tool_use":
                    index = tool_index.setdefault(int(payload.get("index", 0)), len(tool_index))
                    yield ToolCallDelta(index, block.get("id"), block.get("name"), "")
                elif block.get("text"):
                    yield TextDelta(block["text"])
            elif kind == "content_block_delta":
                delta = payload.get("delta") or {}
                if delta.get("type") == "text_delta" and delta.get("text"):
                    yield TextDelta(delta["text"])
                elif delta.get("type") == "input_json_delta":
                    index = tool_index.setdefault(int(payload.get("index", 0)), len(tool_index))
                    yield ToolCallDelta(index, None, None, delta.get("partial_json") or "")
            elif kind == "message_delta":
                stop_reason = (payload.get("delta") or {}).get("stop_reason") or stop_reason
                output_tokens = int((payload.get("usage") or {}).get("output_tokens", output_tokens))
            elif kind == "message_stop":
                stopped = True
                break
        if not stopped or stop_reason is None:
            raise ProviderError(f"{upstream} ended the stream before the answer was complete", retryable=True)
        usage = Usage(input_tokens, output_tokens, False, cached)
        yield Finish(reason=_STOP_REASONS.get(stop_reason, stop_reason), usage=usage, response_model=response_model)
