"""The sans-I/O client: everything both transports share, and no sockets.

- :func:`parse_target` turns ``xtsdb[s]://[:TOKEN@]host:port`` into an address,
  a TLS flag and a token (kept out of every repr and message: :func:`redact`).
- :class:`Session` is one connection's bookkeeping: the frame decoder and the
  requests awaiting a response, keyed by id (responses may come out of order).
  A transport gives each request a *waiter* (an ``asyncio.Future`` or a
  ``concurrent.futures.Future``) and completes it with the response dict.
- :class:`ClientCore` allocates ids, builds frames and holds *plans*: each
  public operation is a generator that yields :class:`Step` s (requests to
  send, how many of the oldest responses to wait for) and is sent the
  responses back, finally returning the operation's result. A transport's
  ``_drive`` loop runs any plan, so a paged query or a pipelined multi-frame
  write is written once, here, and both clients do the same thing. The plans
  of the historian ops (analytics, deletes, the tag catalog) are in
  :mod:`._plans`, a mixin of :class:`ClientCore`.
"""

from __future__ import annotations

import itertools
import re
import ssl
import threading
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit

import numpy as np

from xtsdb.protocol import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    backup_request,
    encode_frame,
    hello_request,
    int_field,
    last_request,
    parse_backup_response,
    parse_hello_response,
    parse_last_response,
    parse_points,
    parse_response_header,
    query_request,
    raise_for_error,
    request,
    write_request,
)
from xtsdb.protocol.errors import InvalidInput, ProtocolError, XtsdbConnectionError
from xtsdb.protocol.ops import parse_last_errors

from ._convert import to_us, write_columns
from ._plans import HistorianPlans, tag_key
from ._tls import PathLike, client_context
from .batching import Columns
from .results import LastResult, QueryResult

DEFAULT_PORT = 7878
DEFAULT_URL = f"xtsdb://127.0.0.1:{DEFAULT_PORT}"
CLIENT_NAME = "xtsdb-python"
MAX_POINTS_PER_FRAME = 1_000_000
MAX_RESPONSE_FRAME = 1 << 30
"""Largest response frame accepted: generous, as the server is trusted more than
its clients, but bounded so a confused peer cannot make us allocate without limit."""
_FRAME_OVERHEAD = 1024  # msgpack map, keys, bin headers, op and id: a few hundred bytes
# Safe to send twice: re-running them changes nothing on the server. (hello is not
# here: it is part of connecting, which is what a retry would redo.)
IDEMPOTENT_OPS = frozenset(
    {"ping", "query", "last", "stats", "flush"}
    | {"aggregate", "interpolate", "plot", "tag_get", "tag_list"}
)

T = TypeVar("T")
W = TypeVar("W")


_USERINFO = re.compile(r"(?<=://)[^@/?#]*@")


def redact(url: str) -> str:
    """``url`` with any ``user:token@`` part replaced by ``***@``: safe to print."""
    return _USERINFO.sub("***@", url)


@dataclass(frozen=True)
class Target:
    """Where and how to connect: what a URL says."""

    host: str
    port: int
    tls: bool
    url: str  # redacted
    token: str | None = field(default=None, repr=False)


def parse_target(url: str) -> Target:
    """``xtsdb://[:TOKEN@]host[:port]`` (``xtsdbs://`` for TLS); :class:`InvalidInput` otherwise."""
    shown = redact(url)  # never echo a token, not even in an error about the URL
    parts = urlsplit(url)
    if parts.scheme not in ("xtsdb", "xtsdbs"):
        raise InvalidInput(f"{shown!r}: the URL must look like xtsdb[s]://host:port")
    token = None
    if parts.username or parts.password is not None:
        if parts.username:
            raise InvalidInput(f"{shown!r}: put the token after a colon: xtsdb://:TOKEN@host:port")
        token = unquote(parts.password or "") or None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidInput(f"{shown!r}: an xtsdb URL has no path, query or fragment")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"{shown!r}: {exc}") from None
    if not parts.hostname:
        raise InvalidInput(f"{shown!r}: no host")
    port = DEFAULT_PORT if port is None else port
    return Target(parts.hostname, port, parts.scheme == "xtsdbs", shown, token)


def parse_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of an xtsdb URL (see :func:`parse_target`)."""
    target = parse_target(url)
    return target.host, target.port


@dataclass(eq=False)
class Request:
    """One encoded request; ``retryable`` if sending it twice is harmless."""

    id: int
    op: str
    frame: bytes
    retryable: bool
    points: int = 0
    attempts: int = 0


@dataclass
class Step:
    """Send ``send`` (in order), then wait for the ``wait`` oldest outstanding responses."""

    send: list[Request]
    wait: int


Plan = Generator[Step, list[dict[str, Any]], T]


class Session(Generic[W]):
    """One connection's decoder and in-flight requests.

    ``track`` and ``close`` take a lock because the sync client calls them from
    user threads while its reader thread completes requests; ``complete`` and
    ``forget`` are single ``dict.pop`` calls, atomic on their own.
    """

    def __init__(self, max_frame: int = MAX_RESPONSE_FRAME) -> None:
        self._decoder = FrameDecoder(max_frame)
        self._pending: dict[int, tuple[Request, W]] = {}
        self._lock = threading.Lock()
        self.closed = False

    def __len__(self) -> int:
        return len(self._pending)

    def track(self, req: Request, waiter: W) -> None:
        """Expect a response to ``req``; call before sending, as the answer may come at once."""
        with self._lock:
            if self.closed:
                raise XtsdbConnectionError("the connection is closed")
            self._pending[req.id] = (req, waiter)

    def forget(self, req_id: int) -> None:
        """Stop waiting for ``req_id`` (timed out or cancelled); a late answer is dropped."""
        self._pending.pop(req_id, None)

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[Request, W, dict[str, Any]]]:
        """Bytes from the socket -> the requests they answer, with their waiters.

        :class:`ProtocolError` if the stream is unusable; the transport then
        drops the connection.
        """
        self._decoder.feed(data)
        done = []
        for msg in self._decoder:
            req_id, _ok = parse_response_header(msg)
            if req_id is None:  # the server could not read one of our requests: a bug, not data
                raise_for_error(msg)
                raise ProtocolError("server answered a request it could not identify")
            hit = self._pending.pop(req_id, None)
            if hit is not None:
                done.append((hit[0], hit[1], msg))
        return done

    def close(self) -> list[tuple[Request, W]]:
        """Mark the connection dead; the requests still waiting, which the transport fails."""
        with self._lock:
            self.closed = True
            failed = list(self._pending.values())
            self._pending.clear()
        return failed


@dataclass
class ClientCore(HistorianPlans):
    """Connection-independent client state: settings, ids, server limits, plans."""

    url: str
    token: str | None = field(default=None, repr=False)
    retry_writes: bool = False
    max_in_flight: int = 8
    max_points_per_frame: int = MAX_POINTS_PER_FRAME
    tls: bool | ssl.SSLContext | None = None
    ca: PathLike | None = None
    cert: PathLike | None = None
    key: PathLike | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(init=False, default=None, repr=False)
    host: str = field(init=False)
    port: int = field(init=False)
    server: str = field(init=False, default="")
    max_frame: int = field(init=False, default=DEFAULT_MAX_FRAME)
    _ids: Iterator[int] = field(init=False, default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        target = parse_target(self.url)
        if None not in (target.token, self.token) and target.token != self.token:
            raise InvalidInput("a token is given both in the URL and as token=; pass it once")
        self.token = self.token if self.token is not None else target.token
        self.url = target.url  # from here on, the URL is only for messages
        self.host, self.port = target.host, target.port
        self.ssl_context = client_context(self.tls, target.tls, self.ca, self.cert, self.key)
        if self.max_in_flight < 1 or self.max_points_per_frame < 1:
            raise InvalidInput("max_in_flight and max_points_per_frame must be >= 1")

    # -- requests ------------------------------------------------------------

    def _request(self, msg: dict[str, Any], points: int = 0) -> Request:
        op = msg["op"]
        # A write whose ack was lost may or may not be durable. Resending it is
        # harmless under later-wins semantics *if* nobody wrote those timestamps
        # in between, which only the caller knows: so writes retry only when the
        # caller opts in with retry_writes=True.
        retryable = op in IDEMPOTENT_OPS or (op == "write" and self.retry_writes)
        frame = encode_frame(msg, self.max_frame)
        return Request(msg["id"], op, frame, retryable, points)

    def simple(self, op: str) -> Request:
        """A request with no fields (``ping``, ``flush``, ``stats``)."""
        return self._request(request(op, next(self._ids)))

    def hello(self) -> Request:
        return self._request(hello_request(next(self._ids), self.token, CLIENT_NAME))

    def hello_done(self, resp: dict[str, Any]) -> None:
        """Take the server's limits from its hello response."""
        _version, self.server, self.max_frame, _auth = parse_hello_response(resp)

    def points_per_frame(self, bytes_per_point: int) -> int:
        room = (self.max_frame - _FRAME_OVERHEAD) // bytes_per_point
        return max(1, min(self.max_points_per_frame, room))

    def batch(self, cols: Columns) -> list[Request]:
        """The write requests for a drained :class:`~.batching.PointBuffer` (one, unless
        ``batch_size`` points do not fit the server's ``max_frame``)."""
        tags, ts, values, q = cols
        # One tag per batch is the common case (one sensor loop per client);
        # sending it as a scalar saves 4 bytes per point and the server's run split.
        one_tag = bool((tags == tags[0]).all())
        step = self.points_per_frame(17 if one_tag else 21)
        reqs = []
        for lo in range(0, len(ts), step):
            hi = lo + step
            tag_arg: int | Any = int(tags[0]) if one_tag else tags[lo:hi]
            msg = write_request(next(self._ids), tag_arg, ts[lo:hi], values[lo:hi], q[lo:hi])
            reqs.append(self._request(msg, len(ts[lo:hi])))
        return reqs

    # -- plans -----------------------------------------------------------------

    def single(self, req: Request) -> Plan[dict[str, Any]]:
        """Send one request; the checked response."""
        [resp] = yield Step([req], 1)
        raise_for_error(resp)
        return resp

    def write_plan(self, items: Iterable[tuple[Any, Any, Any, Any]]) -> Plan[int]:
        """Pipelined writes: at most ``max_in_flight`` frames unacknowledged; points written.

        Every item is checked before the first frame goes out, so bad input
        sends nothing. Frames are encoded as they are sent, not all at once.
        """
        checked = [write_columns(*item) for item in items]
        outstanding = written = 0
        for tags, ts, values, q in checked:
            # One id or name for every point, or a tag id per point.
            step = self.points_per_frame(17 if isinstance(tags, int | str) else 21)
            for lo in range(0, ts.shape[0], step):
                hi = lo + step
                part_tags = tags if isinstance(tags, int | str) else tags[lo:hi]
                part_q = None if q is None else q[lo:hi]
                msg = write_request(next(self._ids), part_tags, ts[lo:hi], values[lo:hi], part_q)
                wait = 1 if outstanding >= self.max_in_flight else 0
                resps = yield Step([self._request(msg, len(ts[lo:hi]))], wait)
                outstanding += 1 - wait
                written += sum(map(write_ack, resps))
        written += sum(map(write_ack, (yield Step([], outstanding))))
        return written

    def query_plan(
        self,
        tag: int | str,
        start: Any,
        end: Any,
        limit: int | None,
        descending: bool = False,
        good_only: bool = False,
    ) -> Plan[QueryResult]:
        """Points of ``tag`` in ``[start, end)``, fetched in pages that fit a frame.

        Pages continue after the last timestamp received (oldest first: from it
        + 1; newest first: up to it, excluded): a tag has one value per
        timestamp, so nothing is skipped or repeated. The server says whether a
        page was cut short (``more``), so a page that is exactly full costs no
        extra request.
        """
        lo, hi = to_us(start, "start"), to_us(end, "end")
        key = tag_key(tag)
        if limit is not None:
            limit = int_field(limit, "limit", 0)
        # A page must fit the server's frames both ways: its max_frame, and the
        # protocol's default limit, which bounds the responses it encodes.
        page = min(self.points_per_frame(17), (DEFAULT_MAX_FRAME - _FRAME_OVERHEAD) // 17)
        chunks: list[tuple[Any, Any, Any]] = []
        stats: dict[str, int] = {}
        got = 0
        while True:
            want = page if limit is None else min(page, limit - got)
            msg = query_request(
                next(self._ids), key, lo, hi, want, descending=descending, good_only=good_only
            )
            [resp] = yield Step([self._request(msg)], 1)
            ts, values, q = parse_points(resp)
            for name, n in (resp.get("stats") or {}).items():
                stats[str(name)] = stats.get(str(name), 0) + int(n)
            chunks.append((ts, values, q))
            got += ts.shape[0]
            more = resp.get("more")
            if not isinstance(more, bool):  # a server without "more": a full page may have it
                more = ts.shape[0] >= want
            if not more or ts.shape[0] == 0 or (limit is not None and got >= limit):
                break
            if descending:
                hi = int(ts[-1])
            else:
                lo = int(ts[-1]) + 1
        if len(chunks) == 1:
            ts, values, q = chunks[0]
        else:
            ts, values, q = (np.concatenate(col) for col in zip(*chunks, strict=True))
        return QueryResult(ts, values, q, stats)

    def last_plan(self, tags: Any) -> Plan[LastResult]:
        req = self._request(last_request(next(self._ids), tags))
        [resp] = yield Step([req], 1)
        return LastResult(*parse_last_response(resp), errors=parse_last_errors(resp))

    def stats_plan(self) -> Plan[dict[str, Any]]:
        resp = yield from self.single(self.simple("stats"))
        stats = resp.get("stats")
        if not isinstance(stats, dict):
            raise ProtocolError("malformed stats response: no 'stats' map")
        return stats

    def backup_plan(self, path: str) -> Plan[dict[str, Any]]:
        # Never retried (not in IDEMPOTENT_OPS): a second try would find its
        # destination already there.
        resp = yield from self.single(self._request(backup_request(next(self._ids), path)))
        return parse_backup_response(resp)


def write_ack(resp: dict[str, Any]) -> int:
    """Points acknowledged (durable) by a write response; raises the error it carries."""
    raise_for_error(resp)
    try:
        n: int = int_field(resp.get("n"), "n", 0)
    except InvalidInput as exc:
        raise ProtocolError(f"malformed write response: {exc}") from exc
    return n
