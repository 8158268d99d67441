"""The engine's in-memory view, shared explicitly by the write path, the sealer and readers.

``EngineState.lock`` (a Condition) guards every field below. It is held only
for pointer swaps and counters, never for I/O: a query takes a
:class:`TagSnapshot` under it and then reads blocks without it. A seal moves a
MemBuffer to ``sealing`` (still visible), writes its blocks, then publishes the
blocks and drops the buffer in one critical section, so a reader sees the
points exactly once, before, during and after a flush.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from xtsdb.protocol.errors import EngineClosed, Overloaded

from .container import BlockEntry
from .lastvalues import LastValues
from .membuffer import Columns, Span, overlapping
from .points import Int64Array, ReadStats
from .tagstate import BlockTotals, TagState, run_tops
from .wal_records import WriteBatch


@dataclass(frozen=True)
class TagSnapshot:
    """What a query of one tag reads: immutable lists taken under the state lock.

    ``blocks`` are in seq (write) order, ``firsts``/``lasts`` their time bounds;
    ``memory`` is the unsealed points, oldest write first; ``keep_first`` is the
    tag's duplicate policy 'first' (otherwise the later write wins).
    """

    blocks: list[BlockEntry]
    firsts: Int64Array
    lasts: Int64Array
    memory: list[Columns]
    tombstones: list[BlockEntry]
    keep_first: bool
    memory_spans: list[Span] | None = None  # each memory part's time span (None: unknown)

    def memory_in(self, start: int, end: int) -> list[Columns]:
        """The memory parts that may hold points in ``[start, end)``, oldest write first."""
        if self.memory_spans is None:
            return self.memory
        return overlapping(self.memory, self.memory_spans, start, end)


class EngineState:
    """Tags, the last-value cache, counters and the sealer's signals, under one lock."""

    def __init__(self, applied_lsn: int) -> None:
        self.lock = threading.Condition(threading.Lock())
        self.tags: dict[int, TagState] = {}
        self.last = LastValues()
        self.stats = ReadStats()  # summed over every query
        self.totals = BlockTotals()
        self.counters = dict.fromkeys(
            ("points_written", "write_batches", "wal_commits", "blocks_written"), 0
        )
        self.counters.update(checkpoints=0, seal_errors=0, blocks_summarised=0)
        self.reject_tags: set[int] = set()  # tags whose duplicate policy is 'reject'
        self.mem_points = 0
        self.seal_wanted = False
        self.seal_error = ""
        self.applied_lsn = applied_lsn
        self.closed = False

    def tag(self, tag_id: int) -> TagState:
        """The state of a tag, created empty on first use."""
        t = self.tags.get(tag_id)
        if t is None:
            t = self.tags[tag_id] = TagState()
        return t

    def snapshot(self, tag_id: int) -> TagSnapshot | None:
        """The lists a query of ``tag_id`` reads; None for a tag never written."""
        with self.lock:
            if self.closed:
                raise EngineClosed("engine is closed")
            t = self.tags.get(tag_id)
            if t is None:
                return None
            firsts, lasts = t.block_bounds()
            mem = [p for b in t.sealing for p in b.parts] + t.active.snapshot()
            spans = [s for b in (*t.sealing, t.active) for s in b.spans]
            n = firsts.shape[0]
            keep_first = t.policy == "first"
            return TagSnapshot(t.blocks[:n], firsts, lasts, mem, t.tombstones, keep_first, spans)

    def apply(self, batch: WriteBatch, lsn: int, block_points: int) -> None:
        """Add a logged batch to the MemBuffers and the last-value cache (lock held)."""
        if not batch.n_points:
            return
        ts_all, v_all, q_all = batch.timestamps, batch.values, batch.qualities
        tops, idx = run_tops(batch)
        lows = np.minimum.reduceat(ts_all, batch.run_bounds[:-1]).tolist()
        last_v, last_q = v_all[idx].tolist(), q_all[idx].tolist()
        for k, (tag_id, sl) in enumerate(batch.runs()):
            t = self.tags.get(tag_id) or self.tag(tag_id)
            t.active.append(ts_all[sl], v_all[sl], q_all[sl], lsn, (lows[k], tops[k]))
            t.version += 1
            if t.active.count >= block_points:
                self.seal_wanted = True
            if t.policy != "last":  # the cache assumes later-wins; others fill lazily
                self.last.forget(tag_id)
                continue
            top = tops[k]
            cached = self.last.get(tag_id)
            # Without a cached value the newest point is only known for a tag whose
            # first points these are; others are filled lazily by last().
            first_data = not t.blocks and not t.sealing and t.active.count == sl.stop - sl.start
            if (top >= cached[0]) if cached is not None else first_data:
                self.last.set(tag_id, (top, last_v[k], last_q[k]))
        self.mem_points += batch.n_points

    def wait_for_room(self, n_points: int, max_points: int) -> None:
        """Backpressure: a writer faster than the sealer waits instead of growing memory."""
        with self.lock:
            if self.mem_points + n_points <= max_points:
                return
            self.lock.notify_all()
            ok = self.lock.wait_for(
                lambda: self.mem_points + n_points <= max_points or self.closed, timeout=60.0
            )
        if not ok:
            raise Overloaded("storage is behind: MemBuffers are full and sealing is not keeping up")
