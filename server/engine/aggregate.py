"""Aggregates of one tag over time buckets, and the plot-mode reduction.

Pure numpy on a tag's sorted columns (see ``interpolate`` for the inputs, the
quality rule ``is_good`` and how NaN values and ``good_only`` drop points).
Everything is columnar: the cost is a few streaming passes over the points
plus work per bucket, never a Python step per point or per bucket.

Buckets
    ``bucket_edges(start, end, interval, origin)`` gives the bucket starts
    ``origin + k * interval`` (any integer k, floor division, so correct for
    negative, pre-1970 times) from the one containing ``start`` to the one
    containing ``end - 1``. With ``origin = 0`` buckets are epoch-aligned like
    InfluxDB's ``GROUP BY time``: 5-minute buckets start at :00, :05, ...
    whatever ``start`` is. The first start may therefore be before ``start``
    (it is reported aligned, as is), but every aggregate only sees the clipped
    bucket ``[max(b, start), min(b + interval, end))``. A point exactly on a
    bucket start belongs to that bucket. ``end <= start`` gives no buckets.
    More than ``MAX_BUCKETS`` buckets, ``interval <= 0``, or bucket times
    outside int64 (``end`` minus the first bucket start must be below 2**63)
    raise ValueError.

Point aggregates, over the valid points in each clipped bucket (points
outside ``[start, end)`` are ignored): ``count`` (int64), ``min``, ``max``,
``sum``, ``avg`` (sum / count), ``first`` and ``last`` (values of the oldest and
newest point). An empty bucket has count 0 and NaN for all others (sum too).

Time-weighted averages: the integral of a signal ``f`` over the part ``D`` of
the clipped bucket where ``f`` is defined, divided by the length of ``D``;
NaN when ``D`` is empty. So, unlike ``avg``, a bucket with no points still
gets a value when the signal is known across it. The known points are the
valid points in ``[start, end)`` plus two neighbours: before, the last valid
point in the arrays older than ``start``, else ``prev``; after, the first valid
point in the arrays at or after ``end``, else ``next_``. The caller passes
``prev``/``next_`` already filtered for quality (``good_only`` does not look at
them); a NaN value counts as absent. ``prev`` must be older than ``start`` and
``next_`` not older than ``end``.

- ``twa_step``: ``f`` is sample-and-hold, each value holding until the next
  point; the last value holds until ``end`` (``next_`` is not needed: a later
  point cannot change a value that holds up to ``end``). Before the first
  known point ``f`` is undefined: with no ``prev``, the time before the first
  point is left out of the weighting (and buckets entirely before it are NaN).
- ``twa_linear``: ``f`` is the straight line between consecutive known points
  (trapezoids), interpolated at bucket edges. It is defined only between the
  first and the last known point: time before the first or after the last
  (no neighbour on one side) is left out, so a lone point with no ``prev`` or
  ``next_`` gives NaN everywhere.

Plot mode: ``plot(ts, v, q, start, end, intervals)`` cuts ``[start, end)`` into
``intervals`` columns at ``start + floor(k * (end - start) / intervals)`` and
keeps, per column, its first, last, min and max point (the first one on ties);
it returns their indices into ``ts``, sorted and unique, so a column holds at
most 4 and a column with one point gives it once. NaN and, with ``good_only``,
non-Good points are never chosen.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .interpolate import (
    BoolArray,
    Point,
    check_point,
    columns,
    interpolate,
    is_good,
    udiff,
    valid_mask,
)
from .points import GOOD_QUALITY, Float64Array, Int64Array, UInt8Array

__all__ = [
    "AGGREGATES",
    "MAX_BUCKETS",
    "Buckets",
    "bucket_aggregate",
    "bucket_edges",
    "interpolate",
    "is_good",
    "plot",
    "regular_times",
]

AGGREGATES = ("count", "min", "max", "sum", "avg", "first", "last", "twa_step", "twa_linear")
MAX_BUCKETS = 10_000_000
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
# Points per chunk of the fused reductions: 2 MB of float64, small enough that
# the second and later passes over a chunk hit the CPU cache, large enough
# that numpy's per-call overhead stays negligible.
_CHUNK = 1 << 18
_PIECE = 64  # plot: the exact argmin/argmax is searched among this many points
_IDENTITY: dict[np.ufunc, float] = {np.add: 0.0, np.minimum: np.inf, np.maximum: -np.inf}
_REDUCER: dict[str, np.ufunc] = {"min": np.minimum, "max": np.maximum, "sum": np.add, "avg": np.add}


@dataclass
class Buckets:
    """Result of ``bucket_aggregate``: aligned bucket starts and one array per aggregate."""

    start: Int64Array
    values: dict[str, Float64Array | Int64Array]


def _int64(x: int, what: str) -> int:
    i = operator.index(x)
    if not _I64_MIN <= i <= _I64_MAX:
        raise ValueError(f"{what} is outside the int64 range")
    return i


def _count(start: int, end: int, interval: int, first: int) -> int:
    """Number of steps of ``interval`` from ``first`` that start before ``end``."""
    if operator.index(interval) <= 0:
        raise ValueError("interval must be > 0")
    if end <= start:
        return 0
    if end - first > _I64_MAX:
        raise ValueError("time range too large: bucket times would overflow int64")
    n = -((first - end) // interval)  # ceil((end - first) / interval)
    if n > MAX_BUCKETS:
        raise ValueError(f"{n} buckets requested, the limit is {MAX_BUCKETS}")
    return n


def bucket_edges(start: int, end: int, interval: int, origin: int = 0) -> Int64Array:
    """Aligned bucket starts ``origin + k * interval`` covering ``[start, end)``."""
    start, end = _int64(start, "start"), _int64(end, "end")
    origin = operator.index(origin)
    if operator.index(interval) <= 0:
        raise ValueError("interval must be > 0")
    first = origin + (start - origin) // interval * interval  # Python ints: exact floor
    if end > start and first < _I64_MIN:
        raise ValueError("interval too large: the aligned first bucket start is before int64")
    n = _count(start, end, interval, first)
    return first + np.arange(n, dtype=np.int64) * np.int64(interval if n > 1 else 0)


def regular_times(start: int, end: int, interval: int) -> Int64Array:
    """``start, start + interval, ...`` below ``end`` (at most ``MAX_BUCKETS`` times)."""
    start, end = _int64(start, "start"), _int64(end, "end")
    n = _count(start, end, interval, start)
    return start + np.arange(n, dtype=np.int64) * np.int64(interval if n > 1 else 0)


def _reduce(
    n: int, seg: Int64Array, ufuncs: Sequence[np.ufunc], chunk: Callable[[int, int], Float64Array]
) -> list[Float64Array]:
    """Reduce ``chunk``'s values over the segments ``[seg[i], seg[i+1])`` (the last to n).

    ``seg`` is sorted with ``seg[0] == 0`` and no empty segment. The points are
    processed in cache-sized chunks, all ufuncs on one chunk before the next,
    so main memory is read once however many reductions are asked for; a
    segment cut by a chunk boundary combines its two partial results.
    """
    out = [np.full(seg.shape[0], _IDENTITY[u]) for u in ufuncs]
    for c0 in range(0, n, _CHUNK):
        c1 = min(c0 + _CHUNK, n)
        k0 = int(np.searchsorted(seg, c0, "right")) - 1
        k1 = int(np.searchsorted(seg, c1, "left"))
        offs = seg[k0:k1] - c0
        offs[0] = 0
        x = chunk(c0, c1)
        for u, acc in zip(ufuncs, out, strict=True):
            part = acc[k0:k1]
            u(part, u.reduceat(x, offs), out=part)
    return out


def _neighbour(
    ts: Int64Array, v: Float64Array, q: UInt8Array, i: int, step: int, good_only: bool
) -> Point | None:
    """The nearest valid point from index ``i`` walking by ``step`` (-1 back, +1 ahead).

    Windows grow 4x, so a long run of invalid points costs O(log n) numpy calls.
    """
    n, w = ts.shape[0], 64
    while 0 <= i < n:
        lo, hi = (max(0, i - w + 1), i + 1) if step < 0 else (i, min(n, i + w))
        ok: BoolArray = ~np.isnan(v[lo:hi])
        if good_only:
            ok &= is_good(q[lo:hi])
        hits = np.flatnonzero(ok)
        if hits.shape[0]:
            k = lo + int(hits[-1] if step < 0 else hits[0])
            return int(ts[k]), float(v[k])
        i, w = (lo - 1, w * 4) if step < 0 else (hi, w * 4)
    return None


class _Series:
    """The valid points of ``[start, end)`` bucketed by the clipped edges ``b``."""

    def __init__(self, t: Int64Array, v: Float64Array, b: Int64Array) -> None:
        self.t, self.v, self.b = t, v, b
        self.n = t.shape[0]
        self.idx = np.searchsorted(t, b)  # idx[k]: first point of bucket k
        self.counts = np.diff(self.idx)
        self.ne = np.flatnonzero(self.counts)  # non-empty buckets
        self.seg = self.idx[self.ne]  # first point of each non-empty bucket
        self.lastp = self.idx[self.ne + 1] - 1  # last point of each non-empty bucket

    def full(self, nonempty: Float64Array) -> Float64Array:
        """Per-bucket array from per-non-empty-bucket values, NaN for empty buckets."""
        out = np.full(self.counts.shape[0], np.nan)
        out[self.ne] = nonempty
        return out

    def weighted(self, last_dt: Int64Array, pair: bool) -> Float64Array:
        """Per non-empty bucket: sum of ``w_i * dt_i`` with ``dt_i = t[i+1] - t[i]``.

        ``w_i`` is ``v[i]`` (step) or ``v[i] + v[i+1]`` (``pair``, twice the
        trapezoid height). The last point of a bucket uses ``last_dt`` instead,
        so no term crosses a bucket edge. Built chunk by chunk in reused
        buffers: the per-point products never exist at full size.
        """
        t, v, n, lastp = self.t, self.v, self.n, self.lastp
        dt, w = np.empty(min(n, _CHUNK)), np.empty(min(n, _CHUNK))

        def chunk(c0: int, c1: int) -> Float64Array:
            size, m = c1 - c0, min(c1, n - 1) - c0  # m: points with a successor
            d, x = dt[:size], w[:size]
            # int64 subtraction (exact), stored as float64 by the ufunc
            np.subtract(t[c0 + 1 : c0 + 1 + m], t[c0 : c0 + m], out=d[:m], casting="unsafe")
            r0, r1 = np.searchsorted(lastp, (c0, c1))
            d[lastp[r0:r1] - c0] = last_dt[r0:r1]
            if pair:
                np.add(v[c0 : c0 + m], v[c0 + 1 : c0 + 1 + m], out=x[:m])
                x[m:] = v[c0 + m : c1]
                x *= d
            else:
                np.multiply(v[c0:c1], d, out=x)
            return x

        return _reduce(n, self.seg, (np.add,), chunk)[0]


def _twa_step(s: _Series, before: Point | None) -> tuple[Float64Array, Float64Array]:
    """(twa_step per bucket, per-non-empty-bucket detector for NaN values)."""
    a, b, first = s.b[:-1], s.b[1:], s.idx[:-1]
    inner = s.weighted(b[s.ne] - s.t[s.lastp], pair=False) if s.n else np.zeros(0)
    # Before its first point a bucket holds the value of the previous point (in
    # an earlier bucket, or ``before``); the last value then runs to the bucket end.
    t_first = b.copy()
    t_first[s.ne] = s.t[s.seg]
    has_lead = first > 0
    lead_v = s.v[np.maximum(first - 1, 0)] if s.n else np.zeros(a.shape[0])
    if before is not None:
        lead_v = np.where(has_lead, lead_v, before[1])
        has_lead[:] = True
    lead = np.where(has_lead, lead_v * (t_first - a), 0.0)
    integral = lead
    integral[s.ne] += inner
    weight = np.where(has_lead, b - a, b - t_first).astype(np.float64)
    return _ratio(integral, weight), inner


def _edge_values(
    s: _Series, before: Point | None, after: Point | None
) -> tuple[Float64Array, BoolArray]:
    """The linear signal at every bucket edge, and where it is defined."""
    t, v, n, e = s.t, s.v, s.n, s.b
    j = s.idx  # first point at or after each edge
    big = np.iinfo(np.int64).max
    if n:
        t1, v1 = t[np.minimum(j, n - 1)], v[np.minimum(j, n - 1)]
        t0, v0 = t[np.maximum(j - 1, 0)], v[np.maximum(j - 1, 0)]
    else:
        t0 = t1 = np.zeros(e.shape[0], np.int64)
        v0 = v1 = np.zeros(e.shape[0])
    has0, has1 = j > 0, j < n
    if before is not None:
        t0, v0 = np.where(has0, t0, before[0]), np.where(has0, v0, before[1])
        has0 = np.ones_like(has0)
    if after is not None:
        t1, v1 = np.where(has1, t1, after[0]), np.where(has1, v1, after[1])
        has1 = np.ones_like(has1)
    exact = has1 & (t1 == e)
    ok = has0 & has1
    t0, t1 = np.where(ok, t0, 0), np.where(ok, t1, big)  # keep udiff's b >= a
    frac = udiff(t0, np.where(ok, e, 0)).astype(np.float64) / udiff(t0, t1).astype(np.float64)
    f = np.where(exact, v1, v0 + (v1 - v0) * frac)
    return np.where(ok | exact, f, 0.0), ok | exact


def _twa_linear(
    s: _Series, before: Point | None, after: Point | None
) -> tuple[Float64Array, Float64Array]:
    """(twa_linear per bucket, per-non-empty-bucket detector for NaN values)."""
    a, b, ne = s.b[:-1], s.b[1:], s.ne
    f, known = _edge_values(s, before, after)
    fa, fb, ka, kb = f[:-1], f[1:], known[:-1], known[1:]
    inner = s.weighted(np.zeros(ne.shape[0], np.int64), pair=True) if s.n else np.zeros(0)
    # Non-empty bucket: lead trapezoid from its start to the first point (if the
    # signal is known at the start), the inner trapezoids, the trail trapezoid
    # from the last point to the bucket end (if known there).
    tf, tl = s.t[s.seg], s.t[s.lastp]
    vf, vl = s.v[s.seg], s.v[s.lastp]
    ka_n, kb_n = ka[ne], kb[ne]
    twice = np.where(ka & kb, (fa + fb) * (b - a), 0.0)  # empty buckets: one trapezoid
    twice[ne] = (
        inner
        + np.where(ka_n, (fa[ne] + vf) * (tf - a[ne]), 0.0)
        + np.where(kb_n, (vl + fb[ne]) * (b[ne] - tl), 0.0)
    )
    weight = np.where(ka & kb, b - a, 0)
    weight[ne] = (tl - tf) + np.where(ka_n, tf - a[ne], 0) + np.where(kb_n, b[ne] - tl, 0)
    return _ratio(twice / 2.0, weight.astype(np.float64)), inner


def _ratio(num: Float64Array, den: Float64Array) -> Float64Array:
    out = np.full(num.shape[0], np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _compute(
    s: _Series, aggs: Sequence[str], before: Point | None, after: Point | None
) -> tuple[dict[str, Float64Array | Int64Array], list[Float64Array]]:
    """The aggregates, and per-bucket reductions that are NaN if any value is NaN."""
    red = list(dict.fromkeys(_REDUCER[a] for a in aggs if a in _REDUCER))
    got = dict(zip(red, _reduce(s.n, s.seg, red, lambda c0, c1: s.v[c0:c1]), strict=True))
    out: dict[str, Float64Array | Int64Array] = {}
    for name in aggs:
        if name == "count":
            out[name] = s.counts.astype(np.int64)
        elif name in ("min", "max", "sum"):
            out[name] = s.full(got[_REDUCER[name]])
        elif name == "avg":
            out[name] = s.full(got[np.add] / s.counts[s.ne])
        elif name in ("first", "last"):
            out[name] = s.full(s.v[s.seg if name == "first" else s.lastp])
    detectors = list(got.values())
    if "twa_step" in aggs:
        out["twa_step"], det = _twa_step(s, before)
        detectors.append(det)
    if "twa_linear" in aggs:
        out["twa_linear"], det = _twa_linear(s, before, after)
        detectors.append(det)
    return out, detectors


def bucket_aggregate(
    ts: npt.ArrayLike,
    v: npt.ArrayLike,
    q: npt.ArrayLike,
    start: int,
    end: int,
    interval: int,
    aggregates: Sequence[str],
    *,
    origin: int = 0,
    good_only: bool = False,
    prev: Point | None = None,
    next_: Point | None = None,
) -> Buckets:
    """Aggregates per aligned bucket of ``[start, end)``; see the module docstring."""
    aggs = list(dict.fromkeys(aggregates))
    unknown = [a for a in aggs if a not in AGGREGATES]
    if unknown or isinstance(aggregates, str):
        raise ValueError(f"unknown aggregates {unknown or aggregates!r}; use {AGGREGATES}")
    starts = bucket_edges(start, end, interval, origin)
    t, vals, qual = columns(ts, v, q)
    before, after = check_point(prev, "prev"), check_point(next_, "next_")
    if before is not None and before[0] >= start:
        raise ValueError("prev must be older than start")
    if after is not None and after[0] < end:
        raise ValueError("next_ must not be older than end")
    nb = starts.shape[0]
    if nb == 0:
        return Buckets(
            starts, {a: np.zeros(0, np.int64) if a == "count" else np.zeros(0) for a in aggs}
        )
    edges = np.empty(nb + 1, np.int64)
    edges[:nb], edges[0], edges[nb] = starts, start, end
    lo, hi = (int(i) for i in np.searchsorted(t, (start, end)))
    if any(a.startswith("twa") for a in aggs):
        # The nearer of a valid point in the arrays and the caller's prev/next_.
        near = _neighbour(t, vals, qual, lo - 1, -1, good_only)
        if near is not None and (before is None or near[0] >= before[0]):
            before = near
        near = _neighbour(t, vals, qual, hi, 1, good_only)
        if near is not None and (after is None or near[0] <= after[0]):
            after = near
    tv, vv, qv = t[lo:hi], vals[lo:hi], qual[lo:hi]
    # Fast path: compute as if every point were valid. Bad quality is cheap to
    # rule out (q.min()), NaN values are not, so they are caught afterwards by
    # reductions that NaN-propagate from every point (min, max, sum, the twa
    # integrals): only if one shows a NaN are NaNs dropped and all recomputed.
    checked = good_only and qv.shape[0] > 0 and int(qv.min()) < GOOD_QUALITY
    if checked:
        keep = valid_mask(vv, qv, good_only)
        assert keep is not None
        tv, vv = tv[keep], vv[keep]
    out, detectors = _compute(_Series(tv, vv, edges), aggs, before, after)
    if not checked:
        suspect = any(np.isnan(d).any() for d in detectors) if detectors else None
        if suspect is None:
            suspect = bool(np.isnan(vv).any())
        if suspect:
            keep = ~np.isnan(vv)
            out, _ = _compute(_Series(tv[keep], vv[keep], edges), aggs, before, after)
    return Buckets(starts, out)


def _arg_extreme(v: Float64Array, seg: Int64Array) -> tuple[Int64Array, Int64Array]:
    """Index of the first min and of the first max of each segment (v without NaN).

    Two levels: min/max of pieces of at most ``_PIECE`` points (segments cut
    into pieces, in one fused pass), the first piece reaching its segment's
    extreme, then the first point in that piece equal to it.
    """
    n = v.shape[0]
    pieces = np.unique(np.concatenate((seg, np.arange(0, n, _PIECE, dtype=np.int64))))
    pmin, pmax = _reduce(n, pieces, (np.minimum, np.maximum), lambda c0, c1: v[c0:c1])
    first_piece = np.searchsorted(pieces, seg)
    piece_seg = np.searchsorted(seg, pieces, "right") - 1
    piece_end = np.append(pieces[1:], n)
    res = []
    for u, pext in ((np.minimum, pmin), (np.maximum, pmax)):
        sext = u.reduceat(pext, first_piece)
        hit = np.flatnonzero(pext == sext[piece_seg])
        p = hit[np.searchsorted(piece_seg[hit], np.arange(seg.shape[0]))]
        win = pieces[p][:, None] + np.arange(_PIECE)
        inside = win < piece_end[p][:, None]
        eq = (v[np.minimum(win, n - 1)] == sext[:, None]) & inside
        res.append(pieces[p] + eq.argmax(axis=1))
    return res[0], res[1]


def plot(
    ts: npt.ArrayLike,
    v: npt.ArrayLike,
    q: npt.ArrayLike,
    start: int,
    end: int,
    intervals: int,
    *,
    good_only: bool = False,
) -> Int64Array:
    """Sorted unique indices of the first, last, min and max point of each column."""
    start, end = _int64(start, "start"), _int64(end, "end")
    intervals = operator.index(intervals)
    if not 1 <= intervals <= MAX_BUCKETS:
        raise ValueError(f"intervals must be between 1 and {MAX_BUCKETS}")
    t, vals, qual = columns(ts, v, q)
    if end <= start:
        return np.zeros(0, np.int64)
    if end - start > _I64_MAX:
        raise ValueError("time range too large")
    lo, hi = (int(i) for i in np.searchsorted(t, (start, end)))
    tv, vv = t[lo:hi], vals[lo:hi]
    keep = valid_mask(vv, qual[lo:hi], good_only)
    where = None if keep is None else np.flatnonzero(keep)
    if where is not None:
        tv, vv = tv[where], vv[where]
    # Column edges start + floor(k * span / intervals), exact without overflow:
    # k * span = k * (quot * intervals + rem).
    quot, rem = divmod(end - start, intervals)
    k = np.arange(intervals + 1, dtype=np.int64)
    s = _Series(tv, vv, start + k * quot + (k * rem) // intervals)
    if s.n == 0:
        return np.zeros(0, np.int64)
    amin, amax = _arg_extreme(vv, s.seg)
    idx = np.unique(np.concatenate((s.seg, s.lastp, amin, amax)))
    return (idx if where is None else where[idx]) + lo
