"""The ``write_point`` batches of one client: in flight, failed, and who was told.

A client is shared by threads (``Client``) or tasks (``AsyncClient``), and
they share one point buffer, so a batch carries points of several callers and
any of them may send it (``write_point`` at ``batch_size``, the flush timer,
``flush``). Two rules follow, and this module keeps the books for both; the
transports do the waiting:

- ``flush()`` returns only when every batch sent before it returned is
  settled, whoever sent it and whoever else is waiting for it: it waits for
  batch *numbers*, not for the batches it happens to pop.
- A failed batch is reported to every caller whose points it may have held: a
  ``flush()`` raises if any batch up to its own failed since the previous
  ``flush()`` of the same thread or task (:mod:`contextvars`: per thread, and
  per asyncio task), unless that caller has already seen the failure from
  ``write_point``, which raises each failure once per caller as an early
  warning. ``close()`` raises the failures nobody has seen.

Sans-I/O: no sockets, no waiting; a lock because the sync client's reader
thread settles batches while user threads read the books.
"""

from __future__ import annotations

import copy
import threading
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from xtsdb.protocol.errors import XtsdbConnectionError, XtsdbError, XtsdbTimeout

from ._core import Request, Session, write_ack

F = TypeVar("F", bound="AnyFuture")
MAX_FAILURES = 10_000
"""Failures remembered for callers that have not flushed since; older ones are
summarised (a client facing that many failures has its answer already)."""


class AnyFuture(Protocol):
    """What both a ``concurrent.futures.Future`` and an ``asyncio.Future`` offer."""

    def cancelled(self) -> bool: ...
    def done(self) -> bool: ...
    def exception(self) -> BaseException | None: ...
    def result(self) -> Any: ...


@dataclass(eq=False)
class Batch(Generic[F]):
    """One write frame of ``write_point`` points, numbered in sending order."""

    seq: int
    req: Request
    fut: F
    session: Session[F] | None  # None: never sent (the send failed)
    settled: bool = False  # acknowledged, or failed for good
    retry: bool = False  # lost with its connection; retry_writes allows one resend


@dataclass
class Failure:
    seq: int
    points: int
    error: BaseException
    seen: bool = False  # raised to some caller


@dataclass(frozen=True)
class _Seen:
    """One thread's or task's view: failures up to ``mark`` (its last flush) and
    those in ``extra`` (raised by its write_point since) have been reported to it."""

    mark: int = 0
    extra: frozenset[int] = field(default_factory=frozenset)


_NOTHING_SEEN = _Seen()


class Ledger(Generic[F]):
    """Batches in sending order, the failed ones, and what each caller was told."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: deque[Batch[F]] = deque()
        self._failures: dict[int, Failure] = {}
        self._forgotten = 0  # failures with seq <= this were dropped from _failures
        self.sent = 0  # seq of the last batch sent
        # A ContextVar per client: each thread, and each asyncio task, has its own value.
        self._seen: ContextVar[_Seen | None] = ContextVar("xtsdb_write_point_seen", default=None)

    def __len__(self) -> int:
        """Batches sent and not settled yet (the write_point window)."""
        return len(self._inflight)

    def add(self, req: Request, fut: F, session: Session[F] | None) -> Batch[F]:
        """Number a batch just sent; the caller holds its transport's batch lock, so
        numbers follow the order of the points in the buffer."""
        with self._lock:
            self.sent += 1
            batch = Batch(self.sent, req, fut, session)
            self._inflight.append(batch)
        return batch

    def head(self) -> Batch[F] | None:
        with self._lock:
            return self._inflight[0] if self._inflight else None

    def unsettled(self, upto: int) -> list[Batch[F]]:
        """The batches numbered up to ``upto`` that are not settled yet."""
        with self._lock:
            return [b for b in self._inflight if b.seq <= upto and not b.settled]

    def finish(self, batch: Batch[F], fut: F) -> bool:
        """``fut`` of ``batch`` is done: settle the batch, or mark it for its one resend
        (``retry_writes``: a lost connection, first time). True if it failed for good.
        Called by the future's callback and by every waiter (a callback may run late);
        only the first call for the batch's current future counts."""
        if fut is not batch.fut or batch.settled or batch.retry:
            return False  # an earlier attempt's future, settled already, or being resent
        error: BaseException | None
        if fut.cancelled():
            error = XtsdbConnectionError(f"write_point batch #{batch.req.id} was cancelled")
        else:
            error = fut.exception()
        if error is None:
            try:  # a refused write is a response with ok=False, not a failed future
                write_ack(fut.result())
            except XtsdbError as exc:
                error = exc
        if isinstance(error, XtsdbConnectionError) and batch.req.may_retry:
            batch.retry = True  # resent by whoever waits for it next
            return False
        self.settle(batch, error)
        return error is not None

    def timed_out(self, batch: Batch[F], timeout: float | None) -> None:
        """No answer in time: a failure, as nobody can say the batch is durable."""
        if batch.session is not None:
            batch.session.forget(batch.req.id)  # a late ack is dropped
        msg = f"no response to write_point batch #{batch.req.id} within {timeout} s"
        self.settle(batch, XtsdbTimeout(msg))

    def settle(self, batch: Batch[F], error: BaseException | None) -> None:
        """``batch`` is done: acknowledged (``error`` None) or failed for good.
        Idempotent: the first outcome counts (a timeout stays a failure even if
        the ack comes later, as the caller was told so)."""
        with self._lock:
            if batch.settled:
                return
            batch.settled, batch.retry = True, False
            if error is not None:
                self._failures[batch.seq] = Failure(batch.seq, batch.req.points, error)
                while len(self._failures) > MAX_FAILURES:
                    oldest = min(self._failures)
                    self._forgotten = max(self._forgotten, oldest)
                    del self._failures[oldest]
            while self._inflight and self._inflight[0].settled:
                self._inflight.popleft()

    # -- reporting -------------------------------------------------------------

    def for_flush(self, upto: int) -> BaseException | None:
        """After every batch up to ``upto`` settled: the error a ``flush()`` in
        this thread or task raises (None: all durable); the caller is now up to date."""
        seen = self._seen.get() or _NOTHING_SEEN
        with self._lock:
            new = [
                f
                for s, f in sorted(self._failures.items())
                if seen.mark < s <= upto and s not in seen.extra
            ]
            forgotten = seen.mark < self._forgotten
            for f in new:
                f.seen = True
        self._seen.set(_Seen(max(seen.mark, upto), frozenset(s for s in seen.extra if s > upto)))
        return _error(new, forgotten, "since this thread's (or task's) previous flush()")

    def for_write_point(self) -> BaseException | None:
        """Failures this caller has not been told of, as one error (None: none)."""
        seen = self._seen.get() or _NOTHING_SEEN
        with self._lock:
            failures = sorted(self._failures.items())
            new = [f for s, f in failures if s > seen.mark and s not in seen.extra]
            forgotten = seen.mark < self._forgotten
            for f in new:
                f.seen = True
        if not new and not forgotten:
            return None
        mark = max(seen.mark, self._forgotten)
        extra = frozenset(s for s in seen.extra | {f.seq for f in new} if s > mark)
        self._seen.set(_Seen(mark, extra))
        return _error(new, forgotten, "")

    def for_close(self, upto: int) -> BaseException | None:
        """The failures up to ``upto`` that no caller has been told of."""
        with self._lock:
            new = [f for s, f in sorted(self._failures.items()) if s <= upto and not f.seen]
            for f in new:
                f.seen = True
        return _error(new, False, "")


def _error(failures: list[Failure], forgotten: bool, since: str) -> BaseException | None:
    """One exception for ``failures``: a copy of the first one's (so callers in
    other threads never share one traceback), with a note of what was lost."""
    if not failures:
        if not forgotten:
            return None
        return XtsdbError(f"more than {MAX_FAILURES} write_point batches failed {since}".strip())
    first = failures[0]
    err = copy.copy(first.error).with_traceback(None)
    err.__notes__ = list(getattr(first.error, "__notes__", []))  # copy.copy shares the list
    if len(failures) == 1 and not forgotten:
        err.add_note(f"(a write_point batch of {first.points} points)")
    else:
        more = "more than " if forgotten else ""
        points = sum(f.points for f in failures)
        what = f"{more}{len(failures)} write_point batches, {points} points, failed"
        err.add_note(f"({' '.join(filter(None, (what, since)))}; the first one's error is shown)")
    return err
