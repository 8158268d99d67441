"""Values of one tag at given times, and the point rules shared with the aggregates.

Inputs are a tag's points as sorted columns: ``ts`` int64 microseconds, strictly
increasing (one value per timestamp; not checked, it is the read path's output),
``v`` float64 and ``q`` uint8 OPC quality.

Quality: a point is Good when ``q >= 192``, i.e. its top two bits are ``0b11``
(``0b00`` is Bad, ``0b01`` Uncertain; the low six bits are substatus and limits).
With ``good_only=True`` every point that is not Good is dropped before anything
else, as if it had never been written.

Missing values: a point whose value is NaN (often written as a "no value"
marker next to a Bad quality) is always dropped the same way, with or without
``good_only``. So no result ever comes from a NaN value, and a NaN never
propagates into an aggregate or an interpolated value. Infinite values, on
the other hand, are values: results follow IEEE arithmetic without warnings,
so an inf can make a sum or a time-weighted average inf or NaN.

``interpolate(ts, v, q, at, method)`` returns ``(values, status)``, one per
requested time (``at`` may be in any order). Status codes (``STATUS_*``):

- 0 ok.
- 1 no data before: no point at or before the time (``prev`` counts as a point).
- 2 gap: the value would bridge more than ``max_gap`` microseconds (below).
- 3 after the last point: only for ``linear``, which never extrapolates.

Every status other than 0 comes with a NaN value. A time that hits a point
exactly returns that point's value with status 0, whatever the method and gap.

- ``previous`` (step / sample-and-hold): the value of the last point at or
  before the time; after the last point it holds for ever. With ``max_gap``,
  the held value expires: status 2 when ``t - t_prev > max_gap``.
- ``linear``: the straight line between the last point at or before the time
  and the first point after it. With ``max_gap``, status 2 when the two points
  are more than ``max_gap`` apart (``t_next - t_prev > max_gap``), for every
  time strictly between them.

``prev`` is the last point before ``ts[0]`` (for example read from the block
before the range) as ``(ts, value)``; it must be older than ``ts[0]``. It is used
as is: the caller filters it for quality; a NaN value counts as no ``prev``.
"""

from __future__ import annotations

import operator

import numpy as np
import numpy.typing as npt

from .points import GOOD_QUALITY, Float64Array, Int64Array, UInt8Array
from .reductions import locate

BoolArray = npt.NDArray[np.bool_]
Point = tuple[int, float]

STATUS_OK = 0
STATUS_NO_DATA_BEFORE = 1
STATUS_GAP = 2
STATUS_AFTER_LAST = 3

METHODS = ("previous", "linear")


def is_good(q: npt.ArrayLike) -> BoolArray:
    """True where the OPC quality is Good: ``q >= 192`` (top two bits ``0b11``)."""
    return np.asarray(q, np.uint8) >= GOOD_QUALITY


def columns(
    ts: npt.ArrayLike, v: npt.ArrayLike, q: npt.ArrayLike
) -> tuple[Int64Array, Float64Array, UInt8Array]:
    """The three columns as 1-D int64/float64/uint8 arrays (no copy when already so)."""
    t = np.asarray(ts, np.int64)
    vals = np.asarray(v, np.float64)
    qual = np.asarray(q, np.uint8)
    if t.ndim != 1 or vals.shape != t.shape or qual.shape != t.shape:
        raise ValueError("ts, v and q must be 1-D arrays of the same length")
    return t, vals, qual


def valid_mask(v: Float64Array, q: UInt8Array, good_only: bool) -> BoolArray | None:
    """Which points count (non-NaN value, and Good if ``good_only``); None if all do.

    The all-valid answer, by far the common one, costs one read of the columns
    and no allocation of the size of the data.
    """
    bad_quality = good_only and q.shape[0] > 0 and int(q.min()) < GOOD_QUALITY
    if not bad_quality and not np.isnan(v).any():
        return None
    return valid(v, q, bad_quality)


def valid(v: Float64Array, q: UInt8Array, good_only: bool) -> BoolArray:
    """Which points count: non-NaN value, and Good quality if ``good_only``."""
    keep: BoolArray = ~np.isnan(v)
    if good_only:
        keep &= is_good(q)
    return keep


def udiff(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """``b - a`` for ``b >= a``, exact even where the int64 subtraction would overflow.

    Two's complement subtraction modulo 2**64 gives the true non-negative
    difference, which always fits in uint64.
    """
    ua = np.asarray(a, np.int64).view(np.uint64)
    ub = np.asarray(b, np.int64).view(np.uint64)
    return ub - ua


def check_point(p: Point | None, what: str) -> Point | None:
    """A caller-supplied neighbour point as ``(int, float)``, or None if absent or NaN."""
    if p is None:
        return None
    t, val = operator.index(p[0]), float(p[1])
    if not -(1 << 63) <= t < (1 << 63):
        raise ValueError(f"{what} timestamp out of the int64 range")
    return None if np.isnan(val) else (t, val)


@np.errstate(over="ignore", invalid="ignore")  # inf values: IEEE results (inf, NaN), no warning
def interpolate(
    ts: npt.ArrayLike,
    v: npt.ArrayLike,
    q: npt.ArrayLike,
    at: npt.ArrayLike,
    method: str = "previous",
    *,
    good_only: bool = False,
    prev: Point | None = None,
    max_gap: int | None = None,
) -> tuple[Float64Array, UInt8Array]:
    """Values at the times ``at`` and a status per time; see the module docstring."""
    t, vals, qual = columns(ts, v, q)
    times = np.asarray(at, np.int64)
    if times.ndim != 1:
        raise ValueError("at must be a 1-D array of timestamps")
    if method not in METHODS:
        raise ValueError(f"unknown interpolation method {method!r}; use one of {METHODS}")
    gap = None if max_gap is None else operator.index(max_gap)
    if gap is not None and gap < 0:
        raise ValueError("max_gap must be >= 0")
    before = check_point(prev, "prev")
    if before is not None and t.shape[0] and before[0] >= int(t[0]):
        raise ValueError("prev must be older than the first point")
    keep = valid_mask(vals, qual, good_only)
    if keep is not None:
        t, vals = t[keep], vals[keep]

    n = t.shape[0]
    m = times.shape[0]
    # j: last point at or before each time. On integers, side "right" for t is
    # side "left" for t + 1, which locate() answers fast for many sorted times.
    top = np.iinfo(np.int64).max
    j = locate(t, np.minimum(times, top - 1) + 1) - 1
    j[times == top] = n - 1
    jc = np.clip(j, 0, max(n - 1, 0))
    if n:
        t0, v0 = t[jc], vals[jc]
    else:
        t0, v0 = np.zeros(m, np.int64), np.zeros(m)
    has0 = j >= 0
    if before is not None:
        # Times before the first point fall back on prev (if prev is older than them).
        use = ~has0 & (times >= before[0])
        t0 = np.where(use, before[0], t0)
        v0 = np.where(use, before[1], v0)
        has0 |= use
    exact = has0 & (t0 == times)
    values = np.full(m, np.nan)
    status = np.where(has0, STATUS_OK, STATUS_NO_DATA_BEFORE).astype(np.uint8)

    if method == "previous":
        if gap is not None:
            status[has0 & (udiff(t0, times) > np.uint64(gap))] = STATUS_GAP
        ok = status == STATUS_OK
        values[ok] = v0[ok]
        return values, status

    has1 = j + 1 < n  # the next point exists (j + 1 == 0 is ts[0] when only prev is before)
    jn = np.clip(j + 1, 0, max(n - 1, 0))
    t1, v1 = (t[jn], vals[jn]) if n else (t0, v0)
    inner = has0 & ~exact
    status[inner & ~has1] = STATUS_AFTER_LAST
    between = inner & has1
    if gap is not None:
        status[between & (udiff(t0, t1) > np.uint64(gap))] = STATUS_GAP
    ok = between & (status == STATUS_OK)
    frac = udiff(t0[ok], times[ok]).astype(np.float64) / udiff(t0[ok], t1[ok]).astype(np.float64)
    values[ok] = v0[ok] + (v1[ok] - v0[ok]) * frac
    values[exact] = v0[exact]
    return values, status
