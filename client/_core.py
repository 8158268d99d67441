"""The sans-I/O client: everything both transports share, and no sockets.

- :func:`parse_target` turns ``xtsdb[s]://[:TOKEN@]host:port`` into an address,
  a TLS flag and a token (kept out of every repr and message: :func:`redact`).
- :class:`Session` is one connection's bookkeeping: the frame decoder and the
  requests awaiting a response, keyed by id (responses may come out of order).
  A transport gives each request a *waiter* (an ``asyncio.Future`` or a
  ``concurrent.futures.Future``) and completes it with the response dict.
- :class:`ClientCore` allocates ids and builds frames. A *plan* is a
  generator that yields :class:`Step` s (requests to send, how many of the
  oldest responses to wait for) and is sent the responses back, finally
  returning an operation's result. A transport's ``_drive`` loop runs any
  plan, so a paged query or a pipelined multi-frame write is written once and
  both clients do the same thing. The core holds the shared ones (one
  request, pipelined writes); each operation's plan is declared in
  :mod:`._ops` or :mod:`.historian`.
- The rules the transports apply and do not restate: which requests may be
  sent again after a lost connection, and only once (:class:`Request`); when
  a connection must be replaced (:func:`needs_replacing`).
"""

from __future__ import annotations

import itertools
import ssl
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from xtsdb.protocol import (
    DEFAULT_MAX_FRAME,
    HELLO,
    IDEMPOTENT_OPS,
    OPERATIONS,
    SUPPORTED_VERSIONS,
    WRITE,
    FrameDecoder,
    Message,
    Op,
    encode_frame,
    parse_response_header,
    raise_for_error,
)
from xtsdb.protocol.buffers import ReusableBuffers
from xtsdb.protocol.declare import Empty
from xtsdb.protocol.errors import InvalidInput, ProtocolError, XtsdbConnectionError

from ._convert import write_columns
from ._hosts import DEFAULT_PORT as DEFAULT_PORT  # the URL rules moved there; re-exported
from ._hosts import Hosts, parse_targets
from ._hosts import Target as Target
from ._hosts import parse_target as parse_target
from ._hosts import parse_url as parse_url
from ._hosts import redact as redact
from ._tls import PathLike, client_context
from .point_buffer import Columns

DEFAULT_URL = f"xtsdb://127.0.0.1:{DEFAULT_PORT}"
CLIENT_NAME = "xtsdb-python"
MAX_POINTS_PER_FRAME = 1_000_000
MAX_RESPONSE_FRAME = 1 << 30
"""Largest response frame accepted: generous, as the server is trusted more than
its clients, but bounded so a confused peer cannot make us allocate without limit."""
RECEIVE_BUFFER_BYTES = 64 * 1024 * 1024
"""Memory a client keeps to receive large answers in (reused once no result views it)."""
FRAME_OVERHEAD = 1024  # msgpack map, keys, bin headers, op and id: a few hundred bytes

T = TypeVar("T")
Resp = TypeVar("Resp", bound=Message)
W = TypeVar("W")


@dataclass(eq=False)
class Request:
    """One encoded request; ``retryable`` if sending it twice is harmless."""

    id: int
    op: str
    frame: bytes
    retryable: bool
    points: int = 0
    attempts: int = 0

    @property
    def may_retry(self) -> bool:
        """The retry rule: a retryable request lost with its connection is sent again
        once; a second failure is not a blip."""
        return self.retryable and not self.attempts

    def retry_once(self) -> bool:
        """Whether to send this request again after a lost connection (counted)."""
        if not self.may_retry:
            return False
        self.attempts += 1
        return True


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

    def __init__(
        self, max_frame: int = MAX_RESPONSE_FRAME, buffers: ReusableBuffers | None = None
    ) -> None:
        # Answers' large arrays are views of the buffer their frame was received in.
        self._decoder = FrameDecoder(max_frame, views=True, buffers=buffers)
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
        return self._answered()

    def read_buffer(self, size: int) -> memoryview:
        """Where a transport that reads into memory puts the next bytes (``recv_into``):
        a large answer's own buffer, so its arrays view what the socket wrote."""
        return self._decoder.read_buffer(size)

    def body_buffer(self) -> memoryview | None:
        """The rest of a large answer being received, for ``recv_into``; None between them."""
        return self._decoder.body_buffer()

    def received(self, n: int) -> list[tuple[Request, W, dict[str, Any]]]:
        """:meth:`feed` for ``n`` bytes written into the last :meth:`read_buffer`."""
        self._decoder.received(n)
        return self._answered()

    def _answered(self) -> list[tuple[Request, W, dict[str, Any]]]:
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


def needs_replacing(current: Session[Any] | None, broken: Session[Any] | None, alive: bool) -> bool:
    """The reconnect rule: connect if there is no connection, or if the one a caller
    saw fail (``broken``) is still the current one, or if it is dead (closed by the
    reader, or its socket closing: ``alive`` False). Another caller may already
    have replaced it: then the new one is used, not replaced again."""
    return current is None or current is broken or current.closed or not alive


@dataclass
class ClientCore:
    """Connection-independent client state: settings, ids, server limits, plans."""

    urls: str | Sequence[str]  # one URL, several hosts in one URL, or a list of URLs
    token: str | None = field(default=None, repr=False)
    retry_writes: bool = False
    max_in_flight: int = 8
    max_points_per_frame: int = MAX_POINTS_PER_FRAME
    tls: bool | ssl.SSLContext | None = None
    ca: PathLike | None = None
    cert: PathLike | None = None
    key: PathLike | None = field(default=None, repr=False)
    shuffle_hosts: bool = False
    read_your_writes: bool = False
    last_seq: int = field(init=False, default=0)
    """The highest sequence a write acknowledged to this client carried (cluster mode:
    a stream sequence; one node: a WAL LSN)."""
    hosts: Hosts = field(init=False, repr=False)
    url: str = field(init=False, default="")  # the server in use, redacted: for messages
    ssl_context: ssl.SSLContext | None = field(init=False, default=None, repr=False)
    server: str = field(init=False, default="")
    max_frame: int = field(init=False, default=DEFAULT_MAX_FRAME)
    _ids: Iterator[int] = field(init=False, default_factory=lambda: itertools.count(1))
    buffers: ReusableBuffers = field(
        init=False, repr=False, default_factory=lambda: ReusableBuffers(RECEIVE_BUFFER_BYTES)
    )

    def __post_init__(self) -> None:
        self.hosts = Hosts(parse_targets(self.urls), self.shuffle_hosts)
        target = self.hosts.target
        if None not in (target.token, self.token) and target.token != self.token:
            raise InvalidInput("a token is given both in the URL and as token=; pass it once")
        self.token = self.token if self.token is not None else target.token
        self.url = target.url
        self.urls = [t.url for t in self.hosts.targets]  # redacted: a repr shows no token
        self.ssl_context = client_context(self.tls, target.tls, self.ca, self.cert, self.key)
        if self.max_in_flight < 1 or self.max_points_per_frame < 1:
            raise InvalidInput("max_in_flight and max_points_per_frame must be >= 1")

    @property
    def host(self) -> str:
        return self.hosts.target.host

    @property
    def port(self) -> int:
        return self.hosts.target.port

    def use(self, index: int) -> None:
        """The transport connected to server ``index`` of :attr:`hosts`."""
        self.hosts.use(index)
        self.url = self.hosts.target.url

    # -- requests ------------------------------------------------------------

    def next_id(self) -> int:
        return next(self._ids)

    def request(self, msg: dict[str, Any], points: int = 0) -> Request:
        op = msg["op"]
        # A write whose ack was lost may or may not be durable. Resending it is
        # harmless under later-wins semantics *if* nobody wrote those timestamps
        # in between, which only the caller knows: so writes retry only when the
        # caller opts in with retry_writes=True.
        # The ops declared idempotent are safe to send twice. (hello is not retried: it
        # is part of connecting, which is what a retry would redo.)
        retryable = op in IDEMPOTENT_OPS or (op == WRITE.name and self.retry_writes)
        if self.read_your_writes and self.last_seq and op in DATA_READS:
            # Cluster mode: the answering replica waits until it has applied this far.
            msg = {**msg, "min_seq": self.last_seq}
        frame = encode_frame(msg, self.max_frame)
        return Request(msg["id"], op, frame, retryable, points)

    def simple(self, op: str) -> Request:
        """A request with no fields (``ping``, ``flush``, ``stats``)."""
        return self.request(OPERATIONS[op].encode(next(self._ids), Empty()))

    def hello(self) -> Request:
        versions = list(SUPPORTED_VERSIONS)
        return self.request(HELLO.build(next(self._ids), versions, self.token, CLIENT_NAME))

    def hello_done(self, resp: dict[str, Any]) -> None:
        """Take the server's limits from its hello response."""
        welcome = HELLO.parse_answer(resp)
        self.server, self.max_frame = welcome.server, welcome.max_frame

    def points_per_frame(self, bytes_per_point: int) -> int:
        room = (self.max_frame - FRAME_OVERHEAD) // bytes_per_point
        return max(1, min(self.max_points_per_frame, room))

    def batch(self, cols: Columns) -> list[Request]:
        """The write requests for a drained :class:`~.point_buffer.PointBuffer` (one, unless
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
            msg = WRITE.build(next(self._ids), tag_arg, ts[lo:hi], values[lo:hi], q[lo:hi])
            reqs.append(self.request(msg, len(ts[lo:hi])))
        return reqs

    # -- plans -----------------------------------------------------------------

    def single(self, req: Request) -> Plan[dict[str, Any]]:
        """Send one request; the checked response."""
        [resp] = yield Step([req], 1)
        raise_for_error(resp)
        return resp

    def call(self, msg: dict[str, Any]) -> Plan[dict[str, Any]]:
        """Send one request built from ``msg``; the checked response."""
        return (yield from self.single(self.request(msg)))

    def ask(self, op: Op[Any, Resp], req: Message) -> Plan[Resp]:
        """Send ``req`` as an ``op`` request; its answer, parsed by the op's declaration."""
        [resp] = yield Step([self.request(op.encode(next(self._ids), req))], 1)
        return op.parse_answer(resp)

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
                msg = WRITE.build(next(self._ids), part_tags, ts[lo:hi], values[lo:hi], part_q)
                wait = 1 if outstanding >= self.max_in_flight else 0
                resps = yield Step([self.request(msg, len(ts[lo:hi]))], wait)
                outstanding += 1 - wait
                written += sum(map(self.write_ack, resps))
        written += sum(map(self.write_ack, (yield Step([], outstanding))))
        return written

    def write_ack(self, resp: dict[str, Any]) -> int:
        """:func:`write_ack`, remembering the write's sequence for ``read_your_writes``."""
        ack = WRITE.parse_answer(resp)
        self.last_seq = max(self.last_seq, ack.lsn)
        return ack.n


DATA_READS = frozenset({"query", "aggregate", "last", "interpolate", "plot"})
"""The reads that carry ``min_seq`` with ``read_your_writes`` (docs/cluster.md)."""


def write_ack(resp: dict[str, Any]) -> int:
    """Points acknowledged (durable) by a write response; raises the error it carries."""
    return WRITE.parse_answer(resp).n
