"""``AsyncClient``: the asyncio transport around :mod:`._core`.

One connection, a :class:`_Link` (an ``asyncio.BufferedProtocol``): the event
loop reads straight into the session's buffers -- a large answer into the
buffer its arrays will view -- and the session completes the waiting futures
by request id, so any number of calls can be in
flight at once (``asyncio.gather`` pipelines them). Every operation is a plan
declared once (:mod:`._ops`, :mod:`.historian`) and run by
:meth:`AsyncClient._drive`; this module only moves bytes, waits and
reconnects, by the rules of :mod:`._core` (``write_point``, ``flush`` and the
flush timer are in :mod:`.aio_points`). A new connection is used only once its ``hello`` is
answered; other tasks wait in ``_reconnect`` until then.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar, cast

from xtsdb.protocol.errors import XtsdbConnectionError, XtsdbTimeout

from ._core import DEFAULT_URL, Plan, Request, Session, needs_replacing
from ._ops import Operations
from ._surface import AsyncDriver
from .aio_points import AsyncPointBatching

T = TypeVar("T")
Fut = asyncio.Future[dict[str, Any]]
Sent = tuple[Request, Fut, Session[Fut]]
READ_SIZE = 1 << 16  # the read buffer between large answers: 256 KiB measured slower


class _Link(asyncio.BufferedProtocol):
    """One connection: bytes in go to the session in place, frames out go to the transport."""

    def __init__(
        self, session: Session[Fut], url: str, lost: Callable[[Session[Fut], _Link, str], None]
    ) -> None:
        self.session, self.url, self._lost = session, url, lost
        self.transport: asyncio.Transport | None = None
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drained: asyncio.Future[None] | None = None  # set while writing is paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.session.read_buffer(READ_SIZE)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            done = self.session.received(nbytes)
        except Exception as exc:  # ProtocolError, an error the server sent without id
            self._lost(self.session, self, f"connection to {self.url} lost: {exc}")
            return
        for _req, fut, resp in done:
            if not fut.done():
                fut.set_result(resp)

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        reason = "the server closed the connection"
        if exc is not None:
            reason = f"connection to {self.url} lost: {exc}"
        self._lost(self.session, self, reason)
        self.resume_writing()  # a drain waiting for a dead connection returns
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)
            self._drained = None

    async def drain(self) -> None:
        """Wait while the transport's buffer is over its high-water mark."""
        if self._drained is not None:
            await asyncio.shield(self._drained)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def get_extra_info(self, name: str) -> Any:
        return None if self.transport is None else self.transport.get_extra_info(name)

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)


class AsyncClient(AsyncDriver, AsyncPointBatching, Operations):
    """An xtsdb client for asyncio; ``async with await AsyncClient.connect(url) as c: ...``.

    ``timeout`` is the default for every call (seconds, ``None`` = wait
    forever); each method also takes ``timeout=``. Points given to
    :meth:`write_point` are sent in batches of ``batch_size`` or after
    ``flush_interval`` seconds, whichever comes first.
    """

    def _setup(self) -> None:
        self._session: Session[Fut] | None = None
        self._writer: _Link | None = None
        self._connect_lock = asyncio.Lock()
        self._setup_points()

    @classmethod
    async def connect(cls, url: str = DEFAULT_URL, **kwargs: Any) -> AsyncClient:
        """A connected client (``hello`` done); keywords as for the constructor."""
        client = cls(url, **kwargs)
        await client._reconnect(None)
        return client

    async def __aenter__(self) -> AsyncClient:
        if self._session is None:
            await self._reconnect(None)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- transport ----------------------------------------------------------------

    async def _drive(self, plan: Plan[T], timeout: float | None) -> T:
        """Run a core plan: send its requests, hand it the responses, return its result."""
        timeout = self.timeout if timeout is None else timeout
        inflight: deque[Sent] = deque()
        try:
            step = next(plan)
            while True:
                if step.send:
                    await self._ensure_connected()
                    inflight.extend(self._send(req) for req in step.send)
                    await self._drain()
                resps = [await self._wait(inflight.popleft(), timeout) for _ in range(step.wait)]
                step = plan.send(resps)
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            for req, fut, session in inflight:  # abandoned after an error
                session.forget(req.id)
                fut.cancel()
            plan.close()

    def _send(self, req: Request) -> Sent:
        session, writer = self._session, self._writer
        if session is None or writer is None or session.closed:
            raise XtsdbConnectionError(f"not connected to {self.url}")
        return self._send_on(session, writer, req)

    @staticmethod
    def _send_on(session: Session[Fut], writer: _Link, req: Request) -> Sent:
        fut: Fut = asyncio.get_running_loop().create_future()
        session.track(req, fut)
        writer.write(req.frame)
        return req, fut, session

    async def _send_or_reconnect(self, req: Request) -> Sent:
        await self._ensure_connected()
        return self._send(req)  # no await in between: the connection is the one just checked

    async def _drain(self) -> None:
        # Backpressure for big writes; a lost connection is reported by the reader.
        if self._writer is not None:
            await self._writer.drain()

    async def _wait(self, sent: Sent, timeout: float | None) -> dict[str, Any]:
        req, fut, session = sent
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            session.forget(req.id)
            raise XtsdbTimeout(f"no response to {req.op} within {timeout} s") from None
        except asyncio.CancelledError:
            session.forget(req.id)
            raise
        except XtsdbConnectionError:
            if not req.retry_once():
                raise
        await self._reconnect(session)
        return await self._wait(self._send(req), timeout)

    async def _ensure_connected(self) -> None:
        session, writer = self._session, self._writer
        if needs_replacing(session, None, writer is not None and not writer.is_closing()):
            await self._reconnect(session)

    async def _reconnect(self, broken: Session[Fut] | None) -> None:
        """Replace ``broken`` (or connect the first time), unless another call already did."""
        if self._closed:
            raise XtsdbConnectionError("the client is closed")
        async with self._connect_lock:
            current, writer = self._session, self._writer
            alive = writer is not None and not writer.is_closing()
            if not needs_replacing(current, broken, alive):
                return
            if current is not None and writer is not None:
                self._drop(current, writer, "the connection was replaced")
                self.reconnects += 1
            await self._open()

    async def _open(self) -> None:
        """Connect to the first server that answers, in the order of :class:`~._hosts.Hosts`."""
        order = self._core.hosts.order()
        for k, index in enumerate(order):
            try:
                await self._open_one(index)
                return
            except (XtsdbConnectionError, XtsdbTimeout):
                if k == len(order) - 1:
                    raise  # the last one's error; each was tried once

    async def _open_one(self, index: int) -> None:
        core = self._core
        target = core.hosts.targets[index]
        session: Session[Fut] = Session(buffers=core.buffers)
        try:
            tls: dict[str, Any] = {}
            if core.ssl_context is not None:  # the timeout below covers the handshake too
                tls = {"ssl": core.ssl_context, "server_hostname": target.host}
            conn = asyncio.get_running_loop().create_connection(
                lambda: _Link(session, target.url, self._drop), target.host, target.port, **tls
            )
            _transport, writer = await asyncio.wait_for(conn, self.timeout)
        except TimeoutError:
            raise XtsdbTimeout(f"connecting to {target.url} timed out") from None
        except OSError as exc:
            raise XtsdbConnectionError(f"cannot connect to {target.url}: {exc}") from exc
        try:
            hello = self._send_on(session, writer, core.hello())
            core.hello_done(await self._wait(hello, self.timeout))
        except BaseException:
            self._drop(session, writer, "hello failed")
            raise
        # Published only once hello is answered: other tasks wait in _reconnect until
        # then, so their requests follow hello's answer (and use the server's max_frame).
        core.use(index)
        self._session, self._writer = session, writer

    def _drop(self, session: Session[Fut], writer: _Link, reason: str) -> None:
        for req, fut in session.close():
            if not fut.done():
                fut.set_exception(XtsdbConnectionError(f"{reason} (awaiting {req.op} #{req.id})"))
        writer.close()

    async def close(self) -> None:
        """Flush buffered points, then close the connection (idempotent). Raises the
        errors of failed batches that no flush() or write_point() has reported."""
        if self._closed:
            return
        try:
            upto = await self._send_batch(wait_window=False)
            await self._await_batches(upto, None)
            self._points.unreported(upto)
        finally:
            self._points.shut()
            self._stop_timer()
            if self._session is not None and self._writer is not None:
                self._drop(self._session, self._writer, "the client was closed")
                await self._writer.wait_closed()
