"""``write_point``, ``flush`` and the flush timer of :class:`~.aio.AsyncClient`.

A mixin, so the transport (:mod:`.aio`) stays about moving frames. Points go
into one :class:`~.batching.PointBuffer` shared by every task; a batch is sent
when it holds ``batch_size`` points (by the ``write_point`` that filled it),
``flush_interval`` after its first point (by a timer task), or by ``flush``.
:mod:`._ledger` numbers the batches as they are sent, so a ``flush`` waits for
every batch sent before it returned, whichever task sent it and whoever else
waits for it too.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from xtsdb.protocol import GOOD_QUALITY
from xtsdb.protocol.errors import XtsdbConnectionError, XtsdbError

from ._core import ClientCore, Request, Session
from ._ledger import Batch, Ledger
from .batching import PointBuffer

Fut = asyncio.Future[dict[str, Any]]
Sent = tuple[Request, Fut, Session[Fut]]


class AsyncPointBatching:
    """Mixin of :class:`~.aio.AsyncClient`: the ``write_point`` buffer and its batches."""

    # The transport's, used here:
    _core: ClientCore
    timeout: float | None
    _closed: bool

    async def _send_or_reconnect(self, req: Request) -> Sent:
        raise NotImplementedError

    async def _ensure_connected(self) -> None:
        raise NotImplementedError

    async def _reconnect(self, broken: Session[Fut] | None) -> None:
        raise NotImplementedError

    async def _drain(self) -> None:
        raise NotImplementedError

    def _init_points(self, batch_size: int, flush_interval: float) -> None:
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._batch_lock = asyncio.Lock()  # take + send of a batch, so batches keep their order
        self._buffer = PointBuffer()
        self._appenders = self._buffer.appenders
        self._buffered_ts = self._buffer.timestamps
        self._ledger: Ledger[Fut] = Ledger()  # write_point batches: in flight, failed, told
        self._resend_lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_tasks: set[asyncio.Task[None]] = set()
        self._bg_error: BaseException | None = None
        self._attention = False  # a batch failed, or the timer did: write_point must look

    async def write_point(
        self, tag: int, ts: Any, value: float, quality: int = GOOD_QUALITY
    ) -> None:
        """Buffer one point; see the class docstring for when it is sent.

        Errors of earlier batches are raised here (this point is then not
        buffered). Call :meth:`flush` to wait until everything is durable.
        """
        if self._attention:
            self._report()
        add_tag, add_ts, add_value, add_q = self._appenders  # PointBuffer's inlined fast path
        try:
            add_tag(tag)
            add_ts(ts)
            add_value(value)
            add_q(quality)
        except (TypeError, OverflowError, ValueError):
            self._buffer.append_slow(tag, ts, value, quality)
        n = len(self._buffered_ts)
        if n >= self._batch_size:
            await self._send_batch(wait_window=True)
        elif n == 1:
            self._timer = asyncio.get_running_loop().call_later(
                self._flush_interval, self._on_timer
            )

    async def flush(self, *, timeout: float | None = None) -> None:
        """Send buffered points; return once every point buffered before this call, by
        any task, is durable. Raises if a batch failed since this task's last flush."""
        if self._closed:
            raise XtsdbConnectionError("the client is closed")
        upto = await self._send_batch(wait_window=False)
        await self._await_batches(upto, timeout)
        err = self._ledger.for_flush(upto)
        if err is not None:
            raise err

    def _report(self) -> None:
        """write_point's early warning: an error from the flush timer, or batches that
        failed and this task was not told of yet (the point is then not buffered)."""
        if self._closed:
            raise XtsdbConnectionError("the client is closed")
        self._attention = False
        if self._bg_error is not None:
            err, self._bg_error = self._bg_error, None
            raise err
        failed = self._ledger.for_write_point()
        if failed is not None:
            raise failed

    def _on_timer(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self._timed_flush())
        self._timer_tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._timer_tasks.discard)

    async def _timed_flush(self) -> None:
        try:
            await self._send_batch(wait_window=False)
        except Exception as exc:  # the points stay buffered; raised by the next write_point
            self._bg_error = self._bg_error or exc
            self._attention = True

    async def _send_batch(self, wait_window: bool) -> int:
        """Send the buffer as numbered batches; the number of the last batch sent, which
        covers every point buffered before this call, whichever task sent it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        async with self._batch_lock:  # so a batch another task took is numbered when we look
            if len(self._buffer):
                await self._ensure_connected()  # before take(): a failed connect loses no points
                cols = self._buffer.take()
                for req in self._core.batch(cols) if cols is not None else []:
                    fut, session = await self._send_batch_frame(req)
                    batch = self._ledger.add(req, fut, session)
                    fut.add_done_callback(functools.partial(self._batch_done, batch))
            upto = self._ledger.sent
        if wait_window:
            while len(self._ledger) > self._core.max_in_flight:
                head = self._ledger.head()
                if head is not None:
                    await self._await_batch(head, self.timeout)
            await self._drain()
        return upto

    async def _send_batch_frame(self, req: Request) -> tuple[Fut, Session[Fut] | None]:
        # Taken points are never dropped: a send that fails becomes a failed batch.
        try:
            _req, fut, session = await self._send_or_reconnect(req)
        except XtsdbError as exc:
            failed: Fut = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed, None
        return fut, session

    def _batch_done(self, batch: Batch[Fut], fut: Fut) -> None:
        if self._ledger.finish(batch, fut):
            self._attention = True

    async def _await_batches(self, upto: int, timeout: float | None) -> None:
        for batch in self._ledger.unsettled(upto):
            await self._await_batch(batch, self.timeout if timeout is None else timeout)

    async def _await_batch(self, batch: Batch[Fut], timeout: float | None) -> None:
        """Wait until ``batch`` is settled, however many tasks wait for it too. No
        answer within ``timeout`` settles it as failed: nobody can say it is durable."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not batch.settled:
            fut = batch.fut
            left = None if deadline is None else max(0.0, deadline - loop.time())
            # asyncio.wait, not wait_for: a timeout must not cancel a future others await.
            done, _ = await asyncio.wait([fut], timeout=left)
            if not done:
                self._ledger.timed_out(batch, timeout)
                self._attention = True
                return
            self._batch_done(batch, fut)
            if batch.retry:
                await self._resend(batch)

    async def _resend(self, batch: Batch[Fut]) -> None:
        async with self._resend_lock:
            if not batch.retry or batch.settled:
                return  # another task resent it
            batch.req.attempts += 1  # once: a second failure is not a blip
            try:
                await self._reconnect(batch.session)
                _req, fut, session = await self._send_or_reconnect(batch.req)
            except XtsdbError as exc:
                self._ledger.settle(batch, exc)
                self._attention = True
                return
            batch.fut, batch.session, batch.retry = fut, session, False
        fut.add_done_callback(functools.partial(self._batch_done, batch))
