"""Background compaction: merge a tag's overlapping or small blocks, apply and drop its deletes.

Rewrites of existing timestamps, late data and deletes each add blocks (and
tombstones) that a query must read and resolve every time. Compaction reads
every block of such a tag, resolves them exactly as a query does (the same
:func:`~.query.run_query`: later write wins, or the first for a tag whose
policy is 'first'; tombstones applied), writes the result as merged blocks of
``block_points`` points and supersedes the old entries with one retire record
(:mod:`.compaction_rules` has the rule and its crash safety).

Which tags (the policy, ``needs_compaction``): a tag with any tombstone; a tag
whose blocks overlap in time; a tag with more than
``ceil(points / block_points) + 1`` blocks (``points`` summed over its blocks).

Locks (engine.py's order): the seal lock is held only to take the snapshot and
to append the merged blocks and the record; decoding and encoding run with no
lock. A block sealed or a delete made meanwhile that overlaps the tag's range
in time, or a retention that removed one of the read blocks, abandons the
round (it is tried again later): the merged points must never win over a
newer write. After each tag the thread sleeps ``points / compaction_rate``
seconds, so ingest keeps the disk and the cores.

Encoding goes to the worker processes (workers.py) when a tag has at least
``seal_pool_min_points`` points, as seal rounds do; smaller tags encode here.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from xtsdb.protocol.errors import StorageError, XtsdbError

from .block_codec import CODEC_ZSTD_V1
from .compaction_rules import BLOCK_MERGED
from .config import EngineConfig
from .container import BLOCK_SORTED, BlockEntry
from .membuffer import Columns
from .points import TS_LIMIT
from .query import run_query
from .reader import BlockReader
from .state import EngineState, TagSnapshot
from .store import BlockStore
from .summary import Summary
from .workers import WorkerPool, encode_many

log = logging.getLogger("xtsdb.engine")


def needs_compaction(blocks: list[BlockEntry], tombs: list[BlockEntry], block_points: int) -> bool:
    """The policy above, over a tag's published blocks and tombstones."""
    if tombs:
        return True
    if len(blocks) < 2:
        return False
    points = sum(b.count for b in blocks)
    if len(blocks) > -(-points // block_points) + 1:
        return True
    firsts = np.fromiter((b.first_ts for b in blocks), np.int64, len(blocks))
    lasts = np.fromiter((b.last_ts for b in blocks), np.int64, len(blocks))
    order = np.argsort(firsts, kind="stable")
    reach = np.maximum.accumulate(lasts[order])
    return bool(np.any(firsts[order][1:] <= reach[:-1]))


@dataclass
class _Work:
    tag_id: int
    seq: int  # every entry of the tag below this seq is read and will be superseded
    blocks: list[BlockEntry]
    tombs: list[BlockEntry]
    keep_first: bool


class Compactor:
    """One pass with :meth:`run_once`; :meth:`run` is the background thread's loop."""

    def __init__(
        self,
        config: EngineConfig,
        state: EngineState,
        store: BlockStore,
        reader: BlockReader,
        seal_lock: threading.Lock,
        procs: WorkerPool | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.store = store
        self.reader = reader
        self.seal_lock = seal_lock
        self.procs = procs
        self.stop = threading.Event()
        for key in ("compactions", "blocks_compacted", "blocks_merged", "compaction_conflicts"):
            state.counters.setdefault(key, 0)

    def start(self) -> threading.Thread:
        th = threading.Thread(target=self.run, name="xtsdb-compactor", daemon=True)
        th.start()
        return th

    def halt(self, thread: threading.Thread | None) -> None:
        """Stop the loop (a round in flight finishes or is abandoned) and wait for it."""
        self.stop.set()
        if thread is not None:
            thread.join(timeout=60)

    def run(self) -> None:
        while not self.stop.wait(self.config.compaction_interval_s):
            try:
                self.run_once(pace=True)
            except Exception as exc:  # the thread outlives any failure and tries again
                internal = not isinstance(exc, XtsdbError)
                log.error("compaction failed, will retry: %s", exc, exc_info=internal)

    def run_once(self, pace: bool = False) -> int:
        """Compact every tag the policy picks; returns how many tags were compacted."""
        bp, keep = self.config.block_points, self.config.retention_us
        # With retention on, old points copied into the newest chunk would outlive
        # their window (chunks retire whole): only tags in the newer half are merged.
        floor = time.time_ns() // 1000 - keep // 2 if keep > 0 else -TS_LIMIT
        with self.state.lock:
            todo = [
                (len(t.blocks) + len(t.tombstones), tag_id)
                for tag_id, t in self.state.tags.items()
                if needs_compaction(t.blocks, t.tombstones, bp)
                and all(b.first_ts >= floor for b in t.blocks)
            ]
        todo.sort(reverse=True)  # the tags whose queries read the most entries first
        done = 0
        for _, tag_id in todo:
            if self.stop.is_set() or self.state.closed:
                break
            points = self.compact_tag(tag_id)
            if points is None:
                continue
            done += 1
            if pace and self.config.compaction_rate > 0:
                self.stop.wait(points / self.config.compaction_rate)
        return done

    def compact_tag(self, tag_id: int) -> int | None:
        """Merge one tag's blocks; the points rewritten, or None if the round was abandoned."""
        work = self._snapshot(tag_id)
        if work is None:
            return None
        bodies = self._merge(work)
        if bodies is None:
            return None
        if not self._publish(work, bodies):
            self.state.counters["compaction_conflicts"] += 1
            return None
        return sum(int(b[1].shape[0]) for b in bodies)

    def _merge(self, work: _Work) -> list[tuple[bytes, np.ndarray, Summary]] | None:
        """Resolve the snapshot as a query does and encode it (no lock held)."""
        tag_id = work.tag_id
        snap = TagSnapshot(work.blocks, *_bounds(work.blocks), [], work.tombs, work.keep_first)
        try:
            pts = run_query(snap, self.reader, self.store, -TS_LIMIT, TS_LIMIT, None)
        except StorageError as exc:  # a damaged block: never rewrite around it
            log.warning("compaction of tag %d skipped: %s", tag_id, exc)
            return None
        ts, vals, qual = pts.timestamps, pts.values, pts.qualities
        per = max(1, min(self.config.block_points, (self.store.max_body - 256) // 18))
        segments: list[Columns] = [
            (ts[lo : lo + per], vals[lo : lo + per], qual[lo : lo + per])
            for lo in range(0, ts.shape[0], per)
        ]
        big = ts.shape[0] >= self.config.seal_pool_min_points
        encoded = encode_many(self.procs if big else None, segments, self.config.zstd_level)
        pairs = zip(segments, encoded, strict=True)
        return [(body, seg[0], summary) for seg, (body, summary) in pairs]

    def _snapshot(self, tag_id: int) -> _Work | None:
        # Under the seal lock every block the store appended is published: the
        # snapshot holds exactly the tag's entries below ``next_seq``.
        with self.seal_lock, self.state.lock:
            t = self.state.tags.get(tag_id)
            if t is None or self.state.closed:
                return None
            return _Work(
                tag_id, self.store.next_seq, list(t.blocks), list(t.tombstones), t.policy == "first"
            )

    def _publish(self, work: _Work, bodies: list[tuple[bytes, np.ndarray, Summary]]) -> bool:
        """Append the merged blocks and the retire record, then swap the tag's lists.

        Only newer entries overlapping the merged points in time conflict: a newer
        block there would lose to them, a newer delete would not mask them.
        """
        state, store = self.state, self.store
        old = work.blocks + work.tombs
        max_lsn = max((e.max_lsn for e in old), default=0)
        with self.seal_lock:
            with state.lock:
                t = state.tags.get(work.tag_id)
                if t is None or state.closed:
                    return False
                newer = [b for b in t.blocks if b.seq >= work.seq]
                newer_tombs = [x for x in t.tombstones if x.seq >= work.seq]
                same = [b for b in t.blocks if b.seq < work.seq] == work.blocks and [
                    x for x in t.tombstones if x.seq < work.seq
                ] == work.tombs
            lo = min((int(ts[0]) for _, ts, _ in bodies), default=TS_LIMIT)
            hi = max((int(ts[-1]) for _, ts, _ in bodies), default=-TS_LIMIT)
            if not same or any(e.first_ts <= hi and e.last_ts >= lo for e in newer + newer_tombs):
                return False
            merged = []
            flags = BLOCK_SORTED | BLOCK_MERGED
            for body, ts, summary in bodies:
                first, last, n = int(ts[0]), int(ts[-1]), int(ts.shape[0])
                e = store.append(
                    work.tag_id, CODEC_ZSTD_V1, flags, body, first, last, n, max_lsn, work.seq
                )
                store.index.summaries.put(e, summary)
                merged.append(e)
            store.sync()  # the merged blocks are durable before anything is superseded
            store.append_retire(work.tag_id, work.seq, max_lsn)
            store.sync()
            store.commit_index()
            store.note_superseded(old)
            store._index_call(store.index.forget_summaries, work.blocks)
            with state.lock:
                t.replace_blocks(newer + merged, newer_tombs)
                state.totals.add(work.blocks, -1)
                state.totals.add(merged)
                state.last.forget(work.tag_id)
                state.counters["compactions"] += 1
                state.counters["blocks_compacted"] += len(old)
                state.counters["blocks_merged"] += len(merged)
        return True


def _bounds(blocks: list[BlockEntry]) -> tuple[np.ndarray, np.ndarray]:
    n = len(blocks)
    firsts = np.fromiter((b.first_ts for b in blocks), np.int64, n)
    return firsts, np.fromiter((b.last_ts for b in blocks), np.int64, n)
