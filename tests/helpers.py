"""Test helpers: real HTTP servers on loopback, started in a thread or a subprocess."""

from __future__ import annotations

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
    """Serve an ASGI app with uvicorn on a free port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
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


def fake_openai_upstream() -> Starlette:
    """An OpenAI-compatible server whose behaviour is chosen by the model name:

    ``ok`` streams "Hello world" with usage; ``no-usage`` omits the usage chunk; ``fail-500`` answers 500;
    ``cut`` sends two chunks and closes the stream without a finish reason; ``bad-chunk`` sends invalid JSON.
    """

    async def chat(request: Request) -> Response:
        body = await request.json()
        model = body["model"]
        if model == "fail-500":
            return JSONResponse({"error": {"message": "upstream exploded"}}, status_code=500)

        def chunk(delta: dict[str, str], finish: str | None = None) -> str:
            payload = {"model": f"{model}-2026", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(payload)}\n\n"

        async def events() -> AsyncIterator[str]:
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

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
