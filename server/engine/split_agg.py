"""Large decoded aggregates in two halves at once, split at a bucket edge.

An aggregate that summaries cannot answer decodes every point of its range
(90 days of 1 s data: 7.8 M points, ~60 ms of numpy). Its buckets do not
depend on each other, so the range is cut at the bucket edge nearest the
middle of its block points, and the second half is read and aggregated on a
helper thread while the calling thread does the first: zstd and numpy's large
calls release the GIL, so the halves overlap on two cores.

The halves give exactly the whole answer: each bucket lies in one half and is
reduced over the same points in the same order (``reductions`` cuts its chunks
at segment starts, never at positions relative to the array), and time-weighted
aggregates, which need the points around a bucket, are never split.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import cast

import numpy as np

from .aggregate import Buckets
from .points import Float64Array, Int64Array, ReadStats
from .state import TagSnapshot

Column = Float64Array | Int64Array

SPLIT_MIN_POINTS = 4_000_000
"""Block points from which the halves pay. On the 2-core reference machine, quiet: at 2 M
points 0.86x-0.92x of the whole in two runs and 1.33x in a third, at 4 M 1.05x-1.33x,
at 7.8 M 1.27x-1.54x (bench/aggregate.py, workload 3)."""

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def split_point(snap: TagSnapshot, start: int, end: int, interval: int, origin: int) -> int | None:
    """The bucket edge near the middle of the range's block points, or None: too few."""
    inside = np.flatnonzero((snap.firsts < end) & (snap.lasts >= start))
    if inside.shape[0] < 2:
        return None
    counts = np.fromiter((snap.blocks[i].count for i in inside.tolist()), np.int64)
    total = int(counts.sum())
    if total < SPLIT_MIN_POINTS:
        return None
    order = np.argsort(snap.firsts[inside], kind="stable")
    half = int(np.searchsorted(np.cumsum(counts[order]), total // 2))
    t = int(snap.firsts[inside[order[min(half, order.shape[0] - 1)]]])
    mid = origin - ((origin - t) // interval) * interval  # the first edge at or after t
    return mid if start < mid < end else None


def in_halves(run: Callable[[int, int], Buckets], start: int, mid: int, end: int) -> Buckets:
    """``run(start, mid)`` here and ``run(mid, end)`` on the helper thread, joined."""
    second = _executor().submit(run, mid, end)
    try:
        a = run(start, mid)
    finally:
        wait([second])  # a failure here still lets the second half end before returning
    b = second.result()
    stats = ReadStats()
    stats.add(a.stats)
    stats.add(b.stats)
    # Each aggregate keeps its dtype (count int64, the others float64).
    values = {k: cast(Column, np.concatenate((a.values[k], b.values[k]))) for k in a.values}
    return Buckets(np.concatenate((a.start, b.start)), values, stats)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # One thread for every engine: the halves of concurrent aggregates queue
            # for it, and the callers keep doing their own first halves meanwhile.
            _pool = ThreadPoolExecutor(1, thread_name_prefix="xtsdb-agg-half")
        return _pool
