"""The storage engine: a plain, thread-safe API over WAL, MemBuffers and blocks.

Locks, always taken in this order:

* ``_write_lock`` serialises WAL appends and their application to memory, so
  LSN order is write order (which is what "the later write wins" means).
* ``_seal_lock`` serialises sealing, checkpoints and the block store.
* ``_state`` (a Condition) guards the in-memory view: MemBuffers, the
  published block lists, the last-value cache. It is held only for pointer
  swaps, never for I/O. A seal moves a MemBuffer to ``sealing`` (still
  visible), writes its blocks, then publishes the blocks and drops the buffer
  in one critical section: a reader sees the points exactly once, before,
  during and after a flush.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

from xtsdb.protocol.errors import (
    EngineClosed,
    Overloaded,
    StorageError,
    XtsdbError,
)

from . import lastvalues, recovery
from .analytics import AnalyticsOps
from .catalog import Catalog
from .catalog_ops import CatalogOps
from .config import EngineConfig
from .container import BlockEntry
from .membuffer import Columns
from .points import GOOD_QUALITY, TS_LIMIT, LastPoints, Points, ReadStats
from .query import run_last, run_query
from .sealing import SealOps
from .staging import PointStager
from .tagstate import BlockTotals, TagState, run_tops
from .wal_records import DeleteRecord, WriteBatch, decode_record

log = logging.getLogger("xtsdb.engine")


class Engine(SealOps, CatalogOps, AnalyticsOps):
    """Open with :meth:`open`; every public method is safe to call from any thread."""

    def __init__(self, parts: recovery.Opened, config: EngineConfig) -> None:
        self.config = config
        self._parts = parts  # what close() releases
        self.path = parts.path
        self._lock_file = parts.lock
        self._wal = parts.wal
        self._store = parts.store
        self._index = parts.index
        self._reader = parts.reader
        self.repairs: list[str] = parts.repairs
        self.checkpoint_lsn = parts.checkpoint_lsn
        self._write_lock = threading.Lock()
        self._seal_lock = threading.Lock()
        self._state = threading.Condition(threading.Lock())
        self._tags: dict[int, TagState] = {}
        self._last: dict[int, tuple[int, float, int]] = {}
        self._mem_points = 0
        self._seal_wanted = False
        self._reject_tags: set[int] = set()
        self._seal_error = ""
        self._applied_lsn = self.checkpoint_lsn
        self._closed = False
        self._failed: XtsdbError | None = None
        self._stats = ReadStats()
        self._counters = {"points_written": 0, "write_batches": 0, "wal_commits": 0,
                          "blocks_written": 0, "checkpoints": 0, "seal_errors": 0}  # fmt: skip
        self._points = PointStager(self.write_batches, lambda: self._applied_lsn)
        self._totals = BlockTotals()
        for e in sorted(parts.blocks, key=lambda e: e.seq):
            t = self._tag(e.tag_id)
            (t.tombstones if e.is_tombstone else t.blocks).append(e)
        self._totals.add(e for e in parts.blocks if not e.is_tombstone)
        parts.blocks = []  # the tags hold them now
        self._last_file = self.path / lastvalues.NAME
        self.catalog = Catalog(self.path / "catalog.sqlite3", lambda: max(self._tags, default=-1))
        for info in self.catalog.all():
            self._tag(info.id).policy = info.duplicates
            if info.duplicates == "reject":
                self._reject_tags.add(info.id)
        # Before the replay: replayed writes update loaded values as any write does.
        self._last.update(lastvalues.load(self._last_file, self._store.instance_id, self._tags))
        for lsn, payload in self._wal.replay(self.checkpoint_lsn):
            rec = decode_record(payload)
            if isinstance(rec, DeleteRecord):
                self._apply_delete(rec, lsn)
            else:
                self._apply(rec, lsn)
            self._applied_lsn = lsn
        self._applied_lsn = max(self._applied_lsn, self._wal.last_lsn)
        self.repairs.extend(self._wal.repairs)
        self._sealer = threading.Thread(target=self._seal_loop, name="xtsdb-sealer", daemon=True)
        self._sealer.start()

    @classmethod
    def open(cls, data_dir: str | Path, config: EngineConfig | None = None) -> Engine:
        """Lock the directory, recover it (index, chunks, WAL replay) and start the sealer."""
        config = config or EngineConfig()
        parts = recovery.open_parts(Path(data_dir), config)
        try:
            engine = cls(parts, config)
        except BaseException:
            recovery.close_parts(parts)
            raise
        for line in engine.repairs:
            log.warning("recovery: %s", line)
        return engine

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ------------------------------------------------------------

    def write(self, tag_id: Any, timestamps_us: Any, values: Any, qualities: Any = None) -> int:
        """Write a columnar batch (one tag id, or a tag id per point); durable on return."""
        return self.write_batches([WriteBatch.build(tag_id, timestamps_us, values, qualities)])

    def write_batches(self, batches: list[WriteBatch]) -> int:
        """Group commit: one WAL write and one fsync for all batches; returns the last LSN."""
        batches = [b for b in batches if b.n_points]
        n_points = sum(b.n_points for b in batches)
        with self._write_lock:
            self._check_writable()
            if not batches:
                return self._applied_lsn
            if self._reject_tags:
                self._check_rejects(batches)
            self._wait_for_room(n_points)
            try:
                last = self._wal.append_many([b.payload for b in batches])
            except StorageError as exc:
                if self._wal.failed:  # poisoned (see DurabilityError): refuse until reopened
                    self._failed = exc
                raise
            with self._state:
                first = last - len(batches) + 1
                for i, b in enumerate(batches):
                    self._apply(b, first + i)
                self._applied_lsn = last
                self._counters["points_written"] += n_points
                self._counters["write_batches"] += len(batches)
                self._counters["wal_commits"] += 1
                if self._seal_wanted:
                    self._state.notify_all()
        return last

    def write_point(
        self, tag_id: int, ts_us: int, value: float, quality: int = GOOD_QUALITY
    ) -> None:
        """Stage one point: visible and durable at :meth:`commit` (or every 65,536 points)."""
        self._points.add(tag_id, ts_us, value, quality)

    def commit(self) -> int:
        """Make every staged :meth:`write_point` durable and visible (one fsync)."""
        return self._points.commit()

    def _apply(self, batch: WriteBatch, lsn: int) -> None:
        if not batch.n_points:
            return
        ts_all, v_all, q_all = batch.timestamps, batch.values, batch.qualities
        tops, idx = run_tops(batch)
        last_v, last_q = v_all[idx].tolist(), q_all[idx].tolist()
        block_points = self.config.block_points
        for k, (tag_id, sl) in enumerate(batch.runs()):
            t = self._tags.get(tag_id) or self._tag(tag_id)
            t.active.append(ts_all[sl], v_all[sl], q_all[sl], lsn)
            t.version += 1
            if t.active.count >= block_points:
                self._seal_wanted = True
            if t.policy != "last":  # the cache assumes later-wins; others fill lazily
                self._last.pop(tag_id, None)
                continue
            top = tops[k]
            cached = self._last.get(tag_id)
            # Without a cached value the newest point is only known for a tag whose
            # first points these are; others are filled lazily by last().
            first_data = not t.blocks and not t.sealing and t.active.count == sl.stop - sl.start
            if (top >= cached[0]) if cached is not None else first_data:
                self._last[tag_id] = (top, last_v[k], last_q[k])
        self._mem_points += batch.n_points

    def _tag(self, tag_id: int) -> TagState:
        t = self._tags.get(tag_id)
        if t is None:
            t = self._tags[tag_id] = TagState()
        return t

    def _wait_for_room(self, n_points: int) -> None:
        # Backpressure: a writer faster than the sealer waits instead of growing memory.
        with self._state:
            if self._mem_points + n_points <= self.config.max_memory_points:
                return
            self._state.notify_all()
            ok = self._state.wait_for(
                lambda: (
                    self._mem_points + n_points <= self.config.max_memory_points or self._closed
                ),
                timeout=60.0,
            )
        if not ok:
            raise Overloaded("storage is behind: MemBuffers are full and sealing is not keeping up")

    def _check_writable(self) -> None:
        if self._closed:
            raise EngineClosed("engine is closed")
        if self._failed is not None:
            raise type(self._failed)(f"engine refuses writes after an earlier failure: "
                                     f"{self._failed}; reopen it")  # fmt: skip

    def delete(self, tag_id: int, start_us: int, end_us: int) -> int:
        """Delete the points of a tag with ``start_us <= ts < end_us``; durable on return.

        The delete is a WAL record plus a tombstone in the block directory, so it
        survives restarts and index rebuilds; points written after it are kept.
        """
        rec = DeleteRecord.build(tag_id, start_us, end_us)
        with self._write_lock:
            self._check_writable()
            try:
                lsn = self._wal.append_many([rec.payload])
            except StorageError as exc:
                if self._wal.failed:
                    self._failed = exc
                raise
            with self._seal_lock:  # no seal in flight: no old points can land after it
                self._apply_delete(rec, lsn)
                self._applied_lsn = lsn
        return lsn

    def delete_tag(self, tag_id: int) -> int:
        """Delete every point of a tag."""
        return self.delete(tag_id, -TS_LIMIT, TS_LIMIT)

    def _apply_delete(self, rec: DeleteRecord, lsn: int) -> None:
        for tag_id, start, end in rec.ranges():
            t = self._tags.get(tag_id)
            if t is None:
                t = self._tag(tag_id)
            # On replay the tombstone may already be on disk (same LSN): reuse it.
            if not any(ts.max_lsn == lsn for ts in t.tombstones):
                tomb = self._store.append_tombstone(tag_id, start, end, lsn)
                self._store.commit_index()
                t.tombstones = [*t.tombstones, tomb]
            with self._state:
                for buf in (*t.sealing, t.active):
                    self._mem_points -= buf.drop_range(start, end)
                t.version += 1
                self._last.pop(tag_id, None)

    def flush(self) -> None:
        """Seal every MemBuffer into blocks and write a checkpoint."""
        self.commit()
        self._seal(force_all=True)

    # -- reads -------------------------------------------------------------

    def query(
        self,
        tag_id: int,
        start_us: int,
        end_us: int,
        limit: int | None = None,
        *,
        descending: bool = False,
        good_only: bool = False,
    ) -> Points:
        """Points of one tag with ``start_us <= ts < end_us``, one per timestamp.

        Sorted oldest first (newest first with ``descending``; ``limit`` then keeps
        the newest). ``good_only`` drops points whose quality is not Good (>= 192).
        """
        return run_query(self, tag_id, start_us, end_us, limit, descending, good_only)

    def last(self, tag_ids: Any) -> LastPoints:
        """The newest point of each tag that has data."""
        return run_last(self, tag_ids)

    def stats(self) -> dict[str, Any]:
        with self._state:
            mem_points = self._mem_points
            n_blocks, body_bytes = self._totals.blocks, self._totals.bytes
            disk_points = self._totals.points
            tags = len(self._tags)
        return {
            **self._counters, **self._stats.as_dict(), "tags": tags, "memory_points": mem_points,
            "blocks": n_blocks, "block_points": disk_points, "block_bytes": body_bytes,
            "wal_bytes": self._wal.size_bytes, "wal_last_lsn": self._wal.last_lsn,
            "checkpoint_lsn": self.checkpoint_lsn, "container_bytes": self._store.disk_bytes(),
            "failed": str(self._failed) if self._failed else "",
            "last_seal_error": self._seal_error,
        }  # fmt: skip

    def rebuild_index(self) -> None:
        """Recreate the SQLite index from a raw scan of every chunk's meta region."""
        with self._seal_lock:
            self._store.commit_index()
            recovery.rebuild_index(self._store)

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Seal everything, checkpoint (nothing left to replay), release the directory."""
        with self._state:
            if self._closed:
                return
        try:
            if self._failed is None:
                self.flush()
                with self._state:  # everything is in blocks now: keep last() warm
                    lastvalues.save(
                        self._last_file, self._store.instance_id, self._tags, self._last
                    )
        except (StorageError, OSError, sqlite3.Error) as exc:
            # A shutdown that cannot seal or checkpoint (a full disk) still ends cleanly:
            # every acknowledged point is in the WAL, which the next open replays.
            log.error(
                "close: could not seal and checkpoint (%s: %s); the WAL holds every "
                "acknowledged point and is replayed at the next start",
                type(exc).__name__,
                exc,
            )
        finally:
            with self._state:
                self._closed = True
                self._state.notify_all()
            self._sealer.join(timeout=30)
            self.catalog.close()
            recovery.close_parts(self._parts)

    # used by query.py
    def _snapshot(self, tag_id: int) -> (
        tuple[list[BlockEntry], np.ndarray, np.ndarray, list[Columns], list[BlockEntry], bool]
        | None
    ):  # fmt: skip
        with self._state:
            if self._closed:
                raise EngineClosed("engine is closed")
            t = self._tags.get(tag_id)
            if t is None:
                return None
            firsts, lasts = t.block_bounds()
            mem = [p for b in t.sealing for p in b.parts] + t.active.snapshot()
            first = t.policy == "first"
            return t.blocks[: firsts.shape[0]], firsts, lasts, mem, t.tombstones, first


__all__ = ["Engine"]
