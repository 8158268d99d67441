"""Plot mode answered from block summaries, so a year draws as fast as an hour.

A plot column keeps its first, last, min and max point (the first one on
ties, NaN and, under ``good_only``, non-Good points never chosen). Each
summary cell (see ``summary``) holds exactly those four points of its own
points. So for a column the candidates are: the four points of each cell that
lies wholly inside it, plus every point of the blocks that cannot be
summarised (decoded by the ordinary query path). The column's first point is
the oldest candidate, its last the newest, and its first minimum is the oldest
candidate equal to the smallest candidate value (a cell's ``min_t`` is the
first point of the cell equal to its minimum, the test the decoded path uses).
Running the one column reduction (:func:`plot_columns`) over the candidates in
time order therefore picks the same points as running it over every point.

Which blocks are summarised is the rule of ``summary_agg``: nothing else (no
block, tombstone or point in memory) overlaps the block, it lies inside
``[start, end)``, every cell lies inside one column, and under ``good_only``
every point of it is Good.

Snapped columns
    Columns are ``start + floor(k * span / intervals)`` wide; a column edge
    cuts cells at random, and every block holding a cut cell would decode
    (a third of a year of 1 s data in 1,370 columns: 1 h cells, 6.4 h
    columns). So when a column is at least ``SNAP_CELLS`` grid steps wide,
    the inner edges are floored to a multiple of the largest such step of
    ``summary.GRIDS`` (the first and last edge stay ``start`` and ``end``).
    The steps divide one another, so no cell of that step or a finer one
    straddles a snapped edge. The snapping depends on ``(start, end,
    intervals)`` only, never on which blocks have summaries, so the answer is
    the same whether summaries are used, recomputed or switched off.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from .interpolate import valid
from .points import GOOD_QUALITY, Float64Array, Int64Array, Points, ReadStats, UInt8Array
from .query import ReadPath, run_query
from .reductions import Segments, arg_extremes, sorted_unique
from .state import TagSnapshot
from .summary import CELL, GRIDS
from .summary_agg import WORDS, _summaries, clean_blocks

SNAP_CELLS = 4  # a column this many grid steps wide or more has its edges snapped
ENABLED = True  # False: every block decodes (tests and bench/console.py's baseline)
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_REPS = ("first", "last", "min", "max")  # the four points of a cell


@contextmanager
def mode(enabled: bool = True) -> Iterator[None]:
    """Set ``ENABLED`` for a block (benchmarks, tests comparing the paths)."""
    global ENABLED
    saved, ENABLED = ENABLED, enabled
    try:
        yield
    finally:
        ENABLED = saved


def column_edges(start: int, end: int, intervals: int) -> Int64Array:
    """The ``intervals + 1`` column edges of ``[start, end)``, snapped (module doc)."""
    # start + floor(k * span / intervals), exact without overflow:
    # k * span = k * (quot * intervals + rem).
    quot, rem = divmod(end - start, intervals)
    k = np.arange(intervals + 1, dtype=np.int64)
    edges = start + k * quot + (k * rem) // intervals
    steps = [g for g in GRIDS[:-1] if SNAP_CELLS * g <= quot]
    if steps and intervals > 1:
        g = steps[-1]
        # Floor moves an edge back by less than g; edges quot >= 4 g apart stay
        # strictly increasing and strictly inside (start, end).
        edges[1:-1] = (edges[1:-1] // g) * g
    return edges


def plot_columns(
    t: Int64Array, v: Float64Array, q: UInt8Array, edges: Int64Array, good_only: bool = False
) -> Int64Array:
    """Sorted unique indices of the first, last, min and max valid point per column."""
    lo, hi = (int(i) for i in np.searchsorted(t, (edges[0], edges[-1])))
    tv, vv, qv = t[lo:hi], v[lo:hi], q[lo:hi]
    # Bad quality is ruled out up front by q.min(); a NaN value shows up
    # afterwards in the piece minima of arg_extremes.
    keep = None
    if good_only and qv.shape[0] and int(qv.min()) < GOOD_QUALITY:
        keep = np.flatnonzero(valid(vv, qv, True))
    while True:
        s = Segments(tv, vv, edges) if keep is None else Segments(tv[keep], vv[keep], edges)
        if s.n == 0:
            return np.zeros(0, np.int64)
        ext = arg_extremes(s.v, s.seg)
        if ext is not None:
            break
        keep = np.flatnonzero(valid(vv, qv, good_only))
    idx = sorted_unique(np.concatenate((s.seg, s.lastp, *ext)))
    return (idx if keep is None else keep[idx]) + lo


def checked(start: int, end: int, intervals: int) -> bool:
    """Whether the arguments are plain and in range (else the caller's checks answer)."""
    try:
        start, end, intervals = (operator.index(x) for x in (start, end, intervals))
    except TypeError:
        return False
    return (
        not any(isinstance(x, bool) for x in (start, end, intervals))
        and _I64_MIN <= start < end <= _I64_MAX
        and end - start <= _I64_MAX
        and 1 <= intervals <= 100_000
    )


def plot(
    reads: ReadPath, tag_id: int, start: int, end: int, intervals: int, good_only: bool
) -> Points:
    """The plot points of ``[start, end)`` in snapped columns (arguments :func:`checked`)."""
    start, end, intervals = int(start), int(end), int(intervals)
    edges = column_edges(start, end, intervals)
    got = _from_summaries(reads, tag_id, start, end, edges, good_only) if ENABLED else None
    if got is not None:
        return got
    pts = reads.query(tag_id, start, end, good_only=good_only)
    idx = plot_columns(pts.timestamps, pts.values, pts.qualities, edges)
    return Points(pts.timestamps[idx], pts.values[idx], pts.qualities[idx], pts.stats)


def _from_summaries(
    reads: ReadPath, tag_id: int, start: int, end: int, edges: Int64Array, good_only: bool
) -> Points | None:
    """The plot from cells and decoded points; None when no block can be summarised."""
    snap = reads.snapshot(tag_id)
    if snap is None:
        return None
    cand = clean_blocks(snap, start, end)
    if not cand.shape[0]:
        return None
    stats = ReadStats()
    sums = _summaries(reads, [snap.blocks[i] for i in cand.tolist()], stats)
    ok = np.array([s is not None and (s.all_good or not good_only) for s in sums], bool)
    no_cells = np.zeros(0, np.int64)
    parts = [
        s.words if s is not None and good else no_cells
        for s, good in zip(sums, ok.tolist(), strict=True)
    ]
    lens = np.array([p.shape[0] for p in parts], np.int64) // WORDS
    cells = np.concatenate(parts).view(CELL)
    col = np.searchsorted(edges, cells["first_t"], "right")
    cut = col != np.searchsorted(edges, cells["last_t"], "right")
    owner = np.repeat(np.arange(len(parts)), lens)
    ok &= np.bincount(owner, weights=cut, minlength=len(parts)) == 0
    if not ok.any():
        return None
    cells = cells[ok[owner]]
    chosen = cand[ok]
    keep = np.ones(len(snap.blocks), bool)
    keep[chosen] = False
    rest = TagSnapshot(
        [b for b, kept in zip(snap.blocks, keep.tolist(), strict=True) if kept],
        snap.firsts[keep],
        snap.lasts[keep],
        snap.memory,
        snap.tombstones,
        snap.keep_first,
        snap.memory_spans,
    )
    pts = run_query(rest, reads.reader, reads.store, start, end, None, False, good_only)
    stats.add(pts.stats)
    t, v, q = _merge(pts, cells)
    idx = plot_columns(t, v, q, edges)
    with reads.state.lock:
        reads.state.stats.add(stats)
        reads.state.counters["blocks_summarised"] += int(chosen.shape[0])
    return Points(t[idx], v[idx], q[idx], stats)


def _merge(pts: Points, cells: np.ndarray) -> tuple[Int64Array, Float64Array, UInt8Array]:
    """Decoded points and each cell's four points, in time order, one per time."""
    at = {"first": ("first_t", "first"), "last": ("last_t", "last")}
    at.update(min=("min_t", "min_v"), max=("max_t", "max_v"))
    t = np.concatenate([pts.timestamps, *(cells[at[r][0]] for r in _REPS)])
    v: Float64Array = np.concatenate([pts.values, *(cells[at[r][1]] for r in _REPS)])
    q: UInt8Array = np.concatenate([pts.qualities, *(cells[f"q_{r}"] for r in _REPS)])
    order = np.argsort(t, kind="stable")
    t = t[order]
    # A cell's points may coincide (a one-point cell is all four); they are the
    # same stored point. Decoded points never share a time with a summarised block.
    first = np.concatenate(([True], t[1:] != t[:-1])) if t.shape[0] else np.zeros(0, bool)
    order = order[first]
    return t[first], v[order], q[order]
