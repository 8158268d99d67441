"""``write_point``, ``flush`` and the flush thread of the blocking :class:`~.sync.Client`.

A mixin, so the transport (:mod:`.sync`) stays about moving frames. Points go
into one :class:`~.batching.PointBuffer` shared by every thread; a batch is
sent when it holds ``batch_size`` points (by the ``write_point`` that filled
it), ``flush_interval`` after its first point (by the flusher thread), or by
``flush``. :mod:`._ledger` numbers the batches as they are sent, so a
``flush`` waits for every batch sent before it returned, whichever thread sent
it and whoever else waits for it too. Lock order: ``_batch_lock`` ->
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
from xtsdb.protocol.errors import XtsdbConnectionError, XtsdbError

from ._core import ClientCore, Request, Session
from ._ledger import Batch, Ledger
from .batching import PointBuffer

Fut = Future[dict[str, Any]]
Sent = tuple[Request, Fut, Session[Fut]]


class PointBatching:
    """Mixin of :class:`~.sync.Client`: the ``write_point`` buffer and its batches."""

    # The transport's, used here:
    _core: ClientCore
    timeout: float | None
    _closed: bool

    def _send(self, req: Request) -> Sent:
        raise NotImplementedError

    def _ensure_connected(self) -> None:
        raise NotImplementedError

    def _reconnect(self, broken: Session[Fut] | None) -> None:
        raise NotImplementedError

    def _init_points(self, batch_size: int, flush_interval: float) -> None:
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._batch_lock = threading.Lock()  # take + send of a batch, so batches keep their order
        self._buf_lock = threading.Lock()  # guards the buffer
        self._buf_cond = threading.Condition(self._buf_lock)  # wakes the flusher
        self._buffer = PointBuffer()
        self._appenders = self._buffer.appenders
        self._buffered_ts = self._buffer.timestamps
        self._started = 0.0  # monotonic time of the first point in the buffer
        self._ledger: Ledger[Fut] = Ledger()  # write_point batches: in flight, failed, told
        self._resend_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._bg_error: BaseException | None = None
        self._attention = False  # a batch failed, or the flusher did: write_point must look

    def write_point(self, tag: int, ts: Any, value: float, quality: int = GOOD_QUALITY) -> None:
        """Buffer one point (see AsyncClient.write_point); :meth:`flush` waits for durability."""
        if self._attention:
            self._report()
        # The hot path: a C-level lock and four cached C-level appends (PointBuffer's protocol).
        with self._buf_lock:
            add_tag, add_ts, add_value, add_q = self._appenders
            try:
                add_tag(tag)
                add_ts(ts)
                add_value(value)
                add_q(quality)
            except (TypeError, OverflowError, ValueError):
                self._buffer.append_slow(tag, ts, value, quality)
            n = len(self._buffered_ts)
            if n == 1:
                self._first_point()
        if n >= self._batch_size:
            self._send_batch(wait_window=True)

    def _first_point(self) -> None:
        # Called with _buf_lock held: start the flush_interval clock.
        self._started = time.monotonic()
        if self._flusher is None:
            self._start_flusher()
        self._buf_cond.notify()

    def flush(self, *, timeout: float | None = None) -> None:
        """Send buffered points; return once every point buffered before this call, by
        any thread, is durable. Raises if a batch failed since this thread's last flush."""
        if self._closed:
            raise XtsdbConnectionError("the client is closed")
        upto = self._send_batch(wait_window=False)
        self._await_batches(upto, timeout)
        err = self._ledger.for_flush(upto)
        if err is not None:
            raise err

    def _report(self) -> None:
        """write_point's early warning: an error from the flush timer, or batches that
        failed and this thread was not told of yet (the point is then not buffered)."""
        if self._closed:
            raise XtsdbConnectionError("the client is closed")
        self._attention = False
        if self._bg_error is not None:
            err, self._bg_error = self._bg_error, None
            raise err
        failed = self._ledger.for_write_point()
        if failed is not None:
            raise failed

    def _start_flusher(self) -> None:
        self._flusher = threading.Thread(target=self._flush_loop, name="xtsdb-flush", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            with self._buf_cond:
                while not self._closed:
                    if not len(self._buffer):
                        self._buf_cond.wait()
                        continue
                    delay = self._started + self._flush_interval - time.monotonic()
                    if delay <= 0:
                        break
                    self._buf_cond.wait(delay)
                if self._closed:
                    return
            try:
                self._send_batch(wait_window=False)
            except Exception as exc:  # the points stay buffered; raised by the next write_point
                self._bg_error = self._bg_error or exc
                self._attention = True
                time.sleep(self._flush_interval)  # do not spin on a dead server

    def _send_batch(self, wait_window: bool) -> int:
        """Send the buffer as numbered batches; the number of the last batch sent, which
        covers every point buffered before this call, whichever thread sent it."""
        with self._batch_lock:  # so a batch another thread took is numbered when we look
            if len(self._buffer):
                self._ensure_connected()  # before take(): a failed connect loses no points
                with self._buf_lock:
                    cols = self._buffer.take()
                for req in self._core.batch(cols) if cols is not None else []:
                    fut, session = self._send_batch_frame(req)
                    batch = self._ledger.add(req, fut, session)
                    fut.add_done_callback(functools.partial(self._batch_done, batch))
            upto = self._ledger.sent
        while wait_window and len(self._ledger) > self._core.max_in_flight:
            head = self._ledger.head()
            if head is not None:
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

    def _batch_done(self, batch: Batch[Fut], fut: Fut) -> None:
        if self._ledger.finish(batch, fut):
            self._attention = True

    def _await_batches(self, upto: int, timeout: float | None) -> None:
        for batch in self._ledger.unsettled(upto):
            self._await_batch(batch, self.timeout if timeout is None else timeout)

    def _await_batch(self, batch: Batch[Fut], timeout: float | None) -> None:
        """Wait until ``batch`` is settled, however many threads wait for it too. No
        answer within ``timeout`` settles it as failed: nobody can say it is durable."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not batch.settled:
            fut = batch.fut
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not futures.wait([fut], left).done:
                self._ledger.timed_out(batch, timeout)
                self._attention = True
                return
            self._batch_done(batch, fut)  # its callback may not have run yet
            if batch.retry:
                self._resend(batch)

    def _resend(self, batch: Batch[Fut]) -> None:
        with self._resend_lock:
            if not batch.retry or batch.settled:
                return  # another thread resent it
            batch.req.attempts += 1  # once: a second failure is not a blip
            try:
                self._reconnect(batch.session)
                _req, fut, session = self._send(batch.req)
            except XtsdbError as exc:
                self._ledger.settle(batch, exc)
                self._attention = True
                return
            batch.fut, batch.session, batch.retry = fut, session, False
        fut.add_done_callback(functools.partial(self._batch_done, batch))
