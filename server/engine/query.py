"""The read path: pick blocks by tag and time, decode them, merge with memory.

Blocks are chosen from the in-memory copy of the directory (loaded from the
index), so blocks outside the query's time range are never read. When the
chosen blocks do not overlap in time (the normal case: a tag's blocks follow
each other) they are decoded in time order straight into one result buffer and
need no sort. Otherwise they are decoded oldest-first and merged with a stable
sort, so that for equal timestamps the later write wins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from xtsdb.protocol.errors import EngineClosed, InvalidInput, StorageError, XtsdbError

from .container import BlockEntry
from .lastvalues import LastValue
from .membuffer import Columns, clip, concat, consolidate, sort_unique, time_span
from .points import GOOD_QUALITY, LastPoints, Points, ReadStats
from .reader import BlockReader
from .state import EngineState, TagSnapshot
from .store import BlockStore


def _int(x: Any, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise InvalidInput(f"{what} must be an integer, got {type(x).__name__}")
    return int(x)


@dataclass(frozen=True)
class ReadPath:
    """Queries and ``last()``: engine -> snapshot of a tag -> block reader, one way.

    Holds no state of its own: each query takes a :class:`TagSnapshot` under
    the state lock and reads the blocks it names without the lock.
    """

    state: EngineState
    reader: BlockReader
    store: BlockStore

    def snapshot(self, tag_id: int) -> TagSnapshot | None:
        return self.state.snapshot(tag_id)

    def query(
        self,
        tag_id: int,
        start_us: int,
        end_us: int,
        limit: int | None = None,
        descending: bool = False,
        good_only: bool = False,
    ) -> Points:
        """See :meth:`Engine.query`; the query's read statistics join the engine's."""
        tag_id, start, end = _int(tag_id, "tag"), _int(start_us, "start"), _int(end_us, "end")
        if limit is not None and _int(limit, "limit") < 0:
            raise InvalidInput("limit must be >= 0")
        snap = self.state.snapshot(tag_id)
        pts = run_query(snap, self.reader, self.store, start, end, limit, descending, good_only)
        with self.state.lock:
            self.state.stats.add(pts.stats)
        return pts

    def last(self, tag_ids: ArrayLike) -> LastPoints:
        """See :meth:`Engine.last`: cached values, others computed (and cached) here."""
        ids = np.asarray(tag_ids)
        if ids.ndim == 0:
            ids = ids.reshape(1)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise InvalidInput("tags must be a 1-D array of integer tag ids")
        wanted = ids.astype(np.int64).tolist()
        state, cache = self.state, self.state.last
        with state.lock:
            if state.closed:
                raise EngineClosed("engine is closed")
            found = [cache.get(t) for t in wanted]
            missing = [
                t for t, f in zip(wanted, found, strict=True) if f is None and t in state.tags
            ]
        errors: dict[int, XtsdbError] = {}
        computed: dict[int, LastValue] = {}
        for t in dict.fromkeys(missing):
            try:
                value = self._fill_last(t)
            except EngineClosed:
                raise
            except StorageError as exc:  # a damaged block: this tag alone has no answer
                errors[t] = exc
                continue
            if value is not None:
                computed[t] = value
        if missing:
            with state.lock:
                found = [cache.get(t) or computed.get(t) for t in wanted]
        keep = [i for i, f in enumerate(found) if f is not None]
        rows = [r for r in found if r is not None]
        return LastPoints(
            np.array([wanted[i] for i in keep], dtype=np.uint32),
            np.array([r[0] for r in rows], dtype=np.int64),
            np.array([r[1] for r in rows], dtype=np.float64),
            np.array([r[2] for r in rows], dtype=np.uint8),
            errors,
        )

    def _fill_last(self, tag_id: int) -> LastValue | None:
        """The newest point of a tag whose value is not cached (e.g. after a restart),
        cached unless writes kept changing the tag meanwhile.

        The version check guards only the cache: a value computed while a write (or a
        seal, or a compaction) changed the tag is still a newest point the tag had during
        the call, so it is returned, just not kept (it used to be dropped, and ``last``
        then left a tag with points out of its answer)."""
        state = self.state
        newest: LastValue | None = None
        for _ in range(3):
            with state.lock:
                t = state.tags.get(tag_id)
                if t is None:
                    return None
                version = t.version
                firsts, lasts = t.block_bounds()
                span = time_span((*t.sealing, t.active))
                mem_top = None if span is None else span[1]
            newest = self._newest(tag_id, firsts, lasts, mem_top)
            with state.lock:
                if t.version == version:
                    if newest is not None:
                        state.last.set(tag_id, newest)
                    return newest
            time.sleep(0)  # a write raced us: recompute
        return newest

    def _newest(
        self, tag_id: int, firsts: np.ndarray, lasts: np.ndarray, mem_top: int | None
    ) -> LastValue | None:
        """The newest point that a query returns, reading as few blocks as it can.

        A block's ``last_ts`` is only an upper bound: a tombstone may hide its newest
        points (or all of them). So windows are queried from the newest block down,
        each covering twice as many blocks as the one before, until one holds a
        point; the query applies tombstones and duplicate policies as usual. A point
        in memory is never hidden (a delete drops it), so nothing older is needed.
        """
        by_last = np.argsort(-lasts, kind="stable")
        tops = [int(lasts.max())] if lasts.shape[0] else []
        hi = max([*tops, *([mem_top] if mem_top is not None else [])], default=None)
        if hi is None:
            return None
        hi += 1  # every point at or above ``hi`` is known to be absent
        k = 1
        while True:
            k = min(k, int(by_last.shape[0]))
            lo = int(firsts[by_last[:k]].min()) if k else hi - 1
            if mem_top is not None:
                lo = max(lo, mem_top)  # the answer is at least the newest point in memory
            if lo < hi:
                pts = self.query(tag_id, lo, hi, 1, descending=True)
                if len(pts):
                    return int(pts.timestamps[0]), float(pts.values[0]), int(pts.qualities[0])
                hi = lo
            if k >= by_last.shape[0]:
                return None  # every block was in a window: nothing is left
            k *= 2


def run_query(
    snap: TagSnapshot | None,
    reader: BlockReader,
    store: BlockStore,
    start: int,
    end: int,
    limit: int | None,
    descending: bool = False,
    good_only: bool = False,
) -> Points:
    """The points of ``snap`` in ``[start, end)`` (arguments already checked)."""
    if snap is None or end <= start:
        return Points.empty()
    blocks, firsts, lasts, first = snap.blocks, snap.firsts, snap.lasts, snap.keep_first
    tombs = [x for x in snap.tombstones if x.first_ts < end and x.last_ts >= start]
    stats = ReadStats()
    chosen = np.flatnonzero((firsts < end) & (lasts >= start))
    stats.blocks_read = int(chosen.shape[0])
    stats.blocks_skipped = len(blocks) - stats.blocks_read
    parts = snap.memory_in(start, end)
    mem = clip(consolidate(parts, first), start, end) if parts else None
    stats.points_from_memory = 0 if mem is None else int(mem[0].shape[0])

    out: Columns | None = mem
    if chosen.shape[0]:
        by_time = chosen[np.argsort(firsts[chosen], kind="stable")]
        disjoint = bool(np.all(firsts[by_time][1:] > lasts[by_time][:-1]))
        order = by_time if disjoint else chosen  # chosen is in seq (write) order
        refs = [store.ref(blocks[i]) for i in order.tolist()]
        m = mem if mem is not None and mem[0].shape[0] else None
        n_mem = 0 if m is None else int(m[0].shape[0])
        # Memory points newer than every chosen block go straight after them in
        # the same buffer: the result is built without a full-size copy.
        tail = m is not None and disjoint and int(m[0][0]) > int(lasts[chosen].max())
        cols = reader.read(refs, extra=n_mem if tail else 0)
        stats.points_from_disk = int(cols[0].shape[0]) - (n_mem if tail else 0)
        if tombs:
            cols = _mask_deleted(cols, [blocks[i] for i in order.tolist()], tombs)
        if tail and m is not None:
            cols[0][-n_mem:], cols[1][-n_mem:], cols[2][-n_mem:] = m
            out = clip(cols, start, end)
        else:
            out = clip(cols if disjoint else sort_unique(*cols, keep_first=first), start, end)
            if m is not None:  # memory is newer than every block: it goes last, wins ties
                out = sort_unique(*concat([out, m]), keep_first=first)
    if out is None:
        return Points.empty()
    if good_only:  # after de-duplication: a later Bad write hides an earlier Good one
        good = out[2] >= GOOD_QUALITY
        if not good.all():
            out = (out[0][good], out[1][good], out[2][good])
    if descending:  # views, no copy
        out = (out[0][::-1], out[1][::-1], out[2][::-1])
    more = limit is not None and out[0].shape[0] > limit
    if more:
        out = (out[0][:limit], out[1][:limit], out[2][:limit])
    return Points(out[0], out[1], out[2], stats, more)


def _mask_deleted(cols: Columns, in_order: list[BlockEntry], tombs: list[BlockEntry]) -> Columns:
    """Drop decoded block points that a later tombstone deletes (the tail is memory: kept)."""
    seqs = np.repeat(np.array([b.seq for b in in_order], np.int64), [b.count for b in in_order])
    n_disk = seqs.shape[0]
    ts = cols[0][:n_disk]
    dead = np.zeros(cols[0].shape[0], dtype=bool)
    for tb in tombs:
        dead[:n_disk] |= (seqs < tb.mask_seq) & (ts >= tb.first_ts) & (ts <= tb.last_ts)
    if not dead.any():
        return cols
    keep = ~dead
    return cols[0][keep], cols[1][keep], cols[2][keep]
