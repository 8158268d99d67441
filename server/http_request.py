"""One HTTP/1.1 request read from an asyncio stream, with every size bounded.

Just enough HTTP for the server's HTTP endpoints (served by
:class:`~xtsdb.server.http_endpoint.HttpListener`): a request line and
headers (at most :data:`MAX_HEAD` bytes), a body given by ``Content-Length`` or sent
``Transfer-Encoding: chunked`` (what Go's HTTP client, and so Telegraf, uses
for a streamed or gzipped body), ``Expect: 100-continue`` (curl sends it for
bodies over 1 KiB), ``Content-Encoding: gzip`` and keep-alive. The body limit
is checked before a byte of it is buffered (``Content-Length``) or as it
grows (chunks, and the decompressed size of gzip), so a client can never make
the server hold more than ``max_body`` bytes per request.

Timeouts: :func:`read_head` can take two, the idle time before a request's
first byte and the time its head may then take (so a client trickling a head
a byte at a time is cut off like a slow binary frame); the caller wraps
:func:`read_body` (the rest of a started request) in ``wait_for``. With a
:class:`~xtsdb.server.limits.ByteBudget`, a body is charged to it before it
is read (``Content-Length``) or chunk by chunk; the caller returns
``req.reserved`` once the request is answered.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote_to_bytes

from xtsdb.server.limits import ByteBudget

MAX_HEAD = 16 * 1024
MAX_TRAILERS = 64
REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}


class HttpError(Exception):
    """A request that cannot be served; ``close``: the stream is out of sync, hang up after.

    ``headers`` go with the answer (``Allow`` with a 405).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        close: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.close = close
        self.headers = dict(headers or {})


@dataclass
class HttpRequest:
    method: str
    path: str
    query: dict[str, str]  # the last value of each parameter wins
    headers: dict[str, str]  # names in lower case; repeated headers joined with ", "
    body: bytes = b""
    keep_alive: bool = True
    form: dict[str, str] = field(default_factory=dict)  # an urlencoded body, parsed
    reserved: int = 0  # bytes charged to a ByteBudget for the body
    role: str | None = None  # the token's role once a route's check authenticated it

    def param(self, name: str, default: str = "") -> str:
        """A parameter from the query string, else from an urlencoded form body."""
        return self.query.get(name, self.form.get(name, default))


async def read_head(
    reader: asyncio.StreamReader,
    *,
    idle_timeout: float | None = None,
    head_timeout: float | None = None,
) -> HttpRequest | None:
    """The next request's line and headers; ``None`` at a clean end of stream between requests.

    ``reader`` must have been made with a ``limit`` of :data:`MAX_HEAD`. The
    first byte may take ``idle_timeout``, the rest of the head ``head_timeout``
    (None: no limit); ``TimeoutError`` when either runs out.
    """
    first = await asyncio.wait_for(reader.read(1), idle_timeout)
    if not first:
        return None
    try:
        head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), head_timeout)
    except asyncio.IncompleteReadError as exc:
        if not (first + exc.partial).strip():
            return None
        raise HttpError(400, "incomplete request head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(400, f"request head larger than {MAX_HEAD} bytes") from None
    return _parse_head(head)


async def read_body(
    req: HttpRequest,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    max_body: int,
    budget: ByteBudget | None = None,
    passthrough: frozenset[str] = frozenset(),
) -> None:
    """Read ``req``'s body into ``req.body`` (decompressed), and ``req.form`` if it is a form.

    With ``budget``, the body's bytes are charged to it first (``req.reserved``;
    the caller gives them back): 503 if they do not fit. A ``Content-Encoding``
    in ``passthrough`` (``snappy``) is left to the handler, which must bound
    the decompressed size itself; any other but gzip is 415.
    """
    req.body = await _read_body(req, reader, writer, max_body, budget, passthrough)
    if req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        req.form = dict(parse_qsl(req.body.decode("latin-1"), keep_blank_values=True))


def _parse_head(head: bytes) -> HttpRequest:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    quoted, _, qs = target.partition("?")
    query = dict(parse_qsl(qs, keep_blank_values=True))
    conn = headers.get("connection", "").lower()
    keep_alive = "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn
    path = unquote_to_bytes(quoted).decode("latin-1")
    return HttpRequest(method, path, query, headers, keep_alive=keep_alive)


def _reserve(req: HttpRequest, budget: ByteBudget | None, n: int) -> None:
    if budget is None:
        return
    if not budget.take(n):
        raise HttpError(503, "overloaded: the server holds too many request bodies; retry later")
    req.reserved += n


async def _read_body(
    req: HttpRequest,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    max_body: int,
    budget: ByteBudget | None,
    passthrough: frozenset[str],
) -> bytes:
    h = req.headers
    chunked = "chunked" in h.get("transfer-encoding", "").lower()
    length_text = h.get("content-length")
    if not chunked and length_text is None:
        return b""
    if chunked:
        length = -1
    else:
        try:
            length = int(length_text or "")
        except ValueError:
            raise HttpError(400, "malformed Content-Length") from None
        if length < 0:
            raise HttpError(400, "malformed Content-Length")
        if length > max_body:
            raise HttpError(413, f"request body of {length} bytes exceeds {max_body} bytes")
        _reserve(req, budget, length)
    if h.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if length >= 0:
        body = await reader.readexactly(length)
    else:
        body = await _chunks(req, reader, max_body, budget)
    encoding = h.get("content-encoding", "identity").lower()
    if encoding == "gzip":
        return _gunzip(body, max_body)
    if encoding not in ("identity", "") and encoding not in passthrough:
        # The body was read, so the connection stays usable.
        raise HttpError(415, f"unsupported Content-Encoding {encoding!r}", close=False)
    return body


async def _chunks(
    req: HttpRequest, reader: asyncio.StreamReader, max_body: int, budget: ByteBudget | None
) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:  # each turn consumes a chunk; the total is bounded by max_body
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpError(400, "malformed chunk size") from None
        if size < 0:
            raise HttpError(400, "malformed chunk size")
        if size == 0:
            break
        total += size
        if total > max_body:
            raise HttpError(413, f"request body exceeds {max_body} bytes")
        _reserve(req, budget, size)
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError(400, "malformed chunk")
    for _ in range(MAX_TRAILERS + 1):  # trailer lines, ignored; each bounded by the stream limit
        if await reader.readuntil(b"\r\n") == b"\r\n":
            return b"".join(parts)
    raise HttpError(400, "too many trailer lines")


def _gunzip(body: bytes, max_body: int) -> bytes:
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(body, max_body + 1)
        if len(out) > max_body or d.unconsumed_tail:
            raise HttpError(413, f"decompressed body exceeds {max_body} bytes", close=False)
        if not d.eof:
            raise HttpError(400, "truncated gzip body", close=False)
    except zlib.error as exc:
        raise HttpError(400, f"invalid gzip body: {exc}", close=False) from None
    return out


def response(
    status: int,
    body: bytes = b"",
    *,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
    keep_alive: bool = True,
    head_only: bool = False,
) -> bytes:
    """A complete response; a 204 carries neither a body nor a Content-Length."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    if status != 204:
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return out if status == 204 or head_only else out + body
