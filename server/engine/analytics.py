"""Server-side analytics over a tag: bucket aggregates, interpolation, plot mode.

The math lives in ``aggregate.py`` (pure numpy on sorted columns). This module
fetches the points through the ordinary query path (so merges, deletes and
quality rules are the same as for raw queries) plus the neighbours just
outside the range that time weighting and interpolation need: the last point
before the range and the first one after it. Bucket aggregates answer from
block summaries where those give the same answer (``summary_agg``).

They run in the calling thread, except that a large decoded range is done in
two halves at once, split at a bucket edge (``split_agg``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from xtsdb.protocol.errors import InvalidInput

from . import aggregate as agg
from . import split_agg, summary_agg
from .points import Float64Array, Int64Array, Points, UInt8Array
from .query import ReadPath

MAX_TIMES = 10_000_000  # interpolation times per request


class Interpolated(NamedTuple):
    """Values at given times (a tuple: ``times, values, status = ...`` still works)."""

    times: Int64Array
    values: Float64Array
    status: UInt8Array  # see aggregate.interpolate: 0 ok, 1 before data, 2 gap, 3 after


@contextmanager
def _invalid_input() -> Iterator[None]:
    """The math modules raise ValueError/TypeError for bad arguments: that is InvalidInput."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise InvalidInput(str(exc)) from None


def point_before(reads: ReadPath, tag_id: int, t: int, good_only: bool) -> tuple[int, float] | None:
    """The newest point with ``ts < t`` (after deletes, duplicates and the quality filter)."""
    snap = reads.snapshot(tag_id)
    if snap is None:
        return None
    firsts = snap.firsts
    # Each candidate start is a block's first point or a memory point, so a window
    # [lo, t) from it is non-empty unless deletes or the quality filter emptied it;
    # then the next older candidate widens the window.
    starts = set(firsts[firsts < t].tolist())
    for ts, _v, _q in snap.memory:
        older = ts[ts < t]
        if older.shape[0]:
            starts.add(int(older.max()))
    for lo in sorted(starts, reverse=True):
        p = reads.query(tag_id, lo, t, descending=True, good_only=good_only)
        ok = np.flatnonzero(~np.isnan(p.values))  # NaN counts as missing, as in aggregates
        if ok.shape[0]:
            return int(p.timestamps[ok[0]]), float(p.values[ok[0]])
    return None


def point_after(reads: ReadPath, tag_id: int, t: int, good_only: bool) -> tuple[int, float] | None:
    """The oldest point with ``ts >= t``."""
    snap = reads.snapshot(tag_id)
    if snap is None:
        return None
    lasts = snap.lasts
    ends = set(lasts[lasts >= t].tolist())
    for ts, _v, _q in snap.memory:
        newer = ts[ts >= t]
        if newer.shape[0]:
            ends.add(int(newer.min()))
    for hi in sorted(ends):
        p = reads.query(tag_id, t, hi + 1, good_only=good_only)
        ok = np.flatnonzero(~np.isnan(p.values))
        if ok.shape[0]:
            return int(p.timestamps[ok[0]]), float(p.values[ok[0]])
    return None


def aggregate(
    reads: ReadPath,
    tag_id: int,
    start: int,
    end: int,
    interval: int,
    aggregates: Sequence[str],
    origin: int = 0,
    good_only: bool = False,
) -> agg.Buckets:
    unknown = [a for a in aggregates if a not in agg.AGGREGATES]
    if unknown or not aggregates:
        raise InvalidInput(f"aggregates must be some of {agg.AGGREGATES}, got {list(aggregates)}")
    with _invalid_input():
        agg.bucket_edges(start, end, interval, origin)  # validates before any reading
    got = summary_agg.aggregate(reads, tag_id, start, end, interval, aggregates, origin, good_only)
    if got is not None:
        return got
    weighted = any(a.startswith("twa") for a in aggregates)

    def decoded(lo: int, hi: int) -> agg.Buckets:
        pts = reads.query(tag_id, lo, hi, good_only=good_only)
        prev = point_before(reads, tag_id, lo, good_only) if weighted else None
        nxt = point_after(reads, tag_id, hi, good_only) if weighted else None
        with _invalid_input():
            out = agg.bucket_aggregate(
                pts.timestamps,
                pts.values,
                pts.qualities,
                lo,
                hi,
                interval,
                aggregates,
                origin=origin,
                good_only=good_only,
                prev=prev,
                next_=nxt,
            )
        out.stats = pts.stats
        return out

    snap = None if weighted else reads.snapshot(tag_id)
    mid = split_agg.split_point(snap, start, end, interval, origin) if snap is not None else None
    if mid is not None:  # a large range: two halves at once (split_agg)
        return split_agg.in_halves(decoded, start, mid, end)
    return decoded(start, end)


def interpolate(
    reads: ReadPath,
    tag_id: int,
    at: ArrayLike,
    method: str = "previous",
    good_only: bool = False,
    max_gap: int | None = None,
) -> Interpolated:
    """Values at the sorted times ``at``."""
    times = np.asarray(at)
    if times.ndim != 1 or times.dtype.kind not in "iu" or times.shape[0] > MAX_TIMES:
        raise InvalidInput(f"times must be a 1-D integer array of at most {MAX_TIMES:,}")
    times = times.astype(np.int64, copy=False)
    if times.shape[0] and bool(np.any(times[1:] < times[:-1])):
        raise InvalidInput("times must be sorted")
    if method not in ("previous", "linear"):
        raise InvalidInput("method must be 'previous' or 'linear'")
    if times.shape[0] == 0:
        return Interpolated(times, np.empty(0), np.empty(0, np.uint8))
    lo, hi = int(times[0]), int(times[-1])
    pts = reads.query(tag_id, lo, hi + 1, good_only=good_only)
    if method == "linear":  # the point after the last time bounds the last segment
        nxt = point_after(reads, tag_id, hi + 1, good_only)
        if nxt is not None:
            pts = Points(
                np.append(pts.timestamps, nxt[0]),
                np.append(pts.values, nxt[1]),
                np.append(pts.qualities, np.uint8(192)),
            )
    prev = point_before(reads, tag_id, lo, good_only)
    with _invalid_input():
        values, status = agg.interpolate(
            pts.timestamps,
            pts.values,
            pts.qualities,
            times,
            method,
            good_only=False,
            prev=prev,
            max_gap=max_gap,
        )
    return Interpolated(times, values, status)


def plot(
    reads: ReadPath, tag_id: int, start: int, end: int, intervals: int, good_only: bool = False
) -> Points:
    if (
        isinstance(intervals, bool)
        or not isinstance(intervals, int)
        or not 1 <= intervals <= 100_000
    ):
        raise InvalidInput("intervals must be an integer from 1 to 100,000")
    pts = reads.query(tag_id, start, end, good_only=good_only)
    with _invalid_input():
        idx = agg.plot(pts.timestamps, pts.values, pts.qualities, start, end, intervals)
    return Points(pts.timestamps[idx], pts.values[idx], pts.qualities[idx], pts.stats)
