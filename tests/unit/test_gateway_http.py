"""The gateway's HTTP client against scripted servers on loopback: keep-alive reuse, stale connections, bodies by
length, chunks and close, content encodings, the connection limit, cancellation, connect timeouts and TLS."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from llmops.gateway import OpenAICompatibleProvider, ProviderError, Timeouts
from llmops.gateway._http import HTTPClient
from llmops.gateway._types import ChatRequest

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b'{"ok": true}'


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """(head, body) of the next request on the connection, None when the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    return head, await reader.readexactly(length)


def _response(body: bytes, *, status: int = 200, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status,
        len(body),
        extra,
        body,
    )


class _Server:
    """A loopback server running ``handler`` per connection; counts connections and keeps request heads."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()


def _keep_alive(responses: Callable[[bytes, bytes], bytes], server: list[_Server]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await _read_request(reader)) is not None:
            server[0].heads.append(request[0])
            writer.write(responses(*request))
            await writer.drain()

    return handler


Runner = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Runs a test's coroutine on asyncio's event loop or on uvloop's (the server's)."""

    def runner(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if request.param == "uvloop":
            uvloop.run(test())
        else:
            asyncio.run(test())

    return runner


def test_connections_are_kept_alive_and_reused(run: Runner) -> None:
    async def main() -> None:
        holder: list[_Server] = []
        server = _Server(_keep_alive(lambda head, body: _response(body), holder))
        holder.append(server)
        async with server as base:
            client = HTTPClient(base, headers={"authorization": "Bearer sk-1"})
            for i in range(3):
                response = await client.request("POST", "/chat/completions", b'{"n": %d}' % i)
                assert (response.status, response.body) == (200, b'{"n": %d}' % i)
            assert server.connections == 1
            head = server.heads[0].decode()
            assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
            assert "host: 127.0.0.1:" in head and "authorization: Bearer sk-1" in head
            await client.aclose()

    run(main)


def test_a_connection_the_server_dropped_while_idle_is_replaced_without_an_error(run: Runner) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await _read_request(reader) is not None:
            writer.write(_response(OK))
            await writer.drain()
        await _read_request(reader)  # the next request finds the connection dropped: no answer, as after a timeout

    async def main() -> None:
        server = _Server(handler)
        async with server as base:
            client = HTTPClient(base)
            for _ in range(3):
                assert (await client.request("POST", "/x", b"{}")).body == OK
            assert server.connections == 3
            await client.aclose()

    run(main)


def test_bodies_by_chunks_and_by_close_and_gzip(run: Runner) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await _read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for piece in (b"data: one\n", b"data: tw", b"o\n\n", b"data: [DONE]\n\n"):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")

    async def by_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + OK)

    async def zipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_response(gzip.compress(OK), extra=b"content-encoding: gzip\r\n"))

    async def main() -> None:
        server = _Server(chunked)
        async with server as base:
            client = HTTPClient(base)
            for _ in range(2):  # a stream read to its end leaves its connection reusable
                async with client.stream("POST", "/s", b"{}") as response:
                    lines = [line async for line in response.lines()]
                assert lines == [b"data: one\n", b"data: two\n", b"\n", b"data: [DONE]\n", b"\n"]
            assert server.connections == 1
            await client.aclose()
        for handler in (by_close, zipped):
            async with _Server(handler) as base:
                client = HTTPClient(base)
                assert (await client.request("POST", "/x", b"{}")).body == OK
                await client.aclose()

    run(main)


def test_a_response_cut_short_is_a_connection_error(run: Runner) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial')

    async def main() -> None:
        async with _Server(cut) as base:
            client = HTTPClient(base)
            with pytest.raises(ConnectionError):
                await client.request("POST", "/x", b"{}")
            await client.aclose()

    run(main)


def test_the_connection_limit_queues_callers_and_a_cancelled_caller_frees_its_connection(run: Runner) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await _read_request(reader)) is not None:
            await asyncio.sleep(0.3 if request[1] == b"slow" else 0.02)
            writer.write(_response(request[1]))
            await writer.drain()

    async def main() -> None:
        server = _Server(slow)
        async with server as base:
            client = HTTPClient(base, limit=1)
            answers = await asyncio.gather(*(client.request("POST", "/x", b"%d" % i) for i in range(4)))
            assert [a.body for a in answers] == [b"0", b"1", b"2", b"3"] and server.connections == 1
            with pytest.raises(TimeoutError):  # cancelled mid-request: that connection is closed, not reused
                async with asyncio.timeout(0.05):
                    await client.request("POST", "/x", b"slow")
            assert (await client.request("POST", "/x", b"after")).body == b"after"
            assert server.connections == 2
            await client.aclose()

    run(main)


def test_upstream_errors_statuses_and_redirects(run: Runner) -> None:
    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await _read_request(reader)) is not None:
            status = int(request[1])
            writer.write(_response(b'{"error": "x"}', status=status, extra=b"location: http://10.0.0.1/\r\n"))

    async def main() -> None:
        async with _Server(answers) as base:
            provider = OpenAICompatibleProvider(base, timeouts=Timeouts(1, 1, 1))
            upstream = provider.upstream
            with pytest.raises(ProviderError) as failed:
                await upstream.post_json("/x", 503)  # type: ignore[arg-type]
            assert failed.value.status == 503 and failed.value.retryable
            with pytest.raises(ProviderError) as redirected:
                await upstream.post_json("/x", 307)  # type: ignore[arg-type]
            assert redirected.value.status == 307 and not redirected.value.retryable
            await provider.aclose()
        with pytest.raises(ValueError, match="invalid HTTP header"):
            HTTPClient("http://127.0.0.1/v1", headers={"authorization": "Bearer x\r\nx-injected: 1"})

    run(main)


def test_connect_timeout_covers_a_tls_handshake_that_never_ends(run: Runner) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(2)

    async def main() -> None:
        async with _Server(silent) as base:
            provider = OpenAICompatibleProvider(base.replace("http:", "https:"), timeouts=Timeouts(0.2, 5, 5))
            request = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], stream=False)
            started = asyncio.get_running_loop().time()
            with pytest.raises(ProviderError, match="ConnectionTimeoutError") as failed:
                async for _event in provider.stream("m", request):
                    pass
            assert failed.value.retryable and asyncio.get_running_loop().time() - started < 1.5
            await provider.aclose()

    run(main)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_verifies_the_certificate(tmp_path: Path, run: Runner) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await _read_request(reader)) is not None:
            writer.write(_response(request[1]))
            await writer.drain()
        writer.close()

    async def main() -> None:
        tls = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_context)
        url = f"https://127.0.0.1:{tls.sockets[0].getsockname()[1]}/v1"
        untrusted = HTTPClient(url)  # the system's CA store does not know this certificate
        with pytest.raises(ssl.SSLCertVerificationError):
            await untrusted.request("POST", "/x", b"{}")
        client = HTTPClient(url, ssl_context=ssl.create_default_context(cafile=str(cert)))
        for _ in range(2):
            assert (await client.request("POST", "/x", b"{}")).body == b"{}"
        await client.aclose()
        await untrusted.aclose()
        tls.close()

    run(main)
