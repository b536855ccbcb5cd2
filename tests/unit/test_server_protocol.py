"""The server's HTTP protocol: a response's headers and body leave in one write; streams still go out piece by
piece; a served app behaves as under uvicorn's own protocol."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import uvicorn

from llmops.server._protocol import CoalescingHttpToolsProtocol, _CoalescedWrites

from ..helpers import free_port


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None


def test_writes_of_one_turn_leave_together_and_a_lone_write_at_the_turns_end() -> None:
    async def main() -> None:
        real = _Transport()
        transport = _CoalescedWrites(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert real.writes == [] and transport.get_write_buffer_size() == 19
        transport.write(b"body")
        assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        transport.write(b"piece")
        await asyncio.sleep(0)
        assert real.writes[-1] == b"piece"
        transport.write(b"last")
        transport.close()
        assert real.writes[-1] == b"last" and real.closed
        assert transport.get_extra_info("peername") == ("127.0.0.1", 1)

    asyncio.run(main())


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for piece in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    body = b'{"ok": true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def test_a_served_app_answers_whole_and_streamed_responses_over_keep_alive() -> None:
    port = free_port()
    config = uvicorn.Config(_app, host="127.0.0.1", port=port, log_level="warning", http=CoalescingHttpToolsProtocol)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):
                response = client.post("/x", content=b"{}")
                assert response.status_code == 200 and response.json() == {"ok": True}
            with client.stream("POST", "/stream", content=b"{}") as streamed:
                assert b"".join(streamed.iter_raw()) == b"one two three"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
