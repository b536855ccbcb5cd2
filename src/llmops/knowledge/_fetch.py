"""Fetching a document by URL without letting the URL reach into the machine's own network (SSRF).

A URL given to ingestion is untrusted: ``http://169.254.169.254/`` reads cloud credentials, ``http://10.0.0.5/``
an internal admin page, and a public page can redirect to either. So every hop of a fetch goes through one rule,
`address_refusal`: the host's addresses must all be public. The check and the connection use the same addresses —
the connector's resolver only returns addresses this module checked for that hop — so a DNS answer that changes
between check and connect (DNS rebinding) cannot move the connection. Redirects are followed by hand, each one
checked the same way. Bodies are streamed and cut at ``max_bytes`` after decompression, so neither a huge file nor a
gzip bomb can exhaust memory.

>>> document = fetch_url("https://example.org/handbook.pdf", max_bytes=20_000_000, timeout=30)  # doctest: +SKIP
>>> parser = parsers[Path(document.suggested_name).suffix]  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp
    from yarl import URL

__all__ = [
    "MAX_REDIRECTS",
    "FetchError",
    "FetchedDocument",
    "HostResolver",
    "address_refusal",
    "afetch_url",
    "apost_json",
    "fetch_url",
    "suffix_for_content_type",
]

MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_USER_AGENT = "llmops-ingest/1 (+document ingestion)"

# A function from a host name to its IP addresses (as text), used instead of the system resolver; for tests and
# for deployments with their own DNS. It is called once per hop, and only its answer is ever connected to.
HostResolver = Callable[[str], Iterable[str]]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchError(ValueError):
    """A URL was refused or could not be fetched; the message names the reason.

    ``refused: …`` means the URL itself is not allowed (scheme, credentials, a non-public address) and retrying
    cannot help.
    """


@dataclass(frozen=True)
class FetchedDocument:
    """The body of a fetched URL (decompressed) and what is known about it.

    ``suggested_name`` is a file name for the document, whose suffix says which parser reads it: taken from the
    ``Content-Disposition`` header or the final URL's last path segment, with the suffix the content type implies
    (``/docs/report`` served as ``application/pdf`` → ``report.pdf``).
    """

    url: str
    final_url: str
    content_type: str
    data: bytes
    suggested_name: str


# ---- the address rule --------------------------------------------------------------------------------------------

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})


def address_refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not be fetched from (``"a private address"``), or None when it is a public address.

    Refused: loopback, private (RFC 1918, unique-local), link-local (169.254.0.0/16, fe80::/10; cloud metadata
    lives there), shared CGNAT space (100.64.0.0/10), multicast, reserved, unspecified, site-local, and every other
    range that is not globally routable. An IPv4 address embedded in IPv6 (IPv4-mapped ``::ffff:a.b.c.d``,
    IPv4-compatible, 6to4, NAT64) is judged as the IPv4 address it carries.

    >>> address_refusal(ipaddress.ip_address("::ffff:10.0.0.1"))
    '10.0.0.1 (carried in ::ffff:10.0.0.1) is a private address'
    """
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        reason = address_refusal(embedded)
        return None if reason is None else reason.replace(str(embedded), f"{embedded} (carried in {address})", 1)
    kind = _non_public_kind(address)
    return None if kind is None else f"{address} is {kind}"


def _non_public_kind(address: IPAddress) -> str | None:
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address in _METADATA:
        return "a link-local address (the cloud metadata service)"
    if address.is_link_local:
        return "a link-local address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a shared (carrier-grade NAT) address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a public address"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible ::a.b.c.d (deprecated; ::1 is loopback)
        return ipaddress.IPv4Address(int(address))
    return None


def _check_url(url: URL) -> str:
    """The URL's host, after refusing what may never be fetched whatever the host resolves to."""
    if url.scheme not in ("http", "https"):
        raise FetchError(f"refused: only http and https URLs can be fetched, not {url.scheme or 'a relative URL'}")
    if url.user is not None or url.password is not None:
        raise FetchError("refused: the URL contains credentials (user:password@); pass them another way")
    host = url.raw_host
    if not host:
        raise FetchError(f"refused: the URL has no host: {url}")
    return host


async def _checked_addresses(host: str, port: int, *, trusted: bool, resolve: HostResolver | None) -> list[IPAddress]:
    """The addresses to connect to for ``host``: all must be public unless the host is trusted."""
    literal = _ip_literal(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            if resolve is not None:
                answers = list(await asyncio.to_thread(resolve, host))
            else:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
                answers = [str(info[4][0]) for info in infos]
            addresses = list(dict.fromkeys(ipaddress.ip_address(answer.split("%", 1)[0]) for answer in answers))
        except (OSError, ValueError) as exc:
            raise FetchError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise FetchError(f"cannot resolve {host}: no addresses")
    if trusted:
        return addresses
    for address in addresses:
        reason = address_refusal(address)
        if reason is not None:
            # One non-public answer refuses the host: a name with both kinds of address is an attack or a mistake.
            prefix = "" if literal is not None else f"{host} resolves to {address}; "
            raise FetchError(f"refused: {prefix}{reason}")
    return addresses


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _host_key(host: str) -> str:
    return host.rstrip(".").lower()


def _pinned_resolver() -> tuple[aiohttp.abc.AbstractResolver, dict[str, list[IPAddress]]]:
    """A resolver that answers only with the addresses checked for this hop, and the table it answers from."""
    from aiohttp.abc import AbstractResolver, ResolveResult

    pins: dict[str, list[IPAddress]] = {}

    class PinnedResolver(AbstractResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            addresses = pins.get(_host_key(host))
            if addresses is None:  # never happens through afetch_url; a connection to an unchecked host must fail
                raise OSError(f"{host} was not checked before connecting")
            return [
                ResolveResult(
                    hostname=host,
                    host=str(address),
                    port=port,
                    family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                    proto=0,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
                for address in addresses
            ]

        async def close(self) -> None:
            return None

    return PinnedResolver(), pins


# ---- fetching ----------------------------------------------------------------------------------------------------


def fetch_url(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    allow_private: bool = False,
    resolve: HostResolver | None = None,
) -> FetchedDocument:
    """Fetch ``url`` (blocking); see `afetch_url`. In async code, await `afetch_url` instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(
            afetch_url(url, max_bytes=max_bytes, timeout=timeout, allow_private=allow_private, resolve=resolve)
        )
    raise RuntimeError("fetch_url blocks and cannot run inside an event loop; await afetch_url(...) instead")


async def afetch_url(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    allow_private: bool = False,
    resolve: HostResolver | None = None,
) -> FetchedDocument:
    """GET ``url`` with the SSRF rules of this module; raises `FetchError` with the reason when refused or failed.

    - Only http(s), no credentials in the URL; every hop's host must resolve to public addresses only, and the
      connection goes to exactly the addresses checked.
    - At most `MAX_REDIRECTS` redirects, each target checked like the first URL.
    - ``max_bytes`` caps the body after decompression (gzip and deflate; other encodings are refused);
      ``timeout`` (seconds) caps the whole fetch: resolution, every hop and the body.
    - ``allow_private=True`` trusts the host named in ``url`` itself (an intranet wiki an operator registered, or
      a test server on loopback): its addresses are not checked. Every other host, including one a redirect from
      the trusted host names, is checked as usual.
    - ``resolve`` replaces the system resolver (see `HostResolver`).
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, not {max_bytes}")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout}")
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(url, max_bytes=max_bytes, allow_private=allow_private, resolve=resolve)
    except TimeoutError as exc:
        raise FetchError(f"timed out after {timeout:g} s fetching {url}") from exc


async def _fetch(url: str, *, max_bytes: int, allow_private: bool, resolve: HostResolver | None) -> FetchedDocument:
    import aiohttp
    from yarl import URL

    try:
        current = URL(url)
    except (ValueError, TypeError) as exc:
        raise FetchError(f"not a valid URL: {url!r} ({exc})") from exc
    trusted_host = _host_key(_check_url(current)) if allow_private else None
    resolver, pins = _pinned_resolver()
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "gzip, deflate", "Accept": "*/*"}
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, trust_env=False, headers=headers
    ) as session:
        for _hop in range(MAX_REDIRECTS + 1):
            host = _check_url(current)
            port = current.port or (443 if current.scheme == "https" else 80)
            key = _host_key(host)
            pins[key] = await _checked_addresses(host, port, trusted=key == trusted_host, resolve=resolve)
            try:
                async with session.get(current, allow_redirects=False) as response:
                    if response.status in _REDIRECT_STATUSES:
                        location = response.headers.get("Location")
                        if not location:
                            raise FetchError(f"HTTP {response.status} redirect without a Location from {current}")
                        try:
                            current = current.join(URL(location)).with_fragment(None)
                        except ValueError as exc:
                            raise FetchError(f"invalid redirect Location {location!r} from {current}") from exc
                        continue
                    if not 200 <= response.status < 300:
                        raise FetchError(f"HTTP {response.status} {response.reason or ''} from {current}".rstrip())
                    data = await _read_body(response, max_bytes)
                    content_type = response.content_type
                    data = _as_utf8_if_declared(data, content_type, response.charset)
                    name = _suggested_name(current, content_type, response.content_disposition, data)
                    return FetchedDocument(
                        url=url, final_url=str(current), content_type=content_type, data=data, suggested_name=name
                    )
            except aiohttp.ClientError as exc:
                raise FetchError(f"could not fetch {current}: {type(exc).__name__}: {exc}") from exc
    raise FetchError(f"too many redirects (more than {MAX_REDIRECTS}) from {url}")


async def apost_json(
    url: str,
    payload: object,
    *,
    timeout: float,
    allow_private: bool = False,
    resolve: HostResolver | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    """POST ``payload`` as JSON to ``url`` under the same SSRF rules as `afetch_url` and return the HTTP status.

    Webhooks use it. A redirect is not followed (a webhook that redirects is misconfigured or hostile), and at most
    64 KiB of the response is read. Raises `FetchError` when refused, unreachable, or on a non-2xx status.
    """
    import aiohttp
    import orjson
    from yarl import URL

    try:
        target = URL(url)
    except (ValueError, TypeError) as exc:
        raise FetchError(f"not a valid URL: {url!r} ({exc})") from exc
    host = _check_url(target)
    resolver, pins = _pinned_resolver()
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        async with asyncio.timeout(timeout):
            pins[_host_key(host)] = await _checked_addresses(host, port, trusted=allow_private, resolve=resolve)
            connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
            sent = {"User-Agent": _USER_AGENT, "Content-Type": "application/json", **(headers or {})}
            async with (
                aiohttp.ClientSession(connector=connector, trust_env=False) as session,
                session.post(target, data=orjson.dumps(payload), headers=sent, allow_redirects=False) as response,
            ):
                await response.content.read(64 * 1024)
                if not 200 <= response.status < 300:
                    raise FetchError(f"HTTP {response.status} {response.reason or ''} from {target}".rstrip())
                return response.status
    except TimeoutError as exc:
        raise FetchError(f"timed out after {timeout:g} s posting to {url}") from exc
    except aiohttp.ClientError as exc:
        raise FetchError(f"could not post to {target}: {type(exc).__name__}: {exc}") from exc


async def _read_body(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    length = response.content_length
    if encoding == "identity" and length is not None and length > max_bytes:
        raise FetchError(f"the body is {length} bytes, over the limit of {max_bytes} bytes")
    decoder = _Decoder(encoding, max_bytes)
    parts: list[bytes] = []
    received = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        received += len(chunk)
        if received > max_bytes:  # compressed bytes count too: a body never inflates to less than its size here
            raise FetchError(f"the body is over the limit of {max_bytes} bytes")
        parts.append(decoder.feed(chunk))
    parts.append(decoder.finish())
    return b"".join(parts)


class _Decoder:
    """Inflates a gzip or deflate body in steps that never produce more than the bytes still allowed.

    ``zlib`` is given ``max_length`` = room left + 1, so a bomb is detected after at most ``max_bytes + 1`` output
    bytes, whatever the compression ratio: the decoded size is capped, not just the bytes on the wire.
    """

    def __init__(self, encoding: str, max_bytes: int) -> None:
        if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
            raise FetchError(f"unsupported Content-Encoding {encoding!r} (only gzip and deflate are accepted)")
        self._encoding = "identity" if encoding == "" else encoding
        self._max = max_bytes
        self._produced = 0
        self._inflater: zlib._Decompress | None = None
        self._finished_member = False

    def _new_inflater(self, first: bytes) -> zlib._Decompress:
        if self._encoding == "deflate":
            # "deflate" should be zlib-wrapped (RFC 9110), but servers also send raw deflate: tell by the header.
            zlib_header = len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
            return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        return zlib.decompressobj(16 + zlib.MAX_WBITS)

    def _count(self, piece: bytes) -> bytes:
        self._produced += len(piece)
        if self._produced > self._max:
            raise FetchError(f"the body is over the limit of {self._max} bytes after decompression")
        return piece

    def feed(self, chunk: bytes) -> bytes:
        if self._encoding == "identity":
            return self._count(chunk)
        out: list[bytes] = []
        data = chunk
        while data:
            if self._inflater is None or self._finished_member:
                if self._finished_member and self._encoding == "deflate":
                    break  # trailing bytes after a deflate stream are ignored, as browsers do
                self._inflater, self._finished_member = self._new_inflater(data), False
            try:
                out.append(self._count(self._inflater.decompress(data, self._max - self._produced + 1)))
            except zlib.error as exc:
                raise FetchError(f"the {self._encoding} body is corrupt: {exc}") from exc
            if self._inflater.eof:
                self._finished_member = True  # gzip allows several members one after another
                data = self._inflater.unused_data
            else:
                data = self._inflater.unconsumed_tail
        return b"".join(out)

    def finish(self) -> bytes:
        if self._encoding == "identity" or self._inflater is None:
            return b""
        if not self._finished_member:
            raise FetchError(f"the {self._encoding} body ends before its compressed stream does")
        return b""


# ---- naming ------------------------------------------------------------------------------------------------------

_SUFFIX_BY_TYPE = {
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/x-markdown": ".md",
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "text/csv": ".csv",
    "text/tab-separated-values": ".tsv",
    "application/json": ".json",
    "application/x-ndjson": ".jsonl",
    "application/jsonl": ".jsonl",
    "application/json-lines": ".jsonl",
    "application/x-jsonlines": ".jsonl",
}
# Suffixes that name the same format, so "guide.htm" served as text/html keeps its name.
_SAME_FORMAT = {".htm": ".html", ".xhtml": ".html", ".markdown": ".md", ".text": ".txt", ".ndjson": ".jsonl"}
_UNSAFE_NAME_CHARS = re.compile(r"[^\w.\-]+")
_TEXT_TYPES = ("text/", "application/json", "application/x-ndjson", "application/jsonl", "application/xhtml+xml")


def suffix_for_content_type(content_type: str) -> str | None:
    """The file suffix of the parser for a media type (``"text/html"`` → ``".html"``), or None when unknown."""
    return _SUFFIX_BY_TYPE.get(content_type.split(";", 1)[0].strip().lower())


def _suggested_name(url: URL, content_type: str, disposition: object, data: bytes) -> str:
    filename = getattr(disposition, "filename", None)
    raw = PurePosixPath(str(filename)).name if filename else url.name or (url.host or "document")
    name = _UNSAFE_NAME_CHARS.sub("_", raw).strip("._")[:120] or "document"
    current = PurePosixPath(name).suffix.lower()
    wanted = suffix_for_content_type(content_type)
    if wanted is None and content_type in ("", "application/octet-stream") and current not in _SUFFIX_BY_TYPE.values():
        wanted = _sniff_suffix(data)
    if wanted is not None and _SAME_FORMAT.get(current, current) != wanted:
        name += wanted
    return name


def _sniff_suffix(data: bytes) -> str | None:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%pdf-"):
        return ".pdf"
    if head.startswith((b"<!doctype html", b"<html")):
        return ".html"
    return None


def _as_utf8_if_declared(data: bytes, content_type: str, charset: str | None) -> bytes:
    """Text declared in another charset, re-encoded as UTF-8 with a byte-order mark.

    The parsers read UTF-8; the mark makes that decision final (for HTML it outranks a ``<meta charset>`` that
    still names the original encoding, as the HTTP header did).
    """
    if charset is None or not content_type.startswith(_TEXT_TYPES):
        return data
    import codecs

    try:
        codec = codecs.lookup(charset).name
    except LookupError:
        return data
    if codec in ("utf-8", "ascii"):
        return data
    return codecs.BOM_UTF8 + data.decode(codec, errors="replace").encode("utf-8")
