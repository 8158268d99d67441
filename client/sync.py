"""``Client``: the blocking-socket transport around :mod:`._core`.

The same shape as :mod:`.aio` with threads for tasks: a reader thread feeds
received bytes to the session and completes ``concurrent.futures.Future`` s by
request id, so a caller can send several frames before reading their acks
(pipelined writes, ``write_point`` batches) and several threads may share a
client. Every operation is a plan declared once (:mod:`._ops`,
:mod:`.historian`) and run by :meth:`Client._drive`; this module only moves
bytes, waits and reconnects, by the rules of :mod:`._core`. ``write_point``,
``flush`` and the flusher thread are in :mod:`.sync_points`. Lock order:
``_connect_lock`` -> ``_send_lock`` (after those of :mod:`.sync_points`). A
new connection is used only once its ``hello`` is answered, so no request of
another thread reaches the server before it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from xtsdb.protocol.errors import XtsdbConnectionError, XtsdbTimeout

from ._core import DEFAULT_URL, Plan, Request, Session, needs_replacing
from ._ops import Operations
from ._surface import SyncDriver
from ._tls import TlsSocket
from .sync_points import PointBatching

T = TypeVar("T")
Fut = Future[dict[str, Any]]
Sent = tuple[Request, Fut, Session[Fut]]
Sock = socket.socket | TlsSocket
READ_SIZE = 1 << 18


class Client(SyncDriver, PointBatching, Operations):
    """A blocking xtsdb client; ``with xtsdb.client.connect(url) as c: ...``.

    Same operations, arguments and semantics as
    :class:`~xtsdb.client.aio.AsyncClient`, without ``await``. Connects in the
    constructor. Safe to share between threads.
    """

    def _setup(self) -> None:
        self._session: Session[Fut] | None = None
        self._sock: Sock | None = None
        self._connect_lock = threading.Lock()
        self._send_lock = threading.Lock()  # one frame at a time on the socket
        self._setup_points()
        self._reconnect(None)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

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
            if not req.retry_once():
                raise
        self._reconnect(session)
        return self._wait(self._send(req), timeout)

    def _ensure_connected(self) -> None:
        session = self._session
        if needs_replacing(session, None, alive=True):  # a dead socket closes its session
            self._reconnect(session)

    def _reconnect(self, broken: Session[Fut] | None) -> None:
        if self._closed:
            raise XtsdbConnectionError("the client is closed")
        with self._connect_lock:
            current, sock = self._session, self._sock
            if not needs_replacing(current, broken, alive=sock is not None):
                return
            if current is not None and sock is not None:
                self._drop(current, sock, "the connection was replaced")
                self.reconnects += 1
            self._open()

    def _open(self) -> None:
        """Connect to the first server that answers, in the order of :class:`~._hosts.Hosts`."""
        core = self._core
        order = core.hosts.order()
        for k, index in enumerate(order):
            try:
                self._open_one(index)
                return
            except (XtsdbConnectionError, XtsdbTimeout):
                if k == len(order) - 1:
                    raise  # the last one's error; each was tried once

    def _open_one(self, index: int) -> None:
        core = self._core
        target = core.hosts.targets[index]
        try:
            raw = socket.create_connection((target.host, target.port), self.timeout)
        except TimeoutError:
            raise XtsdbTimeout(f"connecting to {target.url} timed out") from None
        except OSError as exc:
            raise XtsdbConnectionError(f"cannot connect to {target.url}: {exc}") from exc
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small requests go now
        session: Session[Fut] = Session(buffers=core.buffers)
        ctx = core.ssl_context
        sock: Sock = raw if ctx is None else TlsSocket.connect(raw, ctx, target.host, target.url)
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
            core.use(index)
            self._session, self._sock = session, sock

    def _read_loop(self, sock: Sock, session: Session[Fut]) -> None:
        reason = "the server closed the connection"
        try:
            while not session.closed:
                try:
                    done = self._receive(sock, session)
                except TimeoutError:  # the socket timeout is for sendall; idle is fine
                    continue
                if done is None:
                    break
                for _req, fut, resp in done:
                    fut.set_result(resp)
        except Exception as exc:  # OSError, ProtocolError, an error the server sent without id
            reason = f"connection to {self.url} lost: {exc}"
        finally:
            self._drop(session, sock, reason)
            with self._send_lock:  # not under a sendall in flight, so the fd is not reused early
                sock.close()

    @staticmethod
    def _receive(sock: Sock, session: Session[Fut]) -> list[tuple[Request, Fut, Any]] | None:
        """The answers completed by the next bytes from ``sock``; None once it is closed."""
        if isinstance(sock, TlsSocket) or (into := session.body_buffer()) is None:
            # TLS, or between large answers: bytes as they come.
            data = sock.recv(READ_SIZE)
            return session.feed(data) if data else None
        # The rest of a large answer, straight into the buffer its arrays will view.
        n = sock.recv_into(into)
        return session.received(n) if n else None

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
            self._points.unreported(upto)
        finally:
            self._points.shut()
            self._stop_flusher()
            if self._session is not None and self._sock is not None:
                self._drop(self._session, self._sock, "the client was closed")
            if self._flusher is not None and self._flusher is not threading.current_thread():
                self._flusher.join(timeout=5)


def connect(url: str = DEFAULT_URL, **kwargs: Any) -> Client:
    """A connected :class:`Client`; keywords as for its constructor."""
    return Client(url, **kwargs)
