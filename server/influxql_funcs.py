"""InfluxQL's aggregate and selector functions over time buckets, columnar (numpy).

Input: the points of one field over the series of one group, merged and
sorted by time (points of one timestamp in series-key order), and ``b``, the
bucket of each point (non-decreasing). Output per bucket: a value (NaN when
empty or undefined), whether the bucket had points (``fill`` looks at that),
and for selectors the time of the point chosen.

Ties are broken as InfluxDB 1.x breaks them: ``first``/``last`` take the
larger value among points of one timestamp; ``min``/``max`` the earliest
point; ``percentile`` sorts by value and takes the point at index
``floor(n * p / 100 + 0.5) - 1`` (nothing when outside); ``median`` of an
even count is ``lo + (hi - lo) / 2``; ``stddev`` is the sample deviation
(undefined for one point); ``integral`` is InfluxDB's streaming trapezoid
sum: a segment that crosses a bucket end is split there at the linearly
interpolated value, and the rest of it, however many empty buckets it spans,
belongs to the bucket of its later point (over integers InfluxDB's reducer takes
that rest as a trapezoid of the earlier point's value and the interpolated one,
not of the interpolated value and the later point's: so does xtsdb).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from xtsdb.protocol.errors import InvalidInput

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

SELECTORS = frozenset({"first", "last", "min", "max", "percentile"})
FUNCTIONS = frozenset(
    {"mean", "median", "sum", "count", "spread", "stddev", "integral", *SELECTORS}
)
# InfluxDB's other functions: refused as not supported (rather than "undefined")
_OTHER = """distinct mode top bottom sample moving_average cumulative_sum elapsed holt_winters
holt_winters_with_fit exponential_moving_average chande_momentum_oscillator
kaufmans_efficiency_ratio kaufmans_adaptive_moving_average triple_exponential_derivative
relative_strength_index abs acos asin atan atan2 ceil cos exp floor ln log log2 log10 pow round
sin sqrt tan"""
OTHER_FUNCTIONS = frozenset(_OTHER.split())


@dataclass
class Reduced:
    values: Floats
    present: Bools
    times: Ints | None = None  # selectors: the chosen point's time
    integer: bool = False  # count: integers in the answer


def reduce(
    name: str,
    ts: Ints,
    v: Floats,
    b: Ints,
    n: int,
    ends: Ints,
    arg: float = 0.0,
    ints: bool = False,
) -> Reduced:
    """``name`` over each of ``n`` buckets (``ends``: each bucket's end, for integral;
    ``ints``: the values are of an integer field)."""
    counts = np.bincount(b, minlength=n)
    present = counts > 0
    starts = np.searchsorted(b, np.arange(n))
    out = np.full(n, np.nan)
    if name == "count":
        return Reduced(counts.astype(np.float64), present, integer=True)
    if not ts.shape[0]:
        return Reduced(out, present, np.zeros(n, np.int64) if name in SELECTORS else None)
    seg = starts[present]  # the first point of each non-empty bucket
    if name in ("sum", "mean"):
        sums = np.bincount(b, weights=v, minlength=n)
        out[present] = sums[present] if name == "sum" else sums[present] / counts[present]
        return Reduced(out, present)
    if name in ("min", "max", "spread"):
        lo = np.minimum.reduceat(v, seg)
        hi = np.maximum.reduceat(v, seg)
        if name == "spread":
            out[present] = hi - lo
            return Reduced(out, present)
        best = np.full(n, np.nan)
        best[present] = lo if name == "min" else hi
        hit = np.flatnonzero(v == best[b])  # the first hit per bucket is the earliest
        first = hit[np.unique(b[hit], return_index=True)[1]]
        return _selected(first, b, ts, v, n, present)
    if name in ("first", "last"):
        if name == "first":  # by (bucket, time, -value): the first is the pick
            order = np.lexsort((-v, ts, b))
            pick = order[starts[present]]
        else:  # by (bucket, time, value): the last is the pick
            order = np.lexsort((v, ts, b))
            pick = order[starts[present] + counts[present] - 1]
        return _selected(pick, b, ts, v, n, present)
    if name in ("median", "percentile"):
        order = np.lexsort((v, b))
        cnt = counts[present]
        base = starts[present]
        if name == "median":
            half = cnt // 2
            lo = v[order[base + np.where(cnt % 2 == 0, half - 1, half)]]
            hi = v[order[base + half]]
            out[present] = lo + (hi - lo) / 2
            return Reduced(out, present)
        idx = np.floor(cnt.astype(np.float64) * arg / 100.0 + 0.5).astype(np.int64) - 1
        ok = (idx >= 0) & (idx < cnt)
        pick = order[base[ok] + idx[ok]]
        found = _selected(pick, b, ts, v, n, present)
        found.present = ~np.isnan(found.values)  # no point chosen: an empty bucket to fill
        return found
    if name == "stddev":
        sums = np.bincount(b, weights=v, minlength=n)
        mean = np.divide(sums, counts, out=np.zeros(n), where=present)
        dev = v - mean[b]
        ss = np.bincount(b, weights=dev * dev, minlength=n)
        many = counts > 1
        out[many] = np.sqrt(ss[many] / (counts[many] - 1))
        return Reduced(out, present)
    if name == "integral":
        return Reduced(_integral(ts, v, b, n, ends, arg, ints), present)
    raise InvalidInput(f"undefined function {name}()")


def _selected(pick: Ints, b: Ints, ts: Ints, v: Floats, n: int, present: Bools) -> Reduced:
    out = np.full(n, np.nan)
    times = np.zeros(n, np.int64)
    out[b[pick]] = v[pick]
    times[b[pick]] = ts[pick]
    return Reduced(out, present, times)


def _integral(ts: Ints, v: Floats, b: Ints, n: int, ends: Ints, unit: float, ints: bool) -> Floats:
    # A repeated timestamp keeps its later point, as InfluxDB's reducer does.
    keep = np.ones(ts.shape[0], bool)
    keep[:-1] = ts[1:] != ts[:-1]
    ts, v, b = ts[keep], v[keep], b[keep]
    sums = np.zeros(n)
    if ts.shape[0] > 1:
        t0, t1, v0, v1 = ts[:-1], ts[1:], v[:-1], v[1:]
        b0, b1 = b[:-1], b[1:]
        cross = b1 != b0
        # The value at the end of the earlier point's bucket, where a segment crosses it.
        edge = np.where(cross, ends[b0], t1)
        slope = (v1 - v0) / (t1 - t0).astype(np.float64)
        at_edge = np.where(cross, slope * (edge - t0).astype(np.float64) + v0, v1)
        part0 = 0.5 * (v0 + at_edge) * ((edge - t0).astype(np.float64) / unit)
        far = v0 if ints else v1
        part1 = np.where(cross, 0.5 * (at_edge + far) * ((t1 - edge).astype(np.float64) / unit), 0)
        sums += np.bincount(b0, weights=part0, minlength=n)
        sums += np.bincount(b1, weights=part1, minlength=n)
    out = np.full(n, np.nan)
    present = np.bincount(b, minlength=n) > 0
    out[present] = sums[present]
    return out
