"""URL fetching: the SSRF list from issue 3, redirects, size caps, gzip bombs and timeouts, against a real server.

The server runs on 127.0.0.1, which the fetcher refuses; tests that need it reach it as the host ``docs.test``,
resolved to 127.0.0.1 by an injected resolver and trusted with ``allow_private=True``. That trust covers only the
host named in the URL given, so a redirect from it to any other host is checked as in production. Refusals happen
before any connection, so refused addresses (10.0.0.1, 169.254.169.254) are never contacted.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmops.knowledge._fetch import (
    MAX_REDIRECTS,
    FetchedDocument,
    FetchError,
    HostResolver,
    address_refusal,
    afetch_url,
    fetch_url,
    suffix_for_content_type,
)

MB = 1024 * 1024


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    drip: float = 0.0  # seconds between 1 KB body pieces
    length: bool = True  # send Content-Length (else the body runs until the connection closes)


class Server:
    """A real HTTP server on 127.0.0.1 with scripted replies by path; it records every path it was asked for."""

    def __init__(self) -> None:
        self.routes: dict[str, Reply] = {}
        self.requests: list[str] = []
        self.request_headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.requests.append(self.path)
                server.request_headers.append(dict(self.headers))
                reply = server.routes.get(self.path, Reply(404, b"not found"))
                time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if reply.length:
                        self.send_header("Content-Length", str(len(reply.body)))
                    else:
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.end_headers()
                    if reply.drip:
                        for start in range(0, len(reply.body), 1024):
                            self.wfile.write(reply.body[start : start + 1024])
                            self.wfile.flush()
                            time.sleep(reply.drip)
                    else:
                        self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as the size and time limits make it do

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        # A client that gives up (as the size and time limits make it) resets its connection: not a server error.
        self._httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str, host: str = "docs.test") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


class Resolver:
    """Test DNS: fixed answers by name, counting how often each name is looked up."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: dict[str, int] = {}

    def __call__(self, host: str) -> Iterable[str]:
        self.calls[host] = self.calls.get(host, 0) + 1
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


def dns(**extra: list[str]) -> Resolver:
    return Resolver(
        {
            "docs.test": ["127.0.0.1"],
            "intranet.example": ["10.1.2.3"],
            "public.example": ["93.184.215.14"],
            "mixed.example": ["93.184.215.14", "192.168.1.20"],
            **{name.replace("_", "."): answer for name, answer in extra.items()},
        }
    )


def fetch(
    url: str,
    *,
    max_bytes: int = MB,
    timeout: float = 5.0,
    allow_private: bool = False,
    resolve: HostResolver | None = None,
) -> FetchedDocument:
    return fetch_url(url, max_bytes=max_bytes, timeout=timeout, allow_private=allow_private, resolve=resolve or dns())


# ---- the SSRF list -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:{port}/doc", "127.0.0.1 is a loopback address"),
        ("http://[::1]:{port}/doc", "::1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address (the cloud metadata"),
        ("http://10.0.0.1/", "10.0.0.1 is a private address"),
        ("http://172.16.5.4/", "172.16.5.4 is a private address"),
        ("http://192.168.0.1/", "192.168.0.1 is a private address"),
        ("http://100.64.0.1/", "100.64.0.1 is a shared (carrier-grade NAT) address"),
        ("http://0.0.0.0:{port}/", "0.0.0.0 is an unspecified address"),
        ("http://[::]:{port}/", ":: is an unspecified address"),
        ("http://[fe80::1]/", "fe80::1 is a link-local address"),
        ("http://[fc00::5]/", "fc00::5 is a private address"),
        ("http://224.0.0.251/", "224.0.0.251 is a multicast address"),
        ("http://[::ffff:127.0.0.1]:{port}/", "127.0.0.1 (carried in ::ffff:7f00:1) is a loopback address"),
        ("http://[::ffff:169.254.169.254]/", "169.254.169.254 (carried in ::ffff:a9fe:a9fe) is a link-local"),
        ("http://[::ffff:10.0.0.1]/", "10.0.0.1 (carried in ::ffff:a00:1) is a private address"),
        ("http://[2002:a00:1::]/", "10.0.0.1 (carried in 2002:a00:1::) is a private address"),
        ("http://[64:ff9b::7f00:1]/", "127.0.0.1 (carried in 64:ff9b::7f00:1) is a loopback address"),
        ("http://intranet.example/wiki", "intranet.example resolves to 10.1.2.3; 10.1.2.3 is a private address"),
        ("http://mixed.example/", "mixed.example resolves to 192.168.1.20"),
        ("http://2130706433:{port}/", "resolves to 127.0.0.1; 127.0.0.1 is a loopback address"),
    ],
)
def test_non_public_addresses_are_refused_before_connecting(server: Server, url: str, reason: str) -> None:
    resolver = dns()
    resolver.answers["2130706433"] = ["127.0.0.1"]  # what getaddrinfo makes of the decimal form of 127.0.0.1
    server.routes["/doc"] = Reply(body=b"secret")
    with pytest.raises(FetchError, match=r"^refused: ") as error:
        fetch(url.format(port=server.port), resolve=resolver)
    assert reason in str(error.value)
    assert server.requests == []


def test_localhost_through_the_system_resolver_is_refused(server: Server) -> None:
    server.routes["/doc"] = Reply(body=b"secret")
    with pytest.raises(FetchError, match=r"refused: localhost resolves to (127\.0\.0\.1|::1); .* loopback"):
        fetch_url(f"http://localhost:{server.port}/doc", max_bytes=MB, timeout=5)
    assert server.requests == []


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://127.0.0.1:{port}/doc", "127.0.0.1 is a loopback address"),
        ("http://[::1]:{port}/doc", "::1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/iam/", "169.254.169.254 is a link-local address"),
        ("http://10.0.0.1/admin", "10.0.0.1 is a private address"),
        ("http://intranet.example/wiki", "intranet.example resolves to 10.1.2.3"),
        ("http://localhost:{port}/doc", "localhost resolves to"),
        ("http://[::ffff:169.254.169.254]/", "(carried in ::ffff:a9fe:a9fe) is a link-local address"),
        ("file:///etc/passwd", "only http and https"),
    ],
)
def test_a_redirect_from_a_trusted_host_to_a_non_public_address_is_refused(
    server: Server, target: str, reason: str
) -> None:
    resolver = dns(localhost=["127.0.0.1"])
    server.routes["/start"] = Reply(302, headers={"Location": target.format(port=server.port)})
    server.routes["/doc"] = Reply(body=b"secret")
    with pytest.raises(FetchError, match=r"^refused: ") as error:
        fetch(server.url("/start"), allow_private=True, resolve=resolver)
    assert reason in str(error.value)
    assert server.requests == ["/start"]  # the redirect target was never asked


def test_every_hop_of_a_redirect_chain_is_checked(server: Server) -> None:
    # Two harmless hops on the trusted host, then one to the metadata service.
    server.routes["/a"] = Reply(301, headers={"Location": "/b"})
    server.routes["/b"] = Reply(307, headers={"Location": "http://169.254.169.254/latest/"})
    with pytest.raises(FetchError, match=r"refused: 169\.254\.169\.254"):
        fetch(server.url("/a"), allow_private=True)
    assert server.requests == ["/a", "/b"]


def test_the_trust_of_allow_private_does_not_extend_to_other_hosts(server: Server) -> None:
    # docs.test is trusted; intranet.example, named only by a redirect, is not, although both are private.
    server.routes["/start"] = Reply(302, headers={"Location": "http://intranet.example/"})
    with pytest.raises(FetchError, match=r"refused: intranet\.example resolves to 10\.1\.2\.3"):
        fetch(server.url("/start"), allow_private=True)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "only http and https URLs can be fetched, not file"),
        ("ftp://public.example/file.txt", "not ftp"),
        ("gopher://public.example:70/", "not gopher"),
        ("http://user:secret@public.example/", "contains credentials"),
        ("http://user@public.example/", "contains credentials"),
        ("/relative/path", "not a relative URL"),
    ],
)
def test_schemes_and_credentials_are_refused(url: str, reason: str) -> None:
    with pytest.raises(FetchError, match=f"^refused: .*{reason}"):
        fetch(url)


def test_the_connection_goes_to_the_checked_address_even_if_dns_changes(server: Server) -> None:
    # DNS rebinding: the first answer passes the check, later answers would not. The fetch must look the name up
    # once per hop and connect to that answer; a second lookup would raise and fail the fetch.
    answers = iter([["127.0.0.1"]])

    def rebinding(host: str) -> list[str]:
        return next(answers, ["not-an-address"])

    server.routes["/doc"] = Reply(body=b"hello", headers={"Content-Type": "text/plain"})
    document = fetch_url(server.url("/doc"), max_bytes=MB, timeout=5, allow_private=True, resolve=rebinding)
    assert document.data == b"hello"
    assert next(answers, None) is None  # the one answer was used, and only once


def test_address_refusal_accepts_public_addresses() -> None:
    for public in ("93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"):
        assert address_refusal(ipaddress.ip_address(public)) is None, public
    for blocked in ("192.0.2.1", "198.18.0.1", "255.255.255.255", "fec0::1", "::1", "2001:db8::1"):
        assert address_refusal(ipaddress.ip_address(blocked)) is not None, blocked


# ---- fetching ----------------------------------------------------------------------------------------------------


def test_a_good_fetch_follows_redirects_and_names_the_document(server: Server) -> None:
    pdf = b"%PDF-1.4 not really, but the bytes come back unchanged"
    server.routes["/old"] = Reply(301, headers={"Location": "/reports/annual?year=2024#top"})
    server.routes["/reports/annual?year=2024"] = Reply(body=pdf, headers={"Content-Type": "application/pdf"})
    document = fetch(server.url("/old"), allow_private=True)
    assert document.data == pdf
    assert document.url == server.url("/old")
    assert document.final_url == server.url("/reports/annual?year=2024")
    assert document.content_type == "application/pdf"
    assert document.suggested_name == "annual.pdf"
    assert server.request_headers[0]["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize(
    ("path", "headers", "name"),
    [
        ("/guide.htm", {"Content-Type": "text/html; charset=utf-8"}, "guide.htm"),
        ("/wiki/Page", {"Content-Type": "text/html"}, "Page.html"),
        ("/", {"Content-Type": "text/html"}, "docs.test.html"),
        ("/notes.md", {"Content-Type": "text/markdown"}, "notes.md"),
        ("/data", {"Content-Type": "application/x-ndjson"}, "data.jsonl"),
        ("/export", {"Content-Type": "text/csv", "Content-Disposition": 'attachment; filename="../q1 sales.csv"'},
         "q1_sales.csv"),
        ("/blob", {"Content-Type": "application/octet-stream"}, "blob.pdf"),  # sniffed: the body starts with %PDF-
        ("/logo.png", {"Content-Type": "image/png"}, "logo.png"),  # unknown: ingestion reports it as unsupported
    ],
)  # fmt: skip
def test_suggested_names_carry_the_parser_suffix(server: Server, path: str, headers: dict[str, str], name: str) -> None:
    server.routes[path] = Reply(body=b"%PDF-1.7 ...", headers=headers)
    assert fetch(server.url(path), allow_private=True).suggested_name == name


def test_content_type_suffixes() -> None:
    assert suffix_for_content_type("text/html; charset=utf-8") == ".html"
    assert suffix_for_content_type("application/vnd.openxmlformats-officedocument.wordprocessingml.document") == ".docx"
    assert suffix_for_content_type("image/png") is None


def test_text_in_another_charset_is_delivered_as_utf8(server: Server) -> None:
    server.routes["/menu.txt"] = Reply(
        body="Café crème".encode("latin-1"), headers={"Content-Type": "text/plain; charset=ISO-8859-1"}
    )
    document = fetch(server.url("/menu.txt"), allow_private=True)
    assert document.data.decode("utf-8-sig") == "Café crème"


def test_http_errors_and_redirect_loops_are_reported(server: Server) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(server.url("/missing"), allow_private=True)
    for hop in range(MAX_REDIRECTS + 1):
        server.routes[f"/r{hop}"] = Reply(302, headers={"Location": f"/r{hop + 1}"})
    server.routes[f"/r{MAX_REDIRECTS + 1}"] = Reply(body=b"too far")
    with pytest.raises(FetchError, match=f"too many redirects \\(more than {MAX_REDIRECTS}\\)"):
        fetch(server.url("/r0"), allow_private=True)
    server.routes["/r1"] = Reply(body=b"five hops is fine")  # r0 -> r1: within the limit
    assert fetch(server.url("/r0"), allow_private=True).data == b"five hops is fine"


def test_an_unreachable_host_is_a_fetch_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError, match="could not fetch"):
        fetch(f"http://docs.test:{port}/", allow_private=True)
    with pytest.raises(FetchError, match=r"cannot resolve nowhere\.example"):
        fetch("http://nowhere.example/")


# ---- size limits -------------------------------------------------------------------------------------------------


def test_a_declared_oversize_body_is_refused_before_reading(server: Server) -> None:
    server.routes["/big"] = Reply(body=b"x" * (2 * MB))
    with pytest.raises(FetchError, match=f"the body is {2 * MB} bytes, over the limit of {MB} bytes"):
        fetch(server.url("/big"), allow_private=True)


def test_an_undeclared_oversize_body_is_cut_while_streaming(server: Server) -> None:
    server.routes["/stream"] = Reply(body=b"y" * (3 * MB), length=False)
    with pytest.raises(FetchError, match=f"over the limit of {MB} bytes"):
        fetch(server.url("/stream"), allow_private=True)
    server.routes["/small"] = Reply(body=b"z" * 1000, length=False)
    assert fetch(server.url("/small"), allow_private=True).data == b"z" * 1000


def _bomb(wbits: int) -> bytes:
    deflater = zlib.compressobj(1, zlib.DEFLATED, wbits)
    zeros = bytes(MB)
    return b"".join([*(deflater.compress(zeros) for _ in range(100)), deflater.flush()])


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """100 MB of zeros in under 0.5 MB, as a gzip body and as a (zlib-wrapped) deflate body."""
    return {"gzip": _bomb(16 + zlib.MAX_WBITS), "deflate": _bomb(zlib.MAX_WBITS)}


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compression_bomb_is_cut_at_the_decoded_limit_without_inflating_it(
    server: Server, bombs: dict[str, bytes], encoding: str
) -> None:
    body = bombs[encoding]
    assert len(body) < MB  # on the wire it is under the limit; only decoding shows what it is
    server.routes["/bomb"] = Reply(body=body, headers={"Content-Encoding": encoding, "Content-Type": "text/plain"})
    tracemalloc.start()
    try:
        with pytest.raises(FetchError, match=f"over the limit of {MB} bytes after decompression"):
            fetch(server.url("/bomb"), allow_private=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MB, f"peak {peak / MB:.0f} MB: the body was inflated beyond the cap"


def test_compressed_bodies_are_decoded(server: Server) -> None:
    text = "Remote work is allowed three days a week. " * 500
    members = gzip.compress(text.encode()) + gzip.compress(b"Second member.")
    server.routes["/gz"] = Reply(body=members, headers={"Content-Encoding": "gzip"})
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    server.routes["/raw"] = Reply(
        body=raw.compress(text.encode()) + raw.flush(), headers={"Content-Encoding": "deflate"}
    )
    server.routes["/zlib"] = Reply(body=zlib.compress(text.encode()), headers={"Content-Encoding": "deflate"})
    assert fetch(server.url("/gz"), allow_private=True).data == (text + "Second member.").encode()
    for path in ("/raw", "/zlib"):
        assert fetch(server.url(path), allow_private=True).data == text.encode()
    server.routes["/cut"] = Reply(body=gzip.compress(text.encode())[:-12], headers={"Content-Encoding": "gzip"})
    with pytest.raises(FetchError, match="ends before its compressed stream does"):
        fetch(server.url("/cut"), allow_private=True)
    server.routes["/br"] = Reply(body=b"\x1b", headers={"Content-Encoding": "br"})
    with pytest.raises(FetchError, match="unsupported Content-Encoding 'br'"):
        fetch(server.url("/br"), allow_private=True)


# ---- time limits -------------------------------------------------------------------------------------------------


def test_a_server_that_never_answers_times_out(server: Server) -> None:
    server.routes["/hang"] = Reply(body=b"late", delay=3.0)
    started = time.perf_counter()
    with pytest.raises(FetchError, match=r"timed out after 0\.5 s"):
        fetch(server.url("/hang"), allow_private=True, timeout=0.5)
    assert time.perf_counter() - started < 2.0


def test_a_body_that_trickles_in_times_out_as_a_whole(server: Server) -> None:
    # Each 1 KB piece arrives quickly, so no single read stalls; the whole fetch still has one deadline.
    server.routes["/drip"] = Reply(body=b"d" * 40 * 1024, drip=0.05)
    started = time.perf_counter()
    with pytest.raises(FetchError, match=r"timed out after 0\.6 s"):
        fetch(server.url("/drip"), allow_private=True, timeout=0.6)
    assert time.perf_counter() - started < 2.0


def test_fetch_url_refuses_to_block_an_event_loop_and_afetch_url_works(server: Server) -> None:
    server.routes["/doc"] = Reply(body=b"async", headers={"Content-Type": "text/plain"})

    async def inside_a_loop() -> bytes:
        with pytest.raises(RuntimeError, match="await afetch_url"):
            fetch(server.url("/doc"), allow_private=True)
        document = await afetch_url(server.url("/doc"), max_bytes=MB, timeout=5, allow_private=True, resolve=dns())
        return document.data

    assert asyncio.run(inside_a_loop()) == b"async"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        fetch("http://public.example/", max_bytes=0)
    with pytest.raises(ValueError, match="timeout"):
        fetch("http://public.example/", timeout=0)
