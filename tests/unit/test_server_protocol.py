"""The server's HTTP protocol: a response's headers and body leave in one write; streams still go out piece by
piece; a served app behaves as under uvicorn's own protocol; the hot path (``POST /v1/chat/completions`` below the
body size limit) is served directly, with the same answers, limits, failures, 100-continue and pipelining."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from llmops._writes import WriteBatch
from llmops.server._limits import BodySizeLimit
from llmops.server._protocol import CoalescingHttpToolsProtocol, _CoalescedWrites

from ..helpers import free_port, serve_in_thread


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


def test_a_connections_writes_wait_for_the_turns_end_and_closing_sends_them_first() -> None:
    async def main() -> None:
        real = _Transport()
        transport = _CoalescedWrites(real, WriteBatch(asyncio.get_running_loop()))  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"body")
        assert real.writes == [] and transport.get_write_buffer_size() == 23
        await asyncio.sleep(0)
        assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"] and transport.get_write_buffer_size() == 0
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


async def _hot_path(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Stands in for the platform's app below its body size limit; answers by the request's body."""
    message = await receive()
    body = message["body"]
    if body == b"fail":
        raise RuntimeError("the app failed before answering")
    if body == b"slow":
        await asyncio.sleep(0.05)
    if body == b"bad header":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-bad", b"one\r\ntwo: three")]})
        return
    if body == b"stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for piece in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    answer = b'{"echo": %d}' % len(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture
def direct_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """A body-size-limited app served as ``llmops up`` serves; yields its URL and the paths served directly."""
    served: list[str] = []
    start = CoalescingHttpToolsProtocol._start_direct

    def counting(self: CoalescingHttpToolsProtocol, cycle: Any) -> None:
        served.append(cycle.scope["path"])
        start(self, cycle)

    monkeypatch.setattr(CoalescingHttpToolsProtocol, "_start_direct", counting)
    with serve_in_thread(BodySizeLimit(_hot_path, max_bytes=1000)) as base:
        yield base, served


def _read_until(connection: socket.socket, end: bytes) -> bytes:
    received = b""
    while not received.endswith(end):
        chunk = connection.recv(65536)
        assert chunk, received
        received += chunk
    return received


def test_the_hot_path_is_served_directly_whole_and_streamed_over_keep_alive(
    direct_server: tuple[str, list[str]],
) -> None:
    base, served = direct_server
    with httpx.Client(base_url=base) as client:
        for size in (2, 500, 1000):
            response = client.post("/v1/chat/completions", content=b"x" * size)
            assert response.status_code == 200 and response.json() == {"echo": size}
            assert response.headers["content-type"] == "application/json" and "date" in response.headers
        with client.stream("POST", "/v1/chat/completions", content=b"stream") as streamed:
            assert streamed.headers["transfer-encoding"] == "chunked"
            assert b"".join(streamed.iter_raw()) == b"one two three"
        # Another path, or a query string, takes uvicorn's own way.
        assert client.post("/other", content=b"x").json() == {"echo": 1}
        assert client.post("/v1/chat/completions?x=1", content=b"xy").json() == {"echo": 2}
        # A chunked request body is read whole before the app runs.
        assert client.post("/v1/chat/completions", content=iter([b"ab", b"cd", b"e"])).json() == {"echo": 5}
    assert served == ["/v1/chat/completions"] * 5


def test_the_hot_path_refuses_an_oversized_body_and_closes_the_connection(
    direct_server: tuple[str, list[str]],
) -> None:
    base, served = direct_server
    with httpx.Client(base_url=base) as client:
        declared = client.post("/v1/chat/completions", content=b"x" * 1001)
        assert declared.status_code == 413 and declared.json()["error"]["type"] == "request_too_large"
        assert declared.headers["connection"] == "close"
        undeclared = client.post("/v1/chat/completions", content=iter([b"x" * 600, b"x" * 600]))
        assert undeclared.status_code == 413 and "limit is 1000 bytes" in undeclared.json()["error"]["message"]
        assert client.post("/v1/chat/completions", content=b"ok").json() == {"echo": 2}  # on a new connection
    assert len(served) == 3


def test_the_hot_path_answers_500_when_the_app_fails_or_writes_a_broken_header(
    direct_server: tuple[str, list[str]],
) -> None:
    base, _served = direct_server
    with httpx.Client(base_url=base) as client:
        assert client.post("/v1/chat/completions", content=b"fail").status_code == 500
        broken = client.post("/v1/chat/completions", content=b"bad header")
        assert broken.status_code == 500 and "x-bad" not in broken.headers
        assert client.post("/v1/chat/completions", content=b"fine").json() == {"echo": 4}


def test_the_hot_path_answers_expect_100_continue_before_the_body(direct_server: tuple[str, list[str]]) -> None:
    base, served = direct_server
    port = int(base.rsplit(":", 1)[1])
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(head)
        assert connection.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"  # the client waits for this
        connection.sendall(b"abc")
        received = _read_until(connection, b"}")
    assert received.startswith(b"HTTP/1.1 200 OK") and received.endswith(b'{"echo": 3}') and len(served) == 1


def test_pipelined_requests_on_the_hot_path_are_answered_in_order(direct_server: tuple[str, list[str]]) -> None:
    base, _served = direct_server
    port = int(base.rsplit(":", 1)[1])
    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        # The first one takes longer: the others wait for its answer (uvicorn queues them).
        connection.sendall(request % (4, b"slow") + request % (3, b"abc") + request % (6, b"stream"))
        received = _read_until(connection, b"0\r\n\r\n")
    assert received.index(b'{"echo": 4}') < received.index(b'{"echo": 3}') < received.index(b"three")
    assert received.count(b"HTTP/1.1 200 OK") == 3


def test_the_server_keeps_serving_after_a_client_closes_its_connection(direct_server: tuple[str, list[str]]) -> None:
    base, served = direct_server
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\nstream")
        assert _read_until(connection, b"0\r\n\r\n").startswith(b"HTTP/1.1 200 OK")
    with httpx.Client(base_url=base) as client:  # the server is still well
        assert client.post("/v1/chat/completions", content=b"ok").json() == {"echo": 2}
    assert len(served) == 2


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout_and_a_busy_one_is_not() -> None:
    port = free_port()
    config = uvicorn.Config(_app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=1,
                            http=CoalescingHttpToolsProtocol)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    request = b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as busy:
            for _ in range(8):  # a request every 0.25 s for 2 s, on one connection: never idle for 1 s
                busy.sendall(request)
                assert _read_until(busy, b"}").endswith(b'{"ok": true}')
                time.sleep(0.25)
            started = time.monotonic()
            assert busy.recv(65536) == b""  # then idle: closed by the server
            assert 0.5 < time.monotonic() - started < 2.5
    finally:
        server.should_exit = True
        thread.join(timeout=10)
