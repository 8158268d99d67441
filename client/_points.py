"""The ``write_point`` state both clients share, sans-I/O: buffer, batches, errors.

Points go into one :class:`~.point_buffer.PointBuffer` shared by every thread
or task of a client; a batch is sent when it holds ``batch_size`` points (by
the ``write_point`` that filled it), ``flush_interval`` after its first point
(by the transport's timer), or by ``flush``. :class:`~._ledger.Ledger` numbers
the batches as they are sent, so a ``flush`` waits for every batch sent before
it returned, whichever caller sent it and whoever else waits for it too.

:class:`PointBatches` decides; the transports (:mod:`.sync_points`,
:mod:`.aio_points`) hold the locks, send the frames, wait and run the timer.
Waiting for a batch is a plan too (:meth:`PointBatches.settle`): it says which
future to wait for and how long, and when to resend, so the one-resend rule
and the timeout rule are written once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Generic, TypeVar

from xtsdb.protocol.errors import InvalidInput, XtsdbConnectionError, XtsdbError

from ._core import ClientCore, Request, Session
from ._ledger import AnyFuture, Batch, Ledger
from .point_buffer import PointBuffer

F = TypeVar("F", bound=AnyFuture)
Wait = tuple[F, float | None]


class PointBatches(Generic[F]):
    """One client's ``write_point`` buffer, its batches, and what to raise next."""

    def __init__(self, batch_size: int, flush_interval: float) -> None:
        if batch_size < 1 or flush_interval <= 0:
            raise InvalidInput("batch_size must be >= 1 and flush_interval > 0")
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.buffer = PointBuffer()
        # Cached for the transports' inlined write_point (PointBuffer's fast path).
        self.appenders = self.buffer.appenders
        self.timestamps = self.buffer.timestamps
        self.ledger: Ledger[F] = Ledger()  # batches: in flight, failed, who was told
        self.timer_error: BaseException | None = None
        self.attention = False  # a batch failed, or the timer did: write_point must look
        self.closed = False

    # -- write_point and flush ---------------------------------------------------

    def report(self) -> None:
        """write_point's early warning: an error from the flush timer, or batches that
        failed and this thread or task was not told of yet (its point is then not buffered)."""
        if self.closed:
            raise XtsdbConnectionError("the client is closed")
        self.attention = False
        if self.timer_error is not None:
            err, self.timer_error = self.timer_error, None
            raise err
        failed = self.ledger.for_write_point()
        if failed is not None:
            raise failed

    def timer_failed(self, exc: BaseException) -> None:
        """The timer could not send: the points stay buffered; the next write_point raises."""
        self.timer_error = self.timer_error or exc
        self.attention = True

    def check_open(self) -> None:
        if self.closed:
            raise XtsdbConnectionError("the client is closed")

    def flushed(self, upto: int) -> None:
        """Every batch up to ``upto`` is settled: raise what a ``flush()`` here must."""
        err = self.ledger.for_flush(upto)
        if err is not None:
            raise err

    def unreported(self, upto: int) -> None:
        """On close, after every batch up to ``upto`` settled: raise what nobody was told."""
        err = self.ledger.for_close(upto)
        if err is not None:
            raise err

    def shut(self) -> None:
        self.closed = True
        self.attention = True  # so write_point raises instead of buffering into the void

    # -- batches -------------------------------------------------------------------

    def take(self, core: ClientCore) -> list[Request]:
        """The buffer as write requests (the caller holds its batch and buffer locks)."""
        cols = self.buffer.take()
        return [] if cols is None else core.batch(cols)

    def sent(self, req: Request, fut: F, session: Session[F] | None) -> Batch[F]:
        """Number a batch just sent (``session`` None: its send failed, ``fut`` says why)."""
        return self.ledger.add(req, fut, session)

    def done(self, batch: Batch[F], fut: F) -> None:
        """``fut`` of ``batch`` completed (its callback, or a waiter: the first counts)."""
        if self.ledger.finish(batch, fut):
            self.attention = True

    def window_head(self, max_in_flight: int) -> Batch[F] | None:
        """The oldest batch to wait for while more than ``max_in_flight`` are unsettled."""
        return self.ledger.head() if len(self.ledger) > max_in_flight else None

    def settle(self, batch: Batch[F], timeout: float | None) -> Iterator[Wait[F] | None]:
        """Until ``batch`` is settled, however many callers wait for it: yields
        ``(future, seconds)`` to wait for (at most that long), or None to resend the
        batch. No answer within ``timeout`` settles it as failed: nobody can say it is
        durable."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not batch.settled:
            fut = batch.fut
            yield fut, None if deadline is None else max(0.0, deadline - time.monotonic())
            if not fut.done():
                self.ledger.timed_out(batch, timeout)
                self.attention = True
                return
            self.done(batch, fut)  # its callback may not have run yet
            if batch.retry:
                yield None

    def resending(self, batch: Batch[F]) -> bool:
        """Whether to resend ``batch`` now (under the transport's resend lock): another
        caller may have done it. Counts the attempt: a second failure is not a blip."""
        if not batch.retry or batch.settled:
            return False
        batch.req.attempts += 1
        return True

    def resent(self, batch: Batch[F], fut: F, session: Session[F]) -> None:
        batch.fut, batch.session, batch.retry = fut, session, False

    def resend_failed(self, batch: Batch[F], exc: XtsdbError) -> None:
        self.ledger.settle(batch, exc)
        self.attention = True
