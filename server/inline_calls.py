"""Which engine calls run on the event loop instead of going through the query pool.

Every engine call used to go through :meth:`ServerContext.run`: the event loop
hands it to a pool thread and takes the answer back, two thread switches and
two GIL hand-offs that cost more than a small call itself (an aggregate of
10 K points takes 0.21 ms in the engine, bench/inline_calls.py). A call whose
cost is known to be small *before* it runs is answered inline instead; the
decision reads only what the engine holds in memory, under its state lock
(held for list copies, never for I/O):

* a ``query`` or bucket ``aggregate`` of one tag: the points it can touch
  (every memory point of the tag, plus the counts of the blocks whose time
  range meets the request) are at most ``max_points``, and every byte of
  those blocks is in the page cache *now*: each block is read once with
  ``preadv(RWF_NOWAIT)``, which fails rather than wait for the disk. So a
  slow or busy disk never stalls the loop; a block evicted between the probe
  and the read (microseconds) is the one way left, and it costs one read.
  Time-weighted aggregates go to the pool (they read the neighbours outside
  the range too), as do several tags at once;
* a ``last`` of at most ``max_tags`` tags whose newest points are all in the
  last-value cache (one dict look-up each; a missing one may read blocks).

The inline work is bounded by ``max_points`` (decoding and reducing 16 K
points takes about 0.3 ms here, ``bench/inline_calls.py``) and by the
probe's copy of at most the blocks holding them; and by the longest hold of
the engine's state lock by a writer, which every engine call waits for
anyway. ``max_points=0`` sends everything to the pool, as before.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from xtsdb.server.engine import Engine
from xtsdb.server.engine.reader import BlockRef

INLINE_MAX_POINTS = 16_384
"""Points a read may touch and still run on the event loop (bench/inline_calls.py)."""
INLINE_MAX_TAGS = 1_000
"""Tags a ``last`` may ask for and still run on the event loop."""
T = TypeVar("T")
_WEIGHTED = "twa"  # aggregates by this prefix read points outside the range


@dataclass(frozen=True)
class Way:
    """Where a call runs: ``inline`` on the loop, or in the pool after ``cold`` is read."""

    inline: bool
    cold: tuple[BlockRef, ...] = ()

    def pooled(self, fn: Callable[[], T]) -> Callable[[], T]:
        """``fn`` for a pool thread, reading first the blocks the probe found out of the
        page cache: a block that only its summary answers is otherwise never read, and
        would keep every later call of the same range off the fast path."""
        if not self.cold:
            return fn

        def run() -> T:
            warm(self.cold)
            return fn()

        return run


def warm(refs: Sequence[BlockRef]) -> None:
    """Read ``refs`` into the page cache (a pool thread: this may wait for the disk)."""
    for ref in refs:
        try:
            fd = os.open(ref.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.pread(fd, ref.length, ref.offset)
        except OSError:  # the engine's own read reports what is wrong
            pass
        finally:
            os.close(fd)


@dataclass
class InlineCalls:
    """The decision, and how often each way was taken (tests, benches)."""

    max_points: int = INLINE_MAX_POINTS
    max_tags: int = INLINE_MAX_TAGS
    inline: int = 0
    pooled: int = 0
    _scratch: bytearray = field(default_factory=bytearray, repr=False)

    def counted(self, way: Way) -> Way:
        if way.inline:
            self.inline += 1
        else:
            self.pooled += 1
        return way

    def read(self, engine: Engine, tag: int, start: int, end: int) -> Way:
        """A read of ``tag`` over ``[start, end)``: inline if small and needing no disk."""
        return self.counted(self._read(engine, tag, start, end))

    def aggregate(
        self, engine: Engine, tags: Sequence[int], start: int, end: int, aggs: Sequence[str]
    ) -> Way:
        """An aggregate: inline for one tag, no time weighting, a small read."""
        if len(tags) != 1 or any(a.startswith(_WEIGHTED) for a in aggs):
            return self.counted(Way(False))
        return self.counted(self._read(engine, tags[0], start, end))

    def last(self, engine: Engine, tags: Sequence[int]) -> Way:
        """``last``: inline if every tag's newest point is cached (or it has none at all)."""
        if len(tags) > self.max_tags or self.max_points <= 0:
            return self.counted(Way(False))
        state = engine._state  # the engine's own lock and cache: nothing is read from disk
        with state.lock:
            if state.closed:  # the engine call raises its error: let it, from the pool
                return self.counted(Way(False))
            cache, known = state.last, state.tags
            small = all(cache.get(t) is not None or t not in known for t in tags)
        return self.counted(Way(small))

    def _read(self, engine: Engine, tag: int, start: int, end: int) -> Way:
        if self.max_points <= 0:
            return Way(False)
        if end <= start:
            return Way(True)  # the engine answers without reading
        try:
            snap = engine._state.snapshot(tag)
        except Exception:  # a closed engine: the call itself says so, from the pool
            return Way(False)
        if snap is None:
            return Way(True)  # a tag never written: nothing to read
        points = sum(int(cols[0].shape[0]) for cols in snap.memory_in(start, end))
        chosen = np.flatnonzero((snap.firsts < end) & (snap.lasts >= start)).tolist()
        points += sum(snap.blocks[i].count for i in chosen)
        if points > self.max_points:
            return Way(False)
        refs = [engine._store.ref(snap.blocks[i]) for i in chosen]
        cold = tuple(r for r in refs if not self._cached(r))
        return Way(not cold, cold)

    def _cached(self, ref: BlockRef) -> bool:
        """Whether the block's body is in the page cache (read without waiting, or not)."""
        if len(self._scratch) < ref.length:
            self._scratch = bytearray(ref.length)
        try:
            fd = os.open(ref.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            view = memoryview(self._scratch)[: ref.length]
            return os.preadv(fd, [view], ref.offset, os.RWF_NOWAIT) == ref.length
        except OSError:  # EAGAIN: not cached; EOPNOTSUPP: cannot tell, so not inline
            return False
        finally:
            os.close(fd)


async def answered(result: T | Awaitable[T]) -> T:
    """A handler's answer, given at once (inline) or awaited (from the pool)."""
    if inspect.isawaitable(result):
        return await result
    return result


CALLS = InlineCalls()
"""The decision of every server of the process (the handlers have no other state)."""
