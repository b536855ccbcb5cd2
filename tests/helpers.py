"""Test helpers: real HTTP servers on loopback, started in a thread or a subprocess."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmops.server import uvicorn_options


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up in {timeout} s")


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free port, as ``llmops up`` does; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_options()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("test server did not start")
            time.sleep(0.01)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class FakeUpstream:
    """An OpenAI-compatible and Anthropic-compatible server whose behaviour is chosen by the model name.

    ``ok`` answers "Hello world" (2 tokens) with usage; ``no-usage`` omits usage; ``fail-500`` / ``overloaded`` answer
    500 / 529; ``bad-request`` answers 400; ``cut`` sends two pieces and closes without finishing; ``bad-chunk``
    sends invalid JSON; ``stall`` waits 2 s before the first token; ``hang`` waits 2 s before answering at all;
    ``flaky`` fails with 503 on the first two requests, then answers; ``tools`` calls a tool; ``error-event``
    (Anthropic) sends an error event mid-stream. ``requests`` counts requests per model; ``bodies`` keeps the last
    body per model.
    """

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.bodies: dict[str, dict[str, Any]] = {}
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/messages", self._anthropic, methods=["POST"]),
            ]
        )

    async def _common(self, request: Request) -> tuple[dict[str, Any], str, Response | None]:
        body = await request.json()
        model = body["model"]
        self.requests[model] = self.requests.get(model, 0) + 1
        self.bodies[model] = body
        if model == "fail-500" or (model == "flaky" and self.requests[model] <= 2):
            return (
                body,
                model,
                JSONResponse(
                    {"error": {"message": "upstream exploded"}}, status_code=500 if model == "fail-500" else 503
                ),
            )
        if model == "overloaded":
            return body, model, JSONResponse({"type": "error", "error": {"type": "overloaded_error"}}, status_code=529)
        if model == "bad-request":
            return body, model, JSONResponse({"error": {"message": "messages: field required"}}, status_code=400)
        if model == "hang":
            await asyncio.sleep(2)
        return body, model, None

    async def _openai(self, request: Request) -> Response:
        body, model, early = await self._common(request)
        if early is not None:
            return early
        if not body.get("stream"):
            return await self._openai_whole(model)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            payload = {"model": f"{model}-2026", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(payload)}\n\n"

        async def events() -> AsyncIterator[str]:
            if model == "stall":
                await asyncio.sleep(2)
            if model == "tools":
                call = {"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": '}}  # fmt: skip
                yield chunk({"role": "assistant", "tool_calls": [call]})
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]})
                yield chunk({}, "tool_calls")
            else:
                yield chunk({"role": "assistant", "content": "Hello"})
                yield chunk({"content": " world"})
                if model == "cut":
                    return
                if model == "bad-chunk":
                    yield "data: {not json\n\n"
                    return
                yield chunk({}, "stop")
            if model != "no-usage" and body.get("stream_options", {}).get("include_usage"):
                usage = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
                yield f"data: {json.dumps({'model': f'{model}-2026', 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _openai_whole(self, model: str) -> Response:
        if model in ("stall", "hang"):
            await asyncio.sleep(2)
        if model in ("cut", "bad-chunk"):
            return Response(b'{"choices": [{"message": {"content": "Hel', media_type="application/json")
        message: dict[str, Any] = {"role": "assistant", "content": "Hello world"}
        finish = "stop"
        if model == "tools":
            call = {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
            message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        usage = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
        return JSONResponse(
            {
                "id": "x",
                "object": "chat.completion",
                "model": f"{model}-2026",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }
        )

    async def _embeddings(self, request: Request) -> Response:
        body = await request.json()
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.0]} for i, t in enumerate(texts)
        ]
        return JSONResponse(
            {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 7, "total_tokens": 7}}
        )

    async def _anthropic(self, request: Request) -> Response:
        body, model, early = await self._common(request)
        if early is not None:
            return early
        assert request.headers.get("anthropic-version"), "the Messages API needs an anthropic-version header"
        if not body.get("stream"):
            if model == "stall":
                await asyncio.sleep(2)
            content: list[dict[str, Any]] = [{"type": "text", "text": "Hello world"}]
            stop_reason = "end_turn"
            if model == "tools":
                content = [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]
                stop_reason = "tool_use"
            if model == "error-event":
                return JSONResponse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            return JSONResponse(
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": f"{model}-2026",
                    "content": content,
                    "stop_reason": stop_reason,
                    "usage": {"input_tokens": 12, "output_tokens": 2},
                }
            )

        def event(kind: str, payload: dict[str, Any]) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n"

        async def events() -> AsyncIterator[str]:
            if model == "stall":
                await asyncio.sleep(2)
            message = {"id": "msg_1", "type": "message", "role": "assistant", "model": f"{model}-2026", "content": [],
                       "usage": {"input_tokens": 12, "output_tokens": 1}}  # fmt: skip
            yield event("message_start", {"message": message})
            if model == "tools":
                block = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
                yield event("content_block_start", {"index": 0, "content_block": block})
                yield event(
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"city": "Oslo"}'}},
                )
                stop = "tool_use"
            else:
                yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
                yield event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hello"}})
                if model == "error-event":
                    yield event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
                    return
                yield event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": " world"}})
                if model == "cut":
                    return
                stop = "end_turn"
            yield event("content_block_stop", {"index": 0})
            yield event("message_delta", {"delta": {"stop_reason": stop}, "usage": {"output_tokens": 2}})
            yield event("message_stop", {})

        return StreamingResponse(events(), media_type="text/event-stream")


def fake_openai_upstream() -> Starlette:
    return FakeUpstream().app


def recent_trace(platform: Any, timeout: float = 10.0) -> dict[str, Any]:
    """The newest trace. A streamed request's spans end after its last chunk reached the client, so wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        traces = platform.traces.recent(1)
        if traces or time.monotonic() > deadline:
            (trace,) = traces
            return dict(trace)
        time.sleep(0.05)
