"""Sealing MemBuffers into blocks, checkpoints and the background sealer.

The locking rules are the engine's (see engine.py): ``seal_lock`` serialises
sealing and checkpoints; the state lock is held only to move buffers and
publish blocks, never while a block is written.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from xtsdb.protocol.errors import DiskFull, StorageError, XtsdbError

from . import recovery
from .block_codec import CODEC_ZSTD_V1
from .config import EngineConfig
from .container import BLOCK_SORTED, BlockEntry
from .membuffer import Columns, MemBuffer, consolidate
from .points import Float64Array, Int64Array, UInt8Array
from .state import EngineState
from .store import BlockStore
from .tagstate import TagState
from .wal import Wal
from .workers import WorkerPool, encode_many

log = logging.getLogger("xtsdb.engine")


class Sealer:
    """Writes MemBuffers into blocks and checkpoints; ``run`` is the sealer thread's loop.

    ``retention`` is called every ``config.retention_check_s`` from the loop.
    """

    def __init__(
        self,
        config: EngineConfig,
        path: Path,
        wal: Wal,
        store: BlockStore,
        state: EngineState,
        checkpoint_lsn: int,
        retention: Callable[[], int],
        procs: WorkerPool | None = None,
    ) -> None:
        self.config = config
        self.path = path
        self.wal = wal
        self.store = store
        self.state = state
        self.checkpoint_lsn = checkpoint_lsn
        self.lock = threading.Lock()  # the engine's seal lock
        self._retention = retention
        self.procs = procs  # worker processes that encode large seal rounds (None: inline)
        self._index_dirty_since = 0.0  # monotonic time of the first seal since the index checkpoint

    def _wanted(self) -> bool:
        """Seal all now: the WAL or memory has grown past what a checkpoint should cover."""
        return (
            self.wal.size_bytes > self.config.wal_checkpoint_bytes
            or self.state.mem_points > self.config.max_memory_points // 2
        )

    def run(self) -> None:
        state = self.state
        next_retention = time.monotonic() + self.config.retention_check_s
        while True:
            with state.lock:
                state.lock.wait_for(
                    lambda: state.closed or state.seal_wanted or self._wanted(), timeout=1.0
                )
                if state.closed:
                    return
            try:
                if self.seal(force_all=self._wanted()):
                    self._index_dirty_since = self._index_dirty_since or time.monotonic()
                elif self._index_dirty_since and (
                    time.monotonic() - self._index_dirty_since >= IDLE_INDEX_CHECKPOINT_S
                ):
                    self._checkpoint_index()
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + self.config.retention_check_s
                    self._retention()
            except Exception as exc:
                # The sealer must outlive any failure (a full disk, a broken index):
                # its MemBuffers stay readable and in the WAL, and it retries.
                state.counters["seal_errors"] += 1
                state.seal_error = f"{type(exc).__name__}: {exc}"
                internal = not isinstance(exc, XtsdbError)
                log.error("sealing failed, will retry: %s", state.seal_error, exc_info=internal)
                with state.lock:
                    state.lock.wait(timeout=1.0)

    def seal(self, force_all: bool) -> int:
        """Write full (or, when forced, all) MemBuffers into blocks; checkpoint if forced.

        Returns the number of blocks written.
        """
        state = self.state
        written = 0
        with self.lock:
            with state.lock:
                state.seal_wanted = False
                work: list[tuple[int, TagState, list[MemBuffer]]] = []
                for tag_id, t in state.tags.items():
                    if t.active.count and (force_all or t.active.count >= self.config.block_points):
                        t.sealing.append(t.active)
                        t.active = MemBuffer()
                    if t.sealing:  # includes leftovers of a failed earlier round
                        work.append((tag_id, t, list(t.sealing)))
            for batch in _batches(work, SEAL_BATCH_POINTS):
                for _, t, bufs, entries in self._write_batch(batch):
                    written += len(entries)
                    with state.lock:
                        t.blocks.extend(entries)
                        state.totals.add(entries)
                        del t.sealing[: len(bufs)]
                        state.mem_points -= sum(b.count for b in bufs)
                        state.lock.notify_all()
            self.store.commit_index()
            self._write_healed()
            if force_all:
                self._checkpoint()
                self._checkpoint_index()
        return written

    def _checkpoint_index(self) -> None:
        """The index's SQLite WAL folded into its file (a cache: a failure only logs)."""
        self._index_dirty_since = 0.0
        try:
            self.store.index.checkpoint()
        except sqlite3.Error as exc:
            log.warning("checkpointing the block index failed (%s)", exc)

    def _write_healed(self) -> None:
        """Summaries that queries recomputed by decoding (missing or damaged in the index)."""
        try:
            self.store.index.write_summaries()
        except sqlite3.Error as exc:  # a cache: they stay in memory and are retried
            log.warning("writing block summaries to the index failed (%s)", exc)

    def _write_batch(self, batch: list[Work]) -> Iterator[Written]:
        """Encode every block of ``batch`` (in the workers when it pays), then write them.

        The encoding is the CPU-heavy part and moves to the worker processes in
        one job per worker; the container appends and index rows stay here.
        Each tag is yielded once written, so the caller publishes it before the
        next is appended (a failed append leaves no written block unpublished).
        """
        # Worst case a point costs ~18 bytes encoded; keep every body inside one chunk.
        per_block = max(1, min(self.config.block_points, (self.store.max_body - 256) // 18))
        plans = []
        segments: list[Columns] = []
        for tag_id, t, bufs in batch:
            ts, vals, qual = consolidate([p for b in bufs for p in b.parts], t.policy == "first")
            lows = range(0, ts.shape[0], per_block)
            segments.extend(_part(ts, vals, qual, lo, per_block) for lo in lows)
            plans.append((tag_id, t, bufs, len(lows)))
        big = sum(s[0].shape[0] for s in segments) >= self.config.seal_pool_min_points
        encoded = iter(encode_many(self.procs if big else None, segments, self.config.zstd_level))
        parts = iter(segments)
        for tag_id, t, bufs, count in plans:
            max_lsn = max(b.last_lsn for b in bufs)
            entries = []
            for _ in range(count):
                ts = next(parts)[0]
                body, summary = next(encoded)
                first, last, n = int(ts[0]), int(ts[-1]), int(ts.shape[0])
                entry = self.store.append(
                    tag_id, CODEC_ZSTD_V1, BLOCK_SORTED, body, first, last, n, max_lsn
                )
                # Written with the block's index row, in the same transaction (index.add_blocks).
                self.store.index.summaries.put(entry, summary)
                entries.append(entry)
            self.state.counters["blocks_written"] += len(entries)
            yield tag_id, t, bufs, entries

    def _checkpoint(self) -> None:
        # The checkpoint may only cover points whose blocks are already written:
        # everything older than the oldest point still in memory.
        state = self.state
        with state.lock:
            bufs = [b for t in state.tags.values() for b in (*t.sealing, t.active)]
            firsts = [b.first_lsn for b in bufs if b.count]
            candidate = min(firsts) - 1 if firsts else state.applied_lsn
        if candidate <= self.checkpoint_lsn:
            return
        try:
            self.store.sync()
            recovery.write_checkpoint(self.path, candidate)
        except OSError as exc:  # e.g. ENOSPC: the old checkpoint stands, the WAL still replays
            raise _storage_error(exc, "writing the checkpoint") from exc
        self.checkpoint_lsn = candidate
        self.wal.recycle(candidate)
        state.counters["checkpoints"] += 1


def _storage_error(exc: OSError, what: str) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"no space left on device while {what}")
    return StorageError(f"{what} failed: {exc}")


Work = tuple[int, TagState, list[MemBuffer]]
Written = tuple[int, TagState, list[MemBuffer], list[BlockEntry]]
IDLE_INDEX_CHECKPOINT_S = 10.0
"""An idle round (no block sealed) checkpoints the index when its first seal since the
last checkpoint is at least this old: bursts of seals do not each pay a checkpoint."""
SEAL_BATCH_POINTS = 2_000_000  # points encoded per round trip to the workers (bounds arenas)


def _batches(work: list[Work], most: int) -> list[list[Work]]:
    """Consecutive groups of ``work`` of at most ``most`` points (a bigger tag alone)."""
    out: list[list[Work]] = [[]]
    filled = 0
    for w in work:
        n = sum(b.count for b in w[2])
        if out[-1] and filled + n > most:
            out.append([])
            filled = 0
        out[-1].append(w)
        filled += n
    return [g for g in out if g]


def _part(ts: Int64Array, v: Float64Array, q: UInt8Array, lo: int, n: int) -> Columns:
    return ts[lo : lo + n], v[lo : lo + n], q[lo : lo + n]
