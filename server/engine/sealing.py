"""Sealing MemBuffers into blocks, checkpoints and the background sealer (a mixin of Engine).

The locking rules are the engine's (see engine.py): ``_seal_lock`` serialises
sealing and checkpoints; ``_state`` is held only to move buffers and publish
blocks, never while a block is written.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

from xtsdb.protocol.errors import DiskFull, StorageError, XtsdbError

from . import recovery
from .block_codec import CODEC_ZSTD_V1, encode_block
from .config import EngineConfig
from .container import BLOCK_SORTED, BlockEntry
from .membuffer import MemBuffer, consolidate
from .retention import apply_retention
from .store import BlockStore
from .tagstate import BlockTotals, TagState
from .wal import Wal

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("xtsdb.engine")


class SealOps:
    config: EngineConfig
    path: Path
    checkpoint_lsn: int
    _wal: Wal
    _store: BlockStore
    _seal_lock: threading.Lock
    _state: threading.Condition
    _tags: dict[int, TagState]
    _totals: BlockTotals
    _counters: dict[str, int]
    _closed: bool
    _seal_wanted: bool
    _seal_error: str
    _mem_points: int
    _applied_lsn: int

    # -- sealing and checkpoints ------------------------------------------------

    def apply_retention(self, now_us: int | None = None, grace_s: float | None = None) -> int:
        """Retire chunks whose data is older than ``config.retention_us``; returns how many."""
        return apply_retention(cast("Engine", self), now_us, grace_s)

    def _seal_loop(self) -> None:
        next_retention = time.monotonic() + self.config.retention_check_s
        while True:
            with self._state:
                self._state.wait_for(
                    lambda: self._closed or self._seal_wanted
                    or self._mem_points > self.config.max_memory_points // 2
                    or self._wal.size_bytes > self.config.wal_checkpoint_bytes,
                    timeout=1.0,
                )  # fmt: skip
                if self._closed:
                    return
            force = (self._wal.size_bytes > self.config.wal_checkpoint_bytes
                     or self._mem_points > self.config.max_memory_points // 2)  # fmt: skip
            try:
                self._seal(force_all=force)
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + self.config.retention_check_s
                    self.apply_retention()
            except Exception as exc:
                # The sealer must outlive any failure (a full disk, a broken index):
                # its MemBuffers stay readable and in the WAL, and it retries.
                self._counters["seal_errors"] += 1
                self._seal_error = f"{type(exc).__name__}: {exc}"
                log.error("sealing failed, will retry: %s", self._seal_error,
                          exc_info=not isinstance(exc, XtsdbError))  # fmt: skip
                with self._state:
                    self._state.wait(timeout=1.0)

    def _seal(self, force_all: bool) -> None:
        """Write full (or, when forced, all) MemBuffers into blocks; checkpoint if forced."""
        with self._seal_lock:
            with self._state:
                self._seal_wanted = False
                work: list[tuple[int, TagState, list[MemBuffer]]] = []
                for tag_id, t in self._tags.items():
                    if t.active.count and (force_all or t.active.count >= self.config.block_points):
                        t.sealing.append(t.active)
                        t.active = MemBuffer()
                    if t.sealing:  # includes leftovers of a failed earlier round
                        work.append((tag_id, t, list(t.sealing)))
            for tag_id, t, bufs in work:
                entries = self._write_blocks(tag_id, bufs)
                with self._state:
                    t.blocks.extend(entries)
                    self._totals.add(entries)
                    del t.sealing[: len(bufs)]
                    self._mem_points -= sum(b.count for b in bufs)
                    self._state.notify_all()
            self._store.commit_index()
            if force_all:
                self._checkpoint()

    def _write_blocks(self, tag_id: int, bufs: list[MemBuffer]) -> list[BlockEntry]:
        first = self._tags[tag_id].policy == "first"
        ts, vals, qual = consolidate([p for b in bufs for p in b.parts], first)
        max_lsn = max(b.last_lsn for b in bufs)
        # Worst case a point costs ~18 bytes encoded; keep every body inside one chunk.
        per_block = max(1, min(self.config.block_points, (self._store.max_body - 256) // 18))
        out = []
        for lo in range(0, ts.shape[0], per_block):
            sl = slice(lo, lo + per_block)
            body = encode_block(ts[sl], vals[sl], qual[sl], self.config.zstd_level)
            out.append(self._store.append(
                tag_id, CODEC_ZSTD_V1, BLOCK_SORTED, body, int(ts[sl][0]), int(ts[sl][-1]),
                int(ts[sl].shape[0]), max_lsn,
            ))  # fmt: skip
        self._counters["blocks_written"] += len(out)
        return out

    def _checkpoint(self) -> None:
        # The checkpoint may only cover points whose blocks are already written:
        # everything older than the oldest point still in memory.
        with self._state:
            firsts = [b.first_lsn for t in self._tags.values()
                      for b in (*t.sealing, t.active) if b.count]  # fmt: skip
            candidate = min(firsts) - 1 if firsts else self._applied_lsn
        if candidate <= self.checkpoint_lsn:
            return
        try:
            self._store.sync()
            recovery.write_checkpoint(self.path, candidate)
        except OSError as exc:  # e.g. ENOSPC: the old checkpoint stands, the WAL still replays
            raise _storage_error(exc, "writing the checkpoint") from exc
        self.checkpoint_lsn = candidate
        self._wal.recycle(candidate)
        self._counters["checkpoints"] += 1


def _storage_error(exc: OSError, what: str) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"no space left on device while {what}")
    return StorageError(f"{what} failed: {exc}")
