"""The storage engine: a plain, thread-safe API over WAL, MemBuffers and blocks.

Locks, always taken in this order:

* ``_write_lock`` serialises WAL appends and their application to memory, so
  LSN order is write order (which is what "the later write wins" means).
* the seal lock (``Sealer.lock``) serialises sealing, checkpoints and the
  block store.
* the state lock (``EngineState.lock``, see state.py) guards the in-memory
  view; it is held only for pointer swaps, never for I/O.

The parts are composed, not mixed in: ``EngineState`` is the shared view,
``ReadPath`` answers queries from snapshots of it, ``Sealer`` writes blocks and
checkpoints, ``TagPolicies`` applies catalog settings, ``Retention`` retires
chunks. Each gets what it needs at construction; none reaches into the engine.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from numpy.typing import ArrayLike

from xtsdb.protocol.errors import EngineClosed, InvalidInput, StorageError, XtsdbError

from . import analytics, recovery, summary_plot, workers
from .aggregate import Buckets
from .analytics import Interpolated
from .catalog import Catalog, TagInfo
from .catalog_ops import TagPolicies
from .compaction import Compactor
from .config import EngineConfig
from .lastvalues import NAME as LAST_VALUES_FILE
from .points import GOOD_QUALITY, TS_LIMIT, LastPoints, Points
from .query import ReadPath
from .retention import Retention
from .sealing import Sealer
from .staging import PointStager
from .state import EngineState
from .wal_records import DeleteRecord, WriteBatch, decode_record

log = logging.getLogger("xtsdb.engine")


class Engine:
    """Open with :meth:`open`; every public method is safe to call from any thread."""

    def __init__(self, parts: recovery.Opened, config: EngineConfig) -> None:
        self.config = config
        self._parts = parts  # what close() releases
        self.path = parts.path
        self._wal = parts.wal
        self._store = parts.store
        self._reader = parts.reader
        self._procs = workers.pool_for(config)  # encode seals, decode large reads
        self._reader.attach(self._procs)
        self.repairs: list[str] = parts.repairs
        self._write_lock = threading.Lock()
        self._state = state = EngineState(parts.checkpoint_lsn)
        self._tags = state.tags  # the same dict, for tests and benches that inspect blocks
        self._failed: XtsdbError | None = None
        self._points = PointStager(self.write_batches, lambda: state.applied_lsn)
        for e in sorted(parts.blocks, key=lambda e: e.seq):
            t = state.tag(e.tag_id)
            (t.tombstones if e.is_tombstone else t.blocks).append(e)
        state.totals.add(e for e in parts.blocks if not e.is_tombstone)
        parts.blocks = []  # the tags hold them now
        self._reads = ReadPath(state, self._reader, self._store)
        self.catalog = Catalog(self.path / "catalog.sqlite3", lambda: max(state.tags, default=-1))
        self._policies = TagPolicies(self.catalog, state, self._reads, self.delete_tag)
        self._seals = Sealer(
            config,
            self.path,
            self._wal,
            self._store,
            state,
            parts.checkpoint_lsn,
            self.apply_retention,
            self._procs,
        )
        self._retention = Retention(
            state,
            self._store,
            self.catalog,
            self._seals.lock,
            self.delete,
            config.retention_us,
            config.retention_grace_s,
        )
        # Before the replay: replayed writes update loaded values as any write does.
        state.last.load(self.path / LAST_VALUES_FILE, self._store.instance_id, state.tags)
        for lsn, payload in self._wal.replay(parts.checkpoint_lsn):
            rec = decode_record(payload)
            if isinstance(rec, DeleteRecord):
                self._apply_delete(rec, lsn)
            else:
                state.apply(rec, lsn, config.block_points)
            state.applied_lsn = lsn
        state.applied_lsn = max(state.applied_lsn, self._wal.last_lsn)
        self.repairs.extend(self._wal.repairs)
        self._sealer = threading.Thread(target=self._seals.run, name="xtsdb-sealer", daemon=True)
        self._sealer.start()
        lock = self._seals.lock
        self._compactor = Compactor(config, state, parts.store, parts.reader, lock, self._procs)
        self._compacting = self._compactor.start() if config.compaction else None

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

    @property
    def checkpoint_lsn(self) -> int:
        """The LSN up to which every write is in blocks (the WAL replays from after it)."""
        return self._seals.checkpoint_lsn

    # -- writes ------------------------------------------------------------

    def write(
        self,
        tag_id: ArrayLike,
        timestamps_us: ArrayLike,
        values: ArrayLike,
        qualities: ArrayLike | None = None,
    ) -> int:
        """Write a columnar batch (one tag id, or a tag id per point); durable on return."""
        return self.write_batches([WriteBatch.build(tag_id, timestamps_us, values, qualities)])

    def write_batches(self, batches: list[WriteBatch]) -> int:
        """Group commit: one WAL write and one fsync for all batches; returns the last LSN."""
        batches = [b for b in batches if b.n_points]
        n_points = sum(b.n_points for b in batches)
        state = self._state
        with self._write_lock:
            self._check_writable()
            if not batches:
                return state.applied_lsn
            if state.reject_tags:
                self._policies.check_rejects(batches)
            state.wait_for_room(n_points, self.config.max_memory_points)
            last = self._logged(lambda: self._wal.append_many([b.payload for b in batches]))
            with state.lock:
                first = last - len(batches) + 1
                for i, b in enumerate(batches):
                    state.apply(b, first + i, self.config.block_points)
                state.applied_lsn = last
                state.counters["points_written"] += n_points
                state.counters["write_batches"] += len(batches)
                state.counters["wal_commits"] += 1
                if state.seal_wanted:
                    state.lock.notify_all()
        return last

    def write_point(
        self, tag_id: int, ts_us: int, value: float, quality: int = GOOD_QUALITY
    ) -> None:
        """Stage one point: visible and durable at :meth:`commit` (or every 65,536 points)."""
        self._points.add(tag_id, ts_us, value, quality)

    def commit(self) -> int:
        """Make every staged :meth:`write_point` durable and visible (one fsync)."""
        return self._points.commit()

    def _check_writable(self) -> None:
        if self._state.closed:
            raise EngineClosed("engine is closed")
        if self._failed is not None:
            why = f"engine refuses writes after an earlier failure: {self._failed}; reopen it"
            raise type(self._failed)(why)

    def _logged(self, append: Callable[[], int]) -> int:
        """Run a WAL append; a WAL poisoned by it (see DurabilityError) refuses until reopened."""
        try:
            return append()
        except StorageError as exc:
            if self._wal.failed:
                self._failed = exc
            raise

    def delete(self, tag_id: int, start_us: int, end_us: int) -> int:
        """Delete the points of a tag with ``start_us <= ts < end_us``; durable on return.

        The delete is a WAL record plus a tombstone in the block directory, so it
        survives restarts and index rebuilds; points written after it are kept.
        """
        rec = DeleteRecord.build(tag_id, start_us, end_us)
        with self._write_lock:
            self._check_writable()
            lsn = self._logged(lambda: self._wal.append_many([rec.payload]))
            with self._seals.lock:  # no seal in flight: no old points can land after it
                self._apply_delete(rec, lsn)
                self._state.applied_lsn = lsn
        return lsn

    def delete_tag(self, tag_id: int) -> int:
        """Delete every point of a tag."""
        return self.delete(tag_id, -TS_LIMIT, TS_LIMIT)

    def _apply_delete(self, rec: DeleteRecord, lsn: int) -> None:
        state = self._state
        for tag_id, start, end in rec.ranges():
            t = state.tag(tag_id)
            # On replay the tombstone may already be on disk (same LSN): reuse it.
            if not any(ts.max_lsn == lsn for ts in t.tombstones):
                tomb = self._store.append_tombstone(tag_id, start, end, lsn)
                self._store.commit_index()
                t.tombstones = [*t.tombstones, tomb]
            with state.lock:
                for buf in (*t.sealing, t.active):
                    state.mem_points -= buf.drop_range(start, end)
                t.version += 1
                state.last.forget(tag_id)

    def flush(self) -> None:
        """Seal every MemBuffer into blocks and write a checkpoint."""
        self.commit()
        self._seals.seal(force_all=True)

    def apply_retention(self, now_us: int | None = None, grace_s: float | None = None) -> int:
        """Retire chunks whose data is older than ``config.retention_us``; returns how many."""
        return self._retention.apply(now_us, grace_s)

    # -- the tag catalog -----------------------------------------------------

    def create_tag(self, name: str, **meta: Any) -> TagInfo:
        """Name a new tag (with unit, description, value_type, duplicates, retention_us)."""
        return self._policies.create(name, **meta)

    def create_tags(
        self, items: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[TagInfo | InvalidInput]:
        """Tags ``(name, settings)``, the new ones in one durable catalog transaction; each
        item's tag (made now or before) or the InvalidInput that refused it alone."""
        return self._policies.create_many(items)

    def adopt_tag(self, name: str, tag_id: int, meta: dict[str, Any]) -> TagInfo:
        """Cluster mode: mirror the shared catalog's tag ``name`` = ``tag_id`` (idempotent)."""
        return self._policies.adopt(name, tag_id, meta)

    def tag_ids(self) -> list[int]:
        """Every tag id this engine holds points (or tombstones) for, sorted."""
        with self._state.lock:
            return sorted(self._state.tags)

    def forget_tag(self, name: str) -> TagInfo | None:
        """Cluster mode: drop the catalog entry of ``name`` only (its points went by the log)."""
        return self._policies.forget(name)

    def get_or_create_tag(self, name: str) -> int:
        """The id of the tag named ``name``, creating it (default settings) if absent.

        A creation by another thread between the lookup and the insert is not an
        error: the name then exists and its id is returned. A bad name raises
        InvalidInput and creates nothing.
        """
        return self._policies.get_or_create(name)

    def update_tag(self, key: int | str, **meta: Any) -> TagInfo:
        """Change a tag's settings (the same fields as :meth:`create_tag`)."""
        return self._policies.update(key, **meta)

    def remove_tag(self, key: int | str) -> TagInfo:
        """Delete a tag's points and its catalog entry."""
        return self._policies.remove(key)

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
        return self._reads.query(tag_id, start_us, end_us, limit, descending, good_only)

    def last(self, tag_ids: ArrayLike) -> LastPoints:
        """The newest point of each tag that has data."""
        return self._reads.last(tag_ids)

    def aggregate(
        self,
        tag_id: int,
        start_us: int,
        end_us: int,
        interval_us: int,
        aggregates: Sequence[str],
        *,
        origin_us: int = 0,
        good_only: bool = False,
    ) -> Buckets:
        """Per-bucket aggregates over ``[start_us, end_us)``; buckets aligned to origin."""
        return analytics.aggregate(
            self._reads, tag_id, start_us, end_us, interval_us, aggregates, origin_us, good_only
        )

    def interpolate(
        self,
        tag_id: int,
        at_us: ArrayLike,
        method: str = "previous",
        *,
        good_only: bool = False,
        max_gap_us: int | None = None,
    ) -> Interpolated:
        """Values at given times (times, values, status); see aggregate.interpolate."""
        return analytics.interpolate(self._reads, tag_id, at_us, method, good_only, max_gap_us)

    def plot(
        self, tag_id: int, start_us: int, end_us: int, intervals: int, *, good_only: bool = False
    ) -> Points:
        """At most first/last/min/max points per pixel column, for drawing long ranges."""
        if not summary_plot.checked(start_us, end_us, intervals):  # its errors, empty ranges
            return analytics.plot(self._reads, tag_id, start_us, end_us, intervals, good_only)
        return summary_plot.plot(self._reads, tag_id, start_us, end_us, intervals, good_only)

    def stats(self) -> dict[str, Any]:
        """Engine counters and sizes (the keys of the server's ``stats`` op)."""
        state = self._state
        with state.lock:
            live = {
                "tags": len(state.tags),
                "memory_points": state.mem_points,
                "blocks": state.totals.blocks,
                "block_points": state.totals.points,
                "block_bytes": state.totals.bytes,
            }
            counters, reads = dict(state.counters), state.stats.as_dict()
        return {
            **counters,
            **reads,
            **live,
            "wal_bytes": self._wal.size_bytes,
            "wal_last_lsn": self._wal.last_lsn,
            "checkpoint_lsn": self.checkpoint_lsn,
            "container_bytes": self._store.disk_bytes(),
            "failed": str(self._failed) if self._failed else "",
            "last_seal_error": state.seal_error,
        }

    def rebuild_index(self) -> None:
        """Recreate the SQLite index from a raw scan of every chunk's meta region."""
        with self._seals.lock:
            self._store.commit_index()
            recovery.rebuild_index(self._store)

    def compact(self) -> int:
        """Run one compaction pass now (see compaction.py); returns the tags compacted."""
        return self._compactor.run_once()

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Seal everything, checkpoint (nothing left to replay), release the directory."""
        state = self._state
        with state.lock:
            if state.closed:
                return
        self._compactor.halt(self._compacting)
        try:
            if self._failed is None:
                self.flush()
                with state.lock:  # everything is in blocks now: keep last() warm
                    state.last.save(
                        self.path / LAST_VALUES_FILE, self._store.instance_id, state.tags
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
            with state.lock:
                state.closed = True
                state.lock.notify_all()
            self._sealer.join(timeout=30)
            self.catalog.close()
            recovery.close_parts(self._parts)
            if self._procs is not None:
                self._procs.close()


__all__ = ["Engine"]
