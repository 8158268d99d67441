"""``AsyncClient``: the asyncio transport around :mod:`._core`.

One connection; a reader task feeds received bytes to the session, which
completes the waiting futures by request id, so any number of calls can be in
flight at once (``asyncio.gather`` pipelines them). Every operation is a plan
from the core run by :meth:`AsyncClient._drive`; this module only moves bytes,
waits and reconnects (``write_point``, ``flush`` and the flush timer are in
:mod:`.aio_points`). A new connection is used only once its ``hello`` is
answered; other tasks wait in ``_reconnect`` until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Iterable
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
from .aio_points import AsyncPointBatching
from .historian import AsyncHistorianMethods
from .results import LastResult, QueryResult

T = TypeVar("T")
Fut = asyncio.Future[dict[str, Any]]
Sent = tuple[Request, Fut, Session[Fut]]
READ_SIZE = 1 << 18


class AsyncClient(AsyncPointBatching, AsyncHistorianMethods):
    """An xtsdb client for asyncio; ``async with await AsyncClient.connect(url) as c: ...``.

    ``timeout`` is the default for every call (seconds, ``None`` = wait
    forever); each method also takes ``timeout=``. Points given to
    :meth:`write_point` are sent in batches of ``batch_size`` or after
    ``flush_interval`` seconds, whichever comes first.
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
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connect_lock = asyncio.Lock()
        self._closed = False
        self._init_points(batch_size, flush_interval)
        self.reconnects = 0
        """How many times a broken connection was replaced."""

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

    @property
    def url(self) -> str:
        return self._core.url

    @property
    def server(self) -> str:
        """The server's name and version from its hello response."""
        return self._core.server

    @property
    def max_frame(self) -> int:
        """The largest frame the server accepts, from its hello response."""
        return self._core.max_frame

    # -- operations -----------------------------------------------------------

    async def write(
        self,
        tag: Any,
        timestamps: Any,
        values: Any,
        qualities: Any = None,
        *,
        timeout: float | None = None,
    ) -> int:
        """Write arrays of points; returns the number written once they are durable.

        ``tag`` is one tag id, or an array with a tag id per point. Timestamps
        are int64 microseconds or ``datetime64``. Large writes are split into
        frames under the server's limit and pipelined. Not retried on a lost
        connection unless the client was made with ``retry_writes=True``.
        """
        return await self._drive(
            self._core.write_plan([(tag, timestamps, values, qualities)]), timeout
        )

    async def write_many(
        self, items: Iterable[tuple[Any, Any, Any, Any]], *, timeout: float | None = None
    ) -> int:
        """Write several ``(tag, timestamps, values, qualities)`` items, pipelined together."""
        return await self._drive(self._core.write_plan(items), timeout)

    async def query(
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
        """Points of ``tag`` (id or name) with ``start <= ts < end`` (int us or aware
        datetimes); newest first with ``descending``, only Good ones with ``good_only``."""
        plan = self._core.query_plan(tag, start, end, limit, descending, good_only)
        return await self._drive(plan, timeout)

    async def last(self, tags: Any, *, timeout: float | None = None) -> LastResult:
        """The latest point of each tag in ``tags`` (an id, a name, or a sequence of them)."""
        return await self._drive(self._core.last_plan(tags), timeout)

    async def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The server's and engine's counters."""
        return await self._drive(self._core.stats_plan(), timeout)

    async def ping(self, *, timeout: float | None = None) -> float:
        """Round trip to the server, in seconds."""
        t0 = time.perf_counter()
        await self._drive(self._core.single(self._core.simple("ping")), timeout)
        return time.perf_counter() - t0

    async def flush_server(self, *, timeout: float | None = None) -> None:
        """Ask the server to seal its in-memory points into blocks (not :meth:`flush`)."""
        await self._drive(self._core.single(self._core.simple("flush")), timeout)

    async def backup(self, path: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Have the server copy its data directory to ``path`` while writes go on.

        ``path`` is on the server's filesystem, inside its ``backup_dir`` (a
        relative path is taken relative to it), and must not exist yet. Returns
        what the server reports: ``path``, ``bytes``, ``checkpoint_lsn``,
        ``wal_last_lsn``, ``seconds``, ... A large database takes a while: pass
        a ``timeout`` that allows for it. Restore by starting a server on the copy.
        """
        return await self._drive(self._core.backup_plan(path), timeout)

    async def write_df(self, df: Any, tag_column: str | None = None, *,
                       timeout: float | None = None, **options: Any) -> int:  # fmt: skip
        """Write a pandas DataFrame; the number of points, once durable.

        Its ``DatetimeIndex`` must have a time zone. Wide (``tag_column=None``):
        a column per tag, labelled by name (str) or id (int), NaN = no point.
        Long: ``tag_column`` names the tag column; ``value_column`` ("value")
        and ``quality_column`` ("quality", optional) the others. See
        :mod:`xtsdb.client.dataframes`.
        """
        items = dataframes.frame_items(df, tag_column, **options)
        return await self.write_many(items, timeout=timeout)

    async def query_df(self, tags: Any, start: Any, end: Any, *, layout: str = "wide",
                       timeout: float | None = None) -> Any:  # fmt: skip
        """Points of ``tags`` (names or ids) in ``[start, end)`` as a DataFrame with a UTC
        ``time`` index: ``wide``, a column per tag (outer join on timestamp, NaN where
        a tag has no point), or ``long``, rows of tag, value and quality."""
        dataframes.pandas()  # before any request: the extra may be missing
        labels = [tags] if isinstance(tags, int | str) else list(tags)
        queries = (self.query(t, start, end, timeout=timeout) for t in labels)
        results = await asyncio.gather(*queries)
        return dataframes.results_frame(labels, results, layout)

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
    def _send_on(session: Session[Fut], writer: asyncio.StreamWriter, req: Request) -> Sent:
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
            with contextlib.suppress(OSError):
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
            if not req.retryable or req.attempts:
                raise
        req.attempts += 1  # once: a second failure is not a blip
        await self._reconnect(session)
        return await self._wait(self._send(req), timeout)

    async def _ensure_connected(self) -> None:
        session = self._session
        if session is None or session.closed or self._writer is None or self._writer.is_closing():
            await self._reconnect(session)

    async def _reconnect(self, broken: Session[Fut] | None) -> None:
        """Replace ``broken`` (or connect the first time), unless another call already did."""
        if self._closed:
            raise XtsdbConnectionError("the client is closed")
        async with self._connect_lock:
            current, writer = self._session, self._writer
            if current is not None and writer is not None:
                if current is not broken and not current.closed and not writer.is_closing():
                    return
                self._drop(current, writer, "the connection was replaced")
                self.reconnects += 1
            await self._open()

    async def _open(self) -> None:
        core = self._core
        try:
            tls: dict[str, Any] = {}
            if core.ssl_context is not None:  # the timeout below covers the handshake too
                tls = {"ssl": core.ssl_context, "server_hostname": core.host}
            conn = asyncio.open_connection(core.host, core.port, **tls)
            reader, writer = await asyncio.wait_for(conn, self.timeout)
        except TimeoutError:
            raise XtsdbTimeout(f"connecting to {core.url} timed out") from None
        except OSError as exc:
            raise XtsdbConnectionError(f"cannot connect to {core.url}: {exc}") from exc
        session: Session[Fut] = Session()
        self._reader_task = asyncio.create_task(self._read_loop(reader, writer, session))
        try:
            hello = self._send_on(session, writer, core.hello())
            core.hello_done(await self._wait(hello, self.timeout))
        except BaseException:
            self._drop(session, writer, "hello failed")
            raise
        # Published only once hello is answered: other tasks wait in _reconnect until
        # then, so their requests follow hello's answer (and use the server's max_frame).
        self._session, self._writer = session, writer

    async def _read_loop(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: Session[Fut]
    ) -> None:
        reason = "the server closed the connection"
        try:
            while data := await reader.read(READ_SIZE):
                for _req, fut, resp in session.feed(data):
                    if not fut.done():
                        fut.set_result(resp)
        except Exception as exc:  # OSError, ProtocolError, an error the server sent without id
            reason = f"connection to {self.url} lost: {exc}"
        finally:  # also on cancellation by close()
            self._drop(session, writer, reason)

    def _drop(self, session: Session[Fut], writer: asyncio.StreamWriter, reason: str) -> None:
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
            err = self._ledger.for_close(upto)
            if err is not None:
                raise err
        finally:
            self._closed = True
            self._attention = True  # so write_point raises instead of buffering into the void
            if self._timer is not None:
                self._timer.cancel()
            for task in list(self._timer_tasks):
                task.cancel()
            if self._session is not None and self._writer is not None:
                self._drop(self._session, self._writer, "the client was closed")
                with contextlib.suppress(OSError):
                    await self._writer.wait_closed()
            if self._reader_task is not None:
                self._reader_task.cancel()
                await asyncio.gather(self._reader_task, return_exceptions=True)
