"""``write_point``, ``flush`` and the flusher thread of the blocking :class:`~.sync.Client`.

What to buffer, when a batch is full, the numbering of batches, how long to
wait for one and when to resend it are decided by the sans-I/O
:class:`~._points.PointBatches`; this mixin holds the threaded parts: the
locks, the flusher thread, sending and waiting. Lock order: ``_batch_lock`` ->
``_buf_lock``, and ``_batch_lock`` / ``_resend_lock`` -> the transport's locks.
"""

from __future__ import annotations

import functools
import threading
import time
from concurrent import futures
from concurrent.futures import Future
from typing import Any

from xtsdb.protocol import GOOD_QUALITY
from xtsdb.protocol.errors import XtsdbError

from ._core import ClientCore, Request, Session
from ._ledger import Batch
from ._points import PointBatches

Fut = Future[dict[str, Any]]
Sent = tuple[Request, Fut, Session[Fut]]


class PointBatching:
    """Mixin of :class:`~.sync.Client`: the ``write_point`` buffer and its batches."""

    # The transport's, used here:
    _core: ClientCore
    _points: PointBatches[Fut]
    timeout: float | None

    def _send(self, req: Request) -> Sent:
        raise NotImplementedError

    def _ensure_connected(self) -> None:
        raise NotImplementedError

    def _reconnect(self, broken: Session[Fut] | None) -> None:
        raise NotImplementedError

    def _setup_points(self) -> None:
        self._batch_lock = threading.Lock()  # take + send of a batch, so batches keep their order
        self._buf_lock = threading.Lock()  # guards the buffer
        self._buf_cond = threading.Condition(self._buf_lock)  # wakes the flusher
        self._started = 0.0  # monotonic time of the first point in the buffer
        self._resend_lock = threading.Lock()
        self._flusher: threading.Thread | None = None

    def write_point(self, tag: int, ts: Any, value: float, quality: int = GOOD_QUALITY) -> None:
        """Buffer one point (see AsyncClient.write_point); :meth:`flush` waits for durability."""
        points = self._points
        if points.attention:
            points.report()
        # The hot path: a C-level lock and four cached C-level appends (PointBuffer's protocol).
        with self._buf_lock:
            add_tag, add_ts, add_value, add_q = points.appenders
            try:
                add_tag(tag)
                add_ts(ts)
                add_value(value)
                add_q(quality)
            except (TypeError, OverflowError, ValueError):
                points.buffer.append_slow(tag, ts, value, quality)
            n = len(points.timestamps)
            if n == 1:
                self._first_point()
        if n >= points.batch_size:
            self._send_batch(wait_window=True)

    def _first_point(self) -> None:
        # Called with _buf_lock held: start the flush_interval clock.
        self._started = time.monotonic()
        if self._flusher is None:
            self._flusher = threading.Thread(
                target=self._flush_loop, name="xtsdb-flush", daemon=True
            )
            self._flusher.start()
        self._buf_cond.notify()

    def flush(self, *, timeout: float | None = None) -> None:
        """Send buffered points; return once every point buffered before this call, by
        any thread, is durable. Raises if a batch failed since this thread's last flush."""
        self._points.check_open()
        upto = self._send_batch(wait_window=False)
        self._await_batches(upto, timeout)
        self._points.flushed(upto)

    def _flush_loop(self) -> None:
        points = self._points
        while True:
            with self._buf_cond:
                while not points.closed:
                    if not len(points.buffer):
                        self._buf_cond.wait()
                        continue
                    delay = self._started + points.flush_interval - time.monotonic()
                    if delay <= 0:
                        break
                    self._buf_cond.wait(delay)
                if points.closed:
                    return
            try:
                self._send_batch(wait_window=False)
            except Exception as exc:  # the points stay buffered; raised by the next write_point
                points.timer_failed(exc)
                time.sleep(points.flush_interval)  # do not spin on a dead server

    def _stop_flusher(self) -> None:
        with self._buf_cond:
            self._buf_cond.notify_all()

    def _send_batch(self, wait_window: bool) -> int:
        """Send the buffer as numbered batches; the number of the last batch sent, which
        covers every point buffered before this call, whichever thread sent it."""
        points = self._points
        with self._batch_lock:  # so a batch another thread took is numbered when we look
            if len(points.buffer):
                self._ensure_connected()  # before take(): a failed connect loses no points
                with self._buf_lock:
                    reqs = points.take(self._core)
                for req in reqs:
                    fut, session = self._send_batch_frame(req)
                    batch = points.sent(req, fut, session)
                    fut.add_done_callback(functools.partial(points.done, batch))
            upto = points.ledger.sent
        while wait_window and (head := points.window_head(self._core.max_in_flight)) is not None:
            self._await_batch(head, self.timeout)
        return upto

    def _send_batch_frame(self, req: Request) -> tuple[Fut, Session[Fut] | None]:
        # Taken points are never dropped: a send that fails becomes a failed batch.
        try:
            _req, fut, session = self._send(req)
        except XtsdbError as exc:
            failed: Fut = Future()
            failed.set_exception(exc)
            return failed, None
        return fut, session

    def _await_batches(self, upto: int, timeout: float | None) -> None:
        for batch in self._points.ledger.unsettled(upto):
            self._await_batch(batch, self.timeout if timeout is None else timeout)

    def _await_batch(self, batch: Batch[Fut], timeout: float | None) -> None:
        for wait in self._points.settle(batch, timeout):
            if wait is None:
                self._resend(batch)
            else:
                futures.wait([wait[0]], wait[1])

    def _resend(self, batch: Batch[Fut]) -> None:
        points = self._points
        with self._resend_lock:
            if not points.resending(batch):
                return  # another thread resent it
            try:
                self._reconnect(batch.session)
                _req, fut, session = self._send(batch.req)
            except XtsdbError as exc:
                points.resend_failed(batch, exc)
                return
            points.resent(batch, fut, session)
        fut.add_done_callback(functools.partial(points.done, batch))
