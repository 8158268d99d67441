"""``Client``: the blocking-socket transport around :mod:`._core`.

The same shape as :mod:`.aio` with threads for tasks: a reader thread feeds
received bytes to the session and completes ``concurrent.futures.Future`` s by
request id, so a caller can send several frames before reading their acks
(pipelined writes, ``write_point`` batches) and several threads may share a
client. ``write_point``, ``flush`` and the flusher thread are in
:mod:`.sync_points`. Lock order: ``_connect_lock`` -> ``_send_lock`` (after
those of :mod:`.sync_points`). A new connection is used only once its ``hello``
is answered, so no request of another thread reaches the server before it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from xtsdb.protocol.errors import (
    InvalidInput,
    XtsdbConnectionError,
    XtsdbTimeout,
)

from . import dataframes
from ._core import DEFAULT_URL, MAX_POINTS_PER_FRAME, ClientCore, Plan, Request, Session
from ._tls import TlsSocket
from .historian import HistorianMethods
from .results import LastResult, QueryResult
from .sync_points import PointBatching

T = TypeVar("T")
Fut = Future[dict[str, Any]]
Sent = tuple[Request, Fut, Session[Fut]]
Sock = socket.socket | TlsSocket
READ_SIZE = 1 << 18


class Client(PointBatching, HistorianMethods):
    """A blocking xtsdb client; ``with xtsdb.client.connect(url) as c: ...``.

    Same operations, arguments and semantics as
    :class:`~xtsdb.client.aio.AsyncClient`, without ``await``. Connects in the
    constructor. Safe to share between threads.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float | None = 10.0,
        token: str | None = None,
        retry_writes: bool = False,
        batch_size: int = 10_000,
        flush_interval: float = 0.1,
        max_in_flight: int = 8,
        max_points_per_frame: int = MAX_POINTS_PER_FRAME,
        tls: bool | ssl.SSLContext | None = None,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
    ) -> None:
        if batch_size < 1 or flush_interval <= 0:
            raise InvalidInput("batch_size must be >= 1 and flush_interval > 0")
        self._core = ClientCore(
            url, token, retry_writes, max_in_flight, max_points_per_frame, tls, ca, cert, key
        )
        self.timeout = timeout
        self._session: Session[Fut] | None = None
        self._sock: Sock | None = None
        self._connect_lock = threading.Lock()
        self._send_lock = threading.Lock()  # one frame at a time on the socket
        self._closed = False
        self._init_points(batch_size, flush_interval)
        self.reconnects = 0
        self._reconnect(None)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self._core.url

    @property
    def server(self) -> str:
        return self._core.server

    @property
    def max_frame(self) -> int:
        return self._core.max_frame

    # -- operations -----------------------------------------------------------------

    def write(
        self,
        tag: Any,
        timestamps: Any,
        values: Any,
        qualities: Any = None,
        *,
        timeout: float | None = None,
    ) -> int:
        """Write arrays of points; the number written, once durable (see AsyncClient.write)."""
        return self._drive(self._core.write_plan([(tag, timestamps, values, qualities)]), timeout)

    def write_many(
        self, items: Iterable[tuple[Any, Any, Any, Any]], *, timeout: float | None = None
    ) -> int:
        """Write several ``(tag, timestamps, values, qualities)`` items, pipelined together."""
        return self._drive(self._core.write_plan(items), timeout)

    def query(
        self,
        tag: int | str,
        start: Any,
        end: Any,
        limit: int | None = None,
        *,
        descending: bool = False,
        good_only: bool = False,
        timeout: float | None = None,
    ) -> QueryResult:
        """Points of ``tag`` (id or name) with ``start <= ts < end`` (see AsyncClient.query)."""
        plan = self._core.query_plan(tag, start, end, limit, descending, good_only)
        return self._drive(plan, timeout)

    def last(self, tags: Any, *, timeout: float | None = None) -> LastResult:
        """The latest point of each tag in ``tags`` (an id, a name, or a sequence of them)."""
        return self._drive(self._core.last_plan(tags), timeout)

    def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The server's and engine's counters."""
        return self._drive(self._core.stats_plan(), timeout)

    def ping(self, *, timeout: float | None = None) -> float:
        """Round trip to the server, in seconds."""
        t0 = time.perf_counter()
        self._drive(self._core.single(self._core.simple("ping")), timeout)
        return time.perf_counter() - t0

    def flush_server(self, *, timeout: float | None = None) -> None:
        """Ask the server to seal its in-memory points into blocks (not :meth:`flush`)."""
        self._drive(self._core.single(self._core.simple("flush")), timeout)

    def backup(self, path: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Have the server copy its data directory to ``path`` (see AsyncClient.backup)."""
        return self._drive(self._core.backup_plan(path), timeout)

    def write_df(self, df: Any, tag_column: str | None = None, *, timeout: float | None = None,
                 **options: Any) -> int:  # fmt: skip
        """Write a pandas DataFrame, wide or long (see AsyncClient.write_df)."""
        return self.write_many(dataframes.frame_items(df, tag_column, **options), timeout=timeout)

    def query_df(self, tags: Any, start: Any, end: Any, *, layout: str = "wide",
                 timeout: float | None = None) -> Any:  # fmt: skip
        """Points of ``tags`` in ``[start, end)`` as a DataFrame (see AsyncClient.query_df)."""
        dataframes.pandas()  # before any request: the extra may be missing
        labels = [tags] if isinstance(tags, int | str) else list(tags)
        results = [self.query(t, start, end, timeout=timeout) for t in labels]
        return dataframes.results_frame(labels, results, layout)

    # -- transport ---------------------------------------------------------------------

    def _drive(self, plan: Plan[T], timeout: float | None) -> T:
        """Run a core plan: send its requests, hand it the responses, return its result."""
        timeout = self.timeout if timeout is None else timeout
        inflight: deque[Sent] = deque()
        try:
            step = next(plan)
            while True:
                if step.send:
                    self._ensure_connected()
                    inflight.extend(self._send(req) for req in step.send)
                resps = [self._wait(inflight.popleft(), timeout) for _ in range(step.wait)]
                step = plan.send(resps)
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            for req, _fut, session in inflight:
                session.forget(req.id)
            plan.close()

    def _send(self, req: Request) -> Sent:
        """Send ``req`` on the current connection. One known to be dead is replaced
        first: nothing was sent on it, so this is safe for every request."""
        for attempt in range(2):
            with self._send_lock:
                session, sock = self._session, self._sock
                if session is not None and sock is not None and not session.closed:
                    with contextlib.suppress(XtsdbConnectionError):  # closed just now
                        return self._send_on(session, sock, req)
            if attempt:
                break
            self._reconnect(session)
        raise XtsdbConnectionError(f"not connected to {self.url}")

    def _send_on(self, session: Session[Fut], sock: Sock, req: Request) -> Sent:
        # Under _send_lock, or on a connection not published yet (hello).
        fut: Fut = Future()
        session.track(req, fut)  # before sending: the answer may come at once
        try:
            sock.sendall(req.frame)
        except OSError as exc:
            # A partial frame leaves the stream unusable, whatever the cause (a
            # stalled send timing out included). Dropping the session fails this
            # request's future too, so _wait decides about a retry as for a lost ack.
            self._drop(session, sock, f"sending to {self.url} failed: {exc}")
        return req, fut, session

    def _wait(self, sent: Sent, timeout: float | None) -> dict[str, Any]:
        req, fut, session = sent
        try:
            return fut.result(timeout)
        except TimeoutError:
            session.forget(req.id)
            raise XtsdbTimeout(f"no response to {req.op} within {timeout} s") from None
        except XtsdbConnectionError:
            if not req.retryable or req.attempts:
                raise
        req.attempts += 1  # once: a second failure is not a blip
        self._reconnect(session)
        return self._wait(self._send(req), timeout)

    def _ensure_connected(self) -> None:
        session = self._session
        if session is None or session.closed:
            self._reconnect(session)

    def _reconnect(self, broken: Session[Fut] | None) -> None:
        if self._closed:
            raise XtsdbConnectionError("the client is closed")
        with self._connect_lock:
            current, sock = self._session, self._sock
            if current is not None and sock is not None:
                if current is not broken and not current.closed:
                    return
                self._drop(current, sock, "the connection was replaced")
                self.reconnects += 1
            self._open()

    def _open(self) -> None:
        core = self._core
        try:
            raw = socket.create_connection((core.host, core.port), self.timeout)
        except TimeoutError:
            raise XtsdbTimeout(f"connecting to {core.url} timed out") from None
        except OSError as exc:
            raise XtsdbConnectionError(f"cannot connect to {core.url}: {exc}") from exc
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small requests go now
        session: Session[Fut] = Session()
        ctx = core.ssl_context
        sock: Sock = raw if ctx is None else TlsSocket.connect(raw, ctx, core.host, core.url)
        reader = threading.Thread(
            target=self._read_loop, args=(sock, session), name="xtsdb-read", daemon=True
        )
        reader.start()
        try:
            # Published only once hello is answered: another thread's request must
            # never reach the server before hello and its token.
            core.hello_done(self._wait(self._send_on(session, sock, core.hello()), self.timeout))
        except BaseException:
            self._drop(session, sock, "hello failed")
            raise
        with self._send_lock:
            self._session, self._sock = session, sock

    def _read_loop(self, sock: Sock, session: Session[Fut]) -> None:
        reason = "the server closed the connection"
        try:
            while not session.closed:
                try:
                    data = sock.recv(READ_SIZE)
                except TimeoutError:  # the socket timeout is for sendall; idle is fine
                    continue
                if not data:
                    break
                for _req, fut, resp in session.feed(data):
                    fut.set_result(resp)
        except Exception as exc:  # OSError, ProtocolError, an error the server sent without id
            reason = f"connection to {self.url} lost: {exc}"
        finally:
            self._drop(session, sock, reason)
            with self._send_lock:  # not under a sendall in flight, so the fd is not reused early
                sock.close()

    def _drop(self, session: Session[Fut], sock: Sock, reason: str) -> None:
        for req, fut in session.close():
            fut.set_exception(XtsdbConnectionError(f"{reason} (awaiting {req.op} #{req.id})"))
        # shutdown, not close: it wakes the reader thread blocked in recv(), and the
        # fd stays valid until that thread closes it, so it is never reused under it.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Flush buffered points, then close the connection (idempotent). Raises the
        errors of failed batches that no flush() or write_point() has reported."""
        if self._closed:
            return
        try:
            upto = self._send_batch(wait_window=False)
            self._await_batches(upto, None)
            err = self._ledger.for_close(upto)
            if err is not None:
                raise err
        finally:
            self._closed = True
            self._attention = True  # so write_point raises instead of buffering into the void
            with self._buf_cond:
                self._buf_cond.notify_all()
            if self._session is not None and self._sock is not None:
                self._drop(self._session, self._sock, "the client was closed")
            if self._flusher is not None and self._flusher is not threading.current_thread():
                self._flusher.join(timeout=5)


def connect(url: str = DEFAULT_URL, **kwargs: Any) -> Client:
    """A connected :class:`Client`; keywords as for its constructor."""
    return Client(url, **kwargs)
