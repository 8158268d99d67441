"""The group commit: many clients' writes share one WAL write and one fsync.

Connections validate a write on the event loop (``WriteBatch.build``) and hand
the batch to :meth:`WriteQueue.submit`, which returns a future. One task,
:meth:`WriteQueue.run`, takes everything queued at that moment as a group,
commits it with a single ``Engine.write_batches`` call in a dedicated worker
thread, and resolves every future of the group with the same LSN (or the same
exception). Writes arriving while a commit runs pile up and become the next
group, so the number of writes per fsync grows with the load instead of the
latency. A write the engine refuses (a duplicate timestamp for a tag whose
policy is 'reject') fails alone: the group is split until it stands alone.

Thresholds (from the storage design): a group holds at most ``GROUP_MAX``
entries or ``GROUP_MAX_BYTES``; with more than ``GROUP_MAX // 2`` waiting the
task goes straight to the next commit. Otherwise it waits on the queue with a
short timeout: the timeout is only its idle tick to notice a stop, a lone
write wakes it at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from xtsdb.protocol.errors import InvalidInput, ShuttingDown
from xtsdb.server.engine.wal_records import WriteBatch

log = logging.getLogger("xtsdb.server")

GROUP_MAX = 100
GROUP_MAX_BYTES = 64 * 1024 * 1024
IDLE_TICK = 0.010


class BatchWriter(Protocol):
    """The one engine method the queue needs."""

    def write_batches(self, batches: list[WriteBatch]) -> int: ...


@dataclass
class _Entry:
    batch: WriteBatch
    size: int
    future: asyncio.Future[int]


class WriteQueue:
    """Queue + flush task + the single thread that talks to the WAL.

    ``on_pressure(True)`` is called when the bytes waiting for a commit
    exceed ``max_queue_bytes`` (the server then stops reading every socket),
    ``on_pressure(False)`` once they fall back under half of it.
    """

    def __init__(
        self,
        engine: BatchWriter,
        *,
        max_queue_bytes: int,
        on_pressure: Callable[[bool], None] | None = None,
    ) -> None:
        self._engine = engine
        self._max_bytes = max_queue_bytes
        self.on_pressure = on_pressure
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue()
        # One thread: commits are serial by nature, and a dedicated thread means a
        # slow fsync never waits behind queries in the shared pool (or vice versa).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="xtsdb-commit")
        self._stopping = False
        self._pressure = False
        self.bytes = 0  # bytes submitted and not yet resolved (queued or committing)
        self.writes = 0  # committed
        self.points = 0  # committed
        self.commits = 0
        self.failed_commits = 0
        self.refused = 0  # writes the engine refused (each alone, see _commit_group)
        self.splits = 0  # groups cut in two to isolate a refused write
        self.max_group = 0
        self.pressure_events = 0  # times the queue filled and every reader paused

    @property
    def depth(self) -> int:
        """Writes waiting for the next commit."""
        return self._queue.qsize()

    def submit(self, batch: WriteBatch) -> asyncio.Future[int]:
        """Queue ``batch``; the future resolves to its LSN once committed.

        Not a coroutine on purpose: a connection's writes enter the queue in
        the order they arrived, before any other task runs.
        """
        if self._stopping:
            raise ShuttingDown("the server is stopping and takes no new writes")
        size = len(batch.payload)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Entry(batch, size, fut))
        self.bytes += size
        if not self._pressure and self.bytes > self._max_bytes:
            self._set_pressure(True)
        return fut

    def stop(self) -> None:
        """Refuse new writes; :meth:`run` returns once everything queued is committed."""
        self._stopping = True

    async def run(self) -> None:
        """The flush task; returns after :meth:`stop` once the queue is empty."""
        try:
            while True:
                if self._queue.qsize() > GROUP_MAX // 2:
                    first = self._queue.get_nowait()  # half full: no waiting at all
                else:
                    try:
                        first = await asyncio.wait_for(self._queue.get(), IDLE_TICK)
                    except TimeoutError:
                        if self._stopping and self._queue.empty():
                            return
                        continue
                await self._commit(self._take_group(first))
        finally:
            self._thread.shutdown(wait=True)

    def _take_group(self, first: _Entry) -> list[_Entry]:
        group = [first]
        size = first.size
        while len(group) < GROUP_MAX and size < GROUP_MAX_BYTES and not self._queue.empty():
            entry = self._queue.get_nowait()
            group.append(entry)
            size += entry.size
        return group

    async def _commit(self, group: list[_Entry]) -> None:
        try:
            await self._commit_group(group)
        finally:
            self.bytes -= sum(e.size for e in group)
            if self._pressure and self.bytes <= self._max_bytes // 2:
                self._set_pressure(False)

    async def _commit_group(self, group: list[_Entry]) -> None:
        """Commit ``group``; a write the engine refuses fails alone.

        The engine checks a group before its WAL append (a write to a tag whose
        duplicate policy is 'reject' that repeats a timestamp) and refuses the
        whole call, having changed nothing. The group is then split in halves,
        committed in order, until the refused writes stand alone: the other
        writes of the group are not their victims. The cost is about two
        commits per halving, paid only by a group that holds a refused write;
        and since the halves commit in arrival order on the one commit thread,
        of two racing writes of one timestamp the first wins and the second is
        refused, however the group was cut.
        """
        batches = [e.batch for e in group]
        loop = asyncio.get_running_loop()
        try:
            # Whether this fsyncs is the engine's setting (EngineConfig.fsync).
            lsn = await loop.run_in_executor(self._thread, self._engine.write_batches, batches)
        except InvalidInput as exc:
            if len(group) > 1:
                half = len(group) // 2
                self.splits += 1
                await self._commit_group(group[:half])
                await self._commit_group(group[half:])
                return
            self.refused += 1
            _fail(group, exc)
        except BaseException as exc:
            self.failed_commits += 1
            log.error("commit of %d writes failed: %r", len(group), exc)
            _fail(group, exc if isinstance(exc, Exception) else ShuttingDown())
            if not isinstance(exc, Exception):
                raise
        else:
            self.commits += 1
            self.writes += len(group)
            self.points += sum(b.n_points for b in batches)
            self.max_group = max(self.max_group, len(group))
            for e in group:
                if not e.future.done():  # the requester may have gone away
                    e.future.set_result(lsn)

    def _set_pressure(self, on: bool) -> None:
        self._pressure = on
        self.pressure_events += on
        log.warning(
            "write queue %s: %d bytes waiting (limit %d)",
            "full, pausing all readers" if on else "drained, resuming readers",
            self.bytes,
            self._max_bytes,
        )
        if self.on_pressure is not None:
            self.on_pressure(on)

    def stats(self) -> dict[str, float | int]:
        return {
            "writes": self.writes,
            "writes_refused": self.refused,
            "group_splits": self.splits,
            "points_written": self.points,
            "commits": self.commits,
            "failed_commits": self.failed_commits,
            "writes_per_commit": (self.writes / self.commits) if self.commits else 0.0,
            "max_writes_per_commit": self.max_group,
            "queue_depth": self.depth,
            "queue_bytes": self.bytes,
            "queue_paused": self._pressure,
            "queue_pauses": self.pressure_events,
        }


def _fail(group: list[_Entry], exc: Exception) -> None:
    for e in group:
        if not e.future.done():
            e.future.set_exception(exc)
