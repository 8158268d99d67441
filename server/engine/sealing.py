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
from collections.abc import Callable
from pathlib import Path

from xtsdb.protocol.errors import DiskFull, StorageError, XtsdbError

from . import recovery
from .block_codec import CODEC_ZSTD_V1, encode_block
from .config import EngineConfig
from .container import BLOCK_SORTED, BlockEntry
from .membuffer import MemBuffer, consolidate
from .state import EngineState
from .store import BlockStore
from .summary import summarise
from .tagstate import TagState
from .wal import Wal

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
    ) -> None:
        self.config = config
        self.path = path
        self.wal = wal
        self.store = store
        self.state = state
        self.checkpoint_lsn = checkpoint_lsn
        self.lock = threading.Lock()  # the engine's seal lock
        self._retention = retention

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
                self.seal(force_all=self._wanted())
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

    def seal(self, force_all: bool) -> None:
        """Write full (or, when forced, all) MemBuffers into blocks; checkpoint if forced."""
        state = self.state
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
            for tag_id, t, bufs in work:
                entries = self._write_blocks(tag_id, t, bufs)
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

    def _write_healed(self) -> None:
        """Summaries that queries recomputed by decoding (missing or damaged in the index)."""
        try:
            self.store.index.write_summaries()
        except sqlite3.Error as exc:  # a cache: they stay in memory and are retried
            log.warning("writing block summaries to the index failed (%s)", exc)

    def _write_blocks(self, tag_id: int, t: TagState, bufs: list[MemBuffer]) -> list[BlockEntry]:
        ts, vals, qual = consolidate([p for b in bufs for p in b.parts], t.policy == "first")
        max_lsn = max(b.last_lsn for b in bufs)
        # Worst case a point costs ~18 bytes encoded; keep every body inside one chunk.
        per_block = max(1, min(self.config.block_points, (self.store.max_body - 256) // 18))
        out = []
        for lo in range(0, ts.shape[0], per_block):
            sl = slice(lo, lo + per_block)
            body = encode_block(ts[sl], vals[sl], qual[sl], self.config.zstd_level)
            first, last, n = int(ts[sl][0]), int(ts[sl][-1]), int(ts[sl].shape[0])
            summary = summarise(ts[sl], vals[sl], qual[sl])
            entry = self.store.append(
                tag_id, CODEC_ZSTD_V1, BLOCK_SORTED, body, first, last, n, max_lsn
            )
            # Written with the block's index row, in the same transaction (index.add_blocks).
            self.store.index.summaries.put(entry, summary)
            out.append(entry)
        self.state.counters["blocks_written"] += len(out)
        return out

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
