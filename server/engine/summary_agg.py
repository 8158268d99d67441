"""Bucket aggregates answered from block summaries wherever they give the decoded answer.

A block is *summarised* (not decoded) when all of these hold:

- the aggregates are among count, min, max, sum, avg, first, last (the
  time-weighted averages need the points and always decode);
- no other block, no tombstone that masks it and no point in memory of the tag
  lies in the block's time range, so no later write, delete or duplicate
  policy can change which of its points count;
- the whole block lies in ``[start, end)`` and each of its cells (see
  ``summary``) lies in one bucket;
- with ``good_only``, every point of the block is Good (else it decodes).

Every other block, and memory, goes through the ordinary query path (one
``run_query`` over the tag's snapshot without the summarised blocks: as they
overlap nothing, the other points come out exactly as in a full query).
Then, per bucket, the decoded points and the cells are merged in time order:
count, min, max, first and last are exactly those of the decoded path; sum is
the sum of the decoded points' segment plus each cell's sum, added in time
order. A summarised cell's sum is the same ``np.add.reduceat`` over the same
values whether it was stored at seal or recomputed by decoding (the switch
``ENABLED = False``, or a missing or damaged summary), so the answer does not
depend on whether summaries were used; it differs from a full-bucket pairwise
sum only in rounding (floating-point addition is not associative).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from .aggregate import Buckets, bucket_edges
from .container import BlockEntry
from .points import Float64Array, Int64Array, Points, ReadStats
from .query import ReadPath, run_query
from .reductions import Segments
from .state import TagSnapshot
from .summary import CELL, MAX_CELLS, Summary
from .summary_heal import decode_summaries

SUMMARISABLE = frozenset(("count", "min", "max", "sum", "avg", "first", "last"))
ENABLED = True  # False: every block decodes (the same-run baseline of bench/aggregate.py)
STORED = True  # False: summaries are recomputed by decoding, as when one is missing (tests)
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
WORDS = CELL.itemsize // 8
MIN_BLOCKS = 2  # fewer clean blocks than this in range: decode (tests/test_aggregate_fast.py)
MIN_SHARE = 0.5  # of the range's block points summarised, else decode all (see _pays)


@contextmanager
def mode(enabled: bool = True, stored: bool = True) -> Iterator[None]:
    """Set ``ENABLED`` and ``STORED`` for a block (benchmarks, tests comparing the paths)."""
    global ENABLED, STORED
    saved = ENABLED, STORED
    ENABLED, STORED = enabled, stored
    try:
        yield
    finally:
        ENABLED, STORED = saved


def clean_blocks(snap: TagSnapshot, start: int, end: int) -> Int64Array:
    """Indices (in time order) of the blocks inside ``[start, end)`` that nothing overlaps."""
    f, last = snap.firsts, snap.lasts
    if not f.shape[0]:
        return np.zeros(0, np.int64)
    order = np.argsort(f, kind="stable")
    fs, ls = f[order], last[order]
    prev_top = np.concatenate(([_I64_MIN], np.maximum.accumulate(ls)[:-1]))
    next_first = np.concatenate((fs[1:], [_I64_MAX]))
    cand = order[(fs > prev_top) & (ls < next_first) & (fs >= start) & (ls < end)]
    if cand.shape[0] and snap.tombstones:
        seqs = np.array([snap.blocks[i].seq for i in cand.tolist()], np.int64)
        hit = np.zeros(cand.shape[0], bool)
        for tb in snap.tombstones:
            hit |= (f[cand] <= tb.last_ts) & (last[cand] >= tb.first_ts) & (seqs < tb.mask_seq)
        cand = cand[~hit]
    for ts, _v, _q in snap.memory:
        if not (cand.shape[0] and ts.shape[0]):
            continue
        cf, cl = f[cand], last[cand]
        if int(ts.max()) < int(cf.min()) or int(ts.min()) > int(cl.max()):
            continue  # the usual case: memory holds newer points than every block
        st = np.sort(ts)
        cand = cand[np.searchsorted(st, cl, "right") == np.searchsorted(st, cf, "left")]
    return cand


def aggregate(
    reads: ReadPath,
    tag_id: int,
    start: int,
    end: int,
    interval: int,
    aggregates: Sequence[str],
    origin: int,
    good_only: bool,
) -> Buckets | None:
    """The buckets, or None when no block can be summarised (the caller decodes all)."""
    aggs = list(dict.fromkeys(aggregates))
    if not ENABLED or not set(aggs) <= SUMMARISABLE:
        return None
    starts = bucket_edges(start, end, interval, origin)
    nb = starts.shape[0]
    snap = reads.snapshot(tag_id)
    if nb == 0 or snap is None:
        return None
    cand = clean_blocks(snap, start, end)
    # A block spanning MAX_CELLS buckets or more has cells wider than a bucket unless
    # its points are sparse: fetching its summary would almost always be wasted.
    cand = cand[snap.lasts[cand] - snap.firsts[cand] < MAX_CELLS * interval]
    if cand.shape[0] < MIN_BLOCKS:
        return None  # a block or two decode faster than summaries are fetched and merged
    edges = np.empty(nb + 1, np.int64)
    edges[:nb], edges[0], edges[nb] = starts, start, end
    stats = ReadStats()
    sums = _summaries(reads, [snap.blocks[i] for i in cand.tolist()], stats)
    use, cells, k = _usable(sums, edges, good_only)
    if not use.any():
        return None
    chosen = cand[use]
    if not _pays(snap, chosen, start, end):
        return None
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
    with np.errstate(over="ignore", invalid="ignore"):  # inf values: IEEE results
        values = _combine(pts, cells, k, edges, aggs)
    stats.add(pts.stats)
    with reads.state.lock:
        reads.state.stats.add(stats)
        reads.state.counters["blocks_summarised"] += int(chosen.shape[0])
    return Buckets(starts, values, stats, int(chosen.shape[0]))


def _pays(snap: TagSnapshot, chosen: Int64Array, start: int, end: int) -> bool:
    """Whether the summarised blocks hold at least ``MIN_SHARE`` of the range's block points.

    Merging cells into decoded buckets costs more per bucket than reducing decoded
    points alone (bench/aggregate.py: 90 days in 5-min buckets, where only blocks
    at hour edges fit, took 99 ms with summaries against 72 ms decoding all), so a
    few summarised blocks among many decoded ones are not worth it.
    """
    counts = np.fromiter((b.count for b in snap.blocks), np.int64, len(snap.blocks))
    inside = (snap.firsts < end) & (snap.lasts >= start)
    return int(counts[chosen].sum()) >= MIN_SHARE * int(counts[inside].sum())


def _summaries(reads: ReadPath, blocks: list[BlockEntry], stats: ReadStats) -> list[Summary | None]:
    """The summary of each block; missing ones recomputed by decoding (and kept)."""
    table = reads.store.index.summaries
    sums: list[Summary | None] = table.get_many(blocks) if STORED else [None] * len(blocks)
    missing = [j for j, s in enumerate(sums) if s is None]
    if missing:
        todo = [blocks[j] for j in missing]
        got = decode_summaries(reads.reader, reads.store, todo)
        stats.blocks_read += len(todo)
        stats.points_from_disk += sum(b.count for b in todo)
        for j, b, s in zip(missing, todo, got, strict=True):
            sums[j] = s
            if s is not None and STORED:
                table.put(b, s)  # a missing summary is healed: written at the next seal
    return sums


def _usable(
    sums: list[Summary | None], edges: Int64Array, good_only: bool
) -> tuple[np.ndarray, np.ndarray, Int64Array]:
    """(block usable mask, cells of the usable blocks in time order, bucket of each cell)."""
    ok = np.array([s is not None and (s.all_good or not good_only) for s in sums], bool)
    # Concatenated as plain int64 words: numpy promotes structured dtypes field by
    # field on every concatenation, which costs more than the rest of a query.
    no_cells = np.zeros(0, np.int64)
    parts = [
        s.words if s is not None and good else no_cells
        for s, good in zip(sums, ok.tolist(), strict=True)
    ]
    lens = np.array([p.shape[0] for p in parts], np.int64) // WORDS
    cells = np.concatenate(parts).view(CELL) if parts else np.zeros(0, CELL)
    k = np.searchsorted(edges, cells["first_t"], "right") - 1
    k_last = np.searchsorted(edges, cells["last_t"], "right") - 1
    nb = edges.shape[0] - 1
    bad = (k != k_last) | (k < 0) | (k_last >= nb)
    owner = np.repeat(np.arange(len(parts)), lens)
    ok &= np.bincount(owner, weights=bad, minlength=len(parts)) == 0
    keep = ok[owner]
    return ok, cells[keep], k[keep]


def _combine(
    pts: Points, cells: np.ndarray, k: Int64Array, edges: Int64Array, aggs: list[str]
) -> dict[str, Float64Array | Int64Array]:
    """Per bucket: the decoded points' aggregates merged with the cells', in time order."""
    nb = edges.shape[0] - 1
    tv, vv = pts.timestamps, pts.values
    valid = ~np.isnan(vv)
    if not valid.all():
        tv, vv = tv[valid], vv[valid]
    s = Segments(tv, vv, edges)
    rmin, rmax, rsum = s.reduce([np.minimum, np.maximum, np.add])
    count = s.counts.astype(np.int64)
    np.add.at(count, k, cells["count"])
    empty = count == 0
    total = np.zeros(nb)  # 0.0 as in reductions.reduce_segments: a lone -0.0 sums to 0.0
    total[s.ne] = rsum
    np.add.at(total, k, cells["sum"])
    total[empty] = np.nan
    out: dict[str, Float64Array | Int64Array] = {}
    for name in aggs:
        if name == "count":
            out[name] = count
        elif name in ("min", "max"):
            r = s.full(rmin if name == "min" else rmax)
            (np.fmin if name == "min" else np.fmax).at(r, k, cells[name])
            out[name] = r
        elif name == "sum":
            out[name] = total
        elif name == "avg":
            avg = np.full(nb, np.nan)
            np.divide(total, count, out=avg, where=~empty)
            out[name] = avg
        else:
            out[name] = _edge_value(s, tv, vv, cells, k, nb, name == "first")
    return out


def _edge_value(
    s: Segments,
    tv: Int64Array,
    vv: Float64Array,
    cells: np.ndarray,
    k: Int64Array,
    nb: int,
    first: bool,
) -> Float64Array:
    """The value of the oldest (``first``) or newest valid point per bucket."""
    pick = s.seg if first else s.lastp
    t = np.full(nb, _I64_MAX if first else _I64_MIN)
    t[s.ne] = tv[pick]
    v = s.full(vv[pick])
    if k.shape[0]:
        uk, fi = np.unique(k, return_index=True)  # k is sorted: cells are in time order
        at = fi if first else np.append(fi[1:], k.shape[0]) - 1
        ct = cells["first_t" if first else "last_t"][at]
        win = ct < t[uk] if first else ct > t[uk]
        v[uk[win]] = cells["first" if first else "last"][at][win]
    return v
