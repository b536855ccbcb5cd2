"""What the access guard adds to a request: the guard in front of a do-nothing app, against the app alone.

Cases: the chat-completions hot path with no key (keys not required), with a stored key (verified from memory after
the first request), and an id route (``GET /api/prompts/{name}``) with a key (its owner remembered after one read).

    .venv/bin/python bench/access_guard.py [--requests 20000]

Prints a table, then one JSON object: ``guard_us_no_key``, ``guard_us_key``, ``guard_us_key_object``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from llmops import Platform, Settings
from llmops.server._access_guard import AccessGuard
from llmops.server._access_rules import ObjectResolver
from llmops.server._app import _fastapi
from llmops.testing import HashEmbedder, ScriptedProvider


async def _nothing(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _send(_message: Message) -> None:
    return None


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _scope(method: str, path: str, key: str | None) -> dict[str, Any]:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    return {"type": "http", "method": method, "path": path, "headers": headers, "state": {}}


async def _time(app: Any, method: str, path: str, key: str | None, n: int) -> float:
    """Median of 5 runs of the mean µs per request."""
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n // 5):
            await app(_scope(method, path, key), _receive, _send)
        runs.append((time.perf_counter() - started) / (n // 5) * 1e6)
    return statistics.median(runs)


async def _measure(platform: Platform, key: str, n: int) -> dict[str, float]:
    api = _fastapi(platform)
    resolver = ObjectResolver(platform.store, platform.access.ownership, platform.settings)
    guard = AccessGuard(_nothing, routes=api.routes, access=platform.access, resolver=resolver,
                        journal=platform.journal, keys_required=False)  # fmt: skip
    cases = {
        "guard_us_no_key": ("POST", "/v1/chat/completions", None, n),
        "guard_us_key": ("POST", "/v1/chat/completions", key, n),
        "guard_us_key_object": ("GET", "/api/prompts/rag-default", key, n // 10),
    }
    figures = {}
    for name, (method, path, bearer, count) in cases.items():
        await guard(_scope(method, path, bearer), _receive, _send)  # warm the caches
        with_guard = await _time(guard, method, path, bearer, count)
        alone = await _time(_nothing, method, path, bearer, count)
        figures[name] = round(with_guard - alone, 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        platform = Platform(Settings(data_dir=Path(tmp)), embedder=HashEmbedder(),
                            providers={"smollm2-135m-instruct": ScriptedProvider("ok")})  # fmt: skip
        try:
            platform.access.principals.add("bench", by="bench")
            platform.roles.grant("bench", "admin", by="bench", project="default")
            _record, key = platform.access.keys.create("bench", "default", by="bench")
            figures = asyncio.run(_measure(platform, key, args.requests))
        finally:
            platform.close()
    print(f"{'case':<46}{'added µs/request':>18}")
    labels = {
        "guard_us_no_key": "hot path, no key (keys not required)",
        "guard_us_key": "hot path, stored key (from memory)",
        "guard_us_key_object": "id route with key (owner remembered)",
    }
    for name, value in figures.items():
        print(f"{labels[name]:<46}{value:>18.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
