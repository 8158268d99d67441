"""``write_point``, ``flush`` and the flush timer of :class:`~.aio.AsyncClient`.

What to buffer, when a batch is full, the numbering of batches, how long to
wait for one and when to resend it are decided by the sans-I/O
:class:`~._points.PointBatches`; this mixin holds the asyncio parts: the locks,
the timer, sending and awaiting.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from xtsdb.protocol import GOOD_QUALITY
from xtsdb.protocol.errors import XtsdbError

from ._core import ClientCore, Request, Session
from ._ledger import Batch
from ._points import PointBatches

Fut = asyncio.Future[dict[str, Any]]
Sent = tuple[Request, Fut, Session[Fut]]


class AsyncPointBatching:
    """Mixin of :class:`~.aio.AsyncClient`: the ``write_point`` buffer and its batches."""

    # The transport's, used here:
    _core: ClientCore
    _points: PointBatches[Fut]
    timeout: float | None

    async def _send_or_reconnect(self, req: Request) -> Sent:
        raise NotImplementedError

    async def _ensure_connected(self) -> None:
        raise NotImplementedError

    async def _reconnect(self, broken: Session[Fut] | None) -> None:
        raise NotImplementedError

    async def _drain(self) -> None:
        raise NotImplementedError

    def _setup_points(self) -> None:
        self._batch_lock = asyncio.Lock()  # take + send of a batch, so batches keep their order
        self._resend_lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_tasks: set[asyncio.Task[None]] = set()

    async def write_point(
        self, tag: int, ts: Any, value: float, quality: int = GOOD_QUALITY
    ) -> None:
        """Buffer one point; see the class docstring for when it is sent.

        Errors of earlier batches are raised here (this point is then not
        buffered). Call :meth:`flush` to wait until everything is durable.
        """
        points = self._points
        if points.attention:
            points.report()
        add_tag, add_ts, add_value, add_q = points.appenders  # PointBuffer's inlined fast path
        try:
            add_tag(tag)
            add_ts(ts)
            add_value(value)
            add_q(quality)
        except (TypeError, OverflowError, ValueError):
            points.buffer.append_slow(tag, ts, value, quality)
        n = len(points.timestamps)
        if n >= points.batch_size:
            await self._send_batch(wait_window=True)
        elif n == 1:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(points.flush_interval, self._on_timer)

    async def flush(self, *, timeout: float | None = None) -> None:
        """Send buffered points; return once every point buffered before this call, by
        any task, is durable. Raises if a batch failed since this task's last flush."""
        self._points.check_open()
        upto = await self._send_batch(wait_window=False)
        await self._await_batches(upto, timeout)
        self._points.flushed(upto)

    def _on_timer(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self._timed_flush())
        self._timer_tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._timer_tasks.discard)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._timer_tasks):
            task.cancel()

    async def _timed_flush(self) -> None:
        try:
            await self._send_batch(wait_window=False)
        except Exception as exc:  # the points stay buffered; raised by the next write_point
            self._points.timer_failed(exc)

    async def _send_batch(self, wait_window: bool) -> int:
        """Send the buffer as numbered batches; the number of the last batch sent, which
        covers every point buffered before this call, whichever task sent it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        points = self._points
        async with self._batch_lock:  # so a batch another task took is numbered when we look
            if len(points.buffer):
                await self._ensure_connected()  # before take(): a failed connect loses no points
                for req in points.take(self._core):
                    fut, session = await self._send_batch_frame(req)
                    batch = points.sent(req, fut, session)
                    fut.add_done_callback(functools.partial(points.done, batch))
            upto = points.ledger.sent
        if wait_window:
            while (head := points.window_head(self._core.max_in_flight)) is not None:
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

    async def _await_batches(self, upto: int, timeout: float | None) -> None:
        for batch in self._points.ledger.unsettled(upto):
            await self._await_batch(batch, self.timeout if timeout is None else timeout)

    async def _await_batch(self, batch: Batch[Fut], timeout: float | None) -> None:
        for wait in self._points.settle(batch, timeout):
            if wait is None:
                await self._resend(batch)
            else:  # asyncio.wait, not wait_for: a timeout must not cancel a future others await
                await asyncio.wait([wait[0]], timeout=wait[1])

    async def _resend(self, batch: Batch[Fut]) -> None:
        points = self._points
        async with self._resend_lock:
            if not points.resending(batch):
                return  # another task resent it
            try:
                await self._reconnect(batch.session)
                _req, fut, session = await self._send_or_reconnect(batch.req)
            except XtsdbError as exc:
                points.resend_failed(batch, exc)
                return
            points.resent(batch, fut, session)
        fut.add_done_callback(functools.partial(points.done, batch))
