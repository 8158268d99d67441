"""Aggregates of one tag over time buckets, and the plot-mode reduction.

Pure numpy on a tag's sorted columns ``ts`` (int64 microseconds, strictly
increasing), ``v`` (float64) and ``q`` (uint8 OPC quality). The point rules are
those of ``interpolate``: a point is Good when ``q >= 192`` (``is_good``);
``good_only=True`` drops every non-Good point before anything else; a NaN
value is always treated as missing (the point is dropped, never propagated).
"Valid points" below are the points left after these two rules.

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
valid points in ``[start, end)`` plus two neighbours: before, the newer of
``prev`` and the last valid point older than ``start`` in the arrays; after,
the older of ``next_`` and the first valid point at or after ``end`` in the
arrays (on a tie, the arrays' point). The caller passes
``prev``/``next_`` already filtered for quality (``good_only`` does not look at
them); a NaN value counts as absent. ``prev`` must be older than ``start`` and
``next_`` not older than ``end``.

- ``twa_step``: ``f`` is sample-and-hold, each value holding until the next
  point; the last value holds until ``end`` (``next_`` is not needed: a later
  point cannot change a value that holds up to ``end``). Before the first
  known point ``f`` is undefined: with no ``prev``, the time before the first
  point is left out of the weighting (and buckets entirely before it are NaN).
- ``twa_linear``: ``f`` is the straight line between consecutive known points
  (trapezoids), interpolated at bucket edges (and at ``start``/``end`` from
  the neighbours). It is defined only between the
  first and the last known point: time before the first or after the last
  (no neighbour on one side) is left out, so a lone point with no ``prev`` or
  ``next_`` gives NaN everywhere.

Plot mode: ``plot(ts, v, q, start, end, intervals)`` cuts ``[start, end)`` into
``intervals`` columns at ``start + floor(k * (end - start) / intervals)`` and
keeps, per column, its first, last, min and max point (the first one on ties);
it returns their indices into ``ts``, sorted and unique, so a column holds at
most 4 and a column with one point gives it once. NaN and, with ``good_only``,
non-Good points are never chosen.

Cost: bucket edges are found by a proportional guess checked against the
nearby points (binary search only where the guess misses: gaps, irregular
data); min, max and sum run chunk by chunk so that together they read the
values from memory once; the twa integrals read timestamps and values once
more. All columnar: no Python step per point or per bucket. NaN values, and
non-Good points under ``good_only``, cost a compaction of the columns and
a second computation (several times the fast path).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

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
    valid,
)
from .points import GOOD_QUALITY, Float64Array, Int64Array, ReadStats, UInt8Array
from .reductions import Segments

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
_REDUCER: dict[str, np.ufunc] = {"min": np.minimum, "max": np.maximum, "sum": np.add, "avg": np.add}


@dataclass
class Buckets:
    """Aligned bucket starts, one array per aggregate; through the engine, the blocks
    decoded (``stats.blocks_read``) and those answered from summaries."""

    start: Int64Array
    values: dict[str, Float64Array | Int64Array]
    stats: ReadStats = field(default_factory=ReadStats)
    blocks_summarised: int = 0


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


def _twa_step(s: Segments, before: Point | None) -> tuple[Float64Array, Float64Array]:
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
    s: Segments, before: Point | None, after: Point | None
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
    s: Segments, before: Point | None, after: Point | None
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
    s: Segments, aggs: Sequence[str], before: Point | None, after: Point | None, check: bool
) -> tuple[dict[str, Float64Array | Int64Array], bool]:
    """The aggregates, and (if ``check``) whether a NaN value may have been used.

    NaN is detected from results already at hand: min, max, sum and the twa
    integrals take every point and propagate NaN; first/last are right iff
    the value they picked is not NaN. Only ``count`` on its own needs a pass.
    """
    red = list(dict.fromkeys(_REDUCER[a] for a in aggs if a in _REDUCER))
    got = dict(zip(red, s.reduce(red), strict=True))
    detectors = list(got.values())
    out: dict[str, Float64Array | Int64Array] = {}
    for name in aggs:
        if name == "count":
            out[name] = s.counts.astype(np.int64)
        elif name in ("min", "max", "sum"):
            out[name] = s.full(got[_REDUCER[name]])
        elif name == "avg":
            out[name] = s.full(got[np.add] / s.counts[s.ne])
        elif name in ("first", "last"):
            picked = s.v[s.seg if name == "first" else s.lastp]
            out[name] = s.full(picked)
            detectors.append(picked)
        elif name == "twa_step":
            out[name], inner = _twa_step(s, before)
            detectors.append(inner)
        elif name == "twa_linear":
            out[name], inner = _twa_linear(s, before, after)
            detectors.append(inner)
    if not check:
        return out, False
    if any(np.isnan(d).any() for d in detectors):
        return out, True
    covered = bool(got) or any(a.startswith("twa") for a in aggs)
    return out, "count" in aggs and not covered and bool(np.isnan(s.v).any())


@np.errstate(over="ignore", invalid="ignore")  # inf values: IEEE results (inf, NaN), no warning
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
    if nb == 0 or not aggs:
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
        keep = valid(vv, qv, True)
        tv, vv = tv[keep], vv[keep]
    out, suspect = _compute(Segments(tv, vv, edges), aggs, before, after, not checked)
    if suspect:
        keep = ~np.isnan(vv)
        out, _ = _compute(Segments(tv[keep], vv[keep], edges), aggs, before, after, False)
    return Buckets(starts, out)


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
    from .summary_plot import plot_columns  # here: summary_plot imports this module

    # Column edges start + floor(k * span / intervals), exact without overflow:
    # k * span = k * (quot * intervals + rem).
    quot, rem = divmod(end - start, intervals)
    k = np.arange(intervals + 1, dtype=np.int64)
    edges = start + k * quot + (k * rem) // intervals
    return plot_columns(t, vals, qual, edges, good_only)
