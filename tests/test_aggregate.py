"""Bucket aggregates, interpolation and plot mode against straightforward loop references."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xtsdb.server.engine import aggregate as agg
from xtsdb.server.engine import reductions as segments
from xtsdb.server.engine.aggregate import (
    AGGREGATES,
    bucket_aggregate,
    bucket_edges,
    interpolate,
    is_good,
    plot,
    regular_times,
)

NAN = math.nan
Pt = tuple[int, float]
Cols = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.uint8]]
# XTSDB_AGG_EXAMPLES=3000 for a longer soak of the property tests.
PROPS = settings(
    max_examples=int(os.environ.get("XTSDB_AGG_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def cols(points: list[tuple[int, float]], q: list[int] | None = None) -> Cols:
    ts = np.array([p[0] for p in points], np.int64)
    v = np.array([p[1] for p in points], np.float64)
    qual = np.array(q if q is not None else [192] * len(points), np.uint8)
    return ts, v, qual


def agg1(
    points: list[Pt],
    start: int,
    end: int,
    interval: int,
    name: str,
    *,
    origin: int = 0,
    prev: Pt | None = None,
    next_: Pt | None = None,
) -> list[float]:
    r = bucket_aggregate(
        *cols(points), start, end, interval, [name], origin=origin, prev=prev, next_=next_
    )
    out: list[float] = r.values[name].tolist()
    return out


@contextmanager
def small_chunks(chunk: int, piece: int) -> Iterator[None]:
    """Force the chunked, pieced and guessed-search code paths on tiny inputs."""
    saved = segments.CHUNK, segments.PIECE, segments.LOCATE_MIN_KEYS
    segments.CHUNK, segments.PIECE = chunk, piece
    segments.LOCATE_MIN_KEYS = 0 if chunk < 100 else saved[2]
    try:
        yield
    finally:
        segments.CHUNK, segments.PIECE, segments.LOCATE_MIN_KEYS = saved


# ---------------------------------------------------------------- references (loops)


def ref_valid(ts: Cols, good_only: bool) -> list[tuple[int, int, float]]:
    """(index, ts, value) of the points that count."""
    t, v, q = ts
    return [
        (i, int(t[i]), float(v[i]))
        for i in range(len(t))
        if not math.isnan(v[i]) and (not good_only or q[i] >= 192)
    ]


def ref_edges(start: int, end: int, interval: int, origin: int) -> list[int]:
    if end <= start:
        return []
    b = origin + ((start - origin) // interval) * interval
    out = []
    while b < end:
        out.append(b)
        b += interval
    return out


def ref_buckets(
    data: Cols,
    start: int,
    end: int,
    interval: int,
    origin: int,
    good_only: bool,
    prev: Pt | None,
    nxt: Pt | None,
) -> dict[str, list[float]]:
    pts = [(t, x) for _, t, x in ref_valid(data, good_only)]
    inr = [p for p in pts if start <= p[0] < end]
    befores = [p for p in pts if p[0] < start][-1:]
    befores += [prev] if prev is not None and not math.isnan(prev[1]) else []
    afters = [p for p in pts if p[0] >= end][:1]
    afters += [nxt] if nxt is not None and not math.isnan(nxt[1]) else []
    # On a time tie the point from the arrays wins over the caller's prev/next_.
    before = max(befores, key=lambda p: p[0]) if befores else None
    after = min(afters, key=lambda p: p[0]) if afters else None
    step_known = ([before] if before else []) + inr
    lin_known = step_known + ([after] if after else [])
    out: dict[str, list[float]] = {a: [] for a in AGGREGATES}
    for s in ref_edges(start, end, interval, origin):
        a, b = max(s, start), min(s + interval, end)
        vals = [x for t, x in inr if a <= t < b]
        out["count"].append(len(vals))
        out["min"].append(min(vals) if vals else NAN)
        out["max"].append(max(vals) if vals else NAN)
        out["sum"].append(math.fsum(vals) if vals else NAN)
        out["avg"].append(math.fsum(vals) / len(vals) if vals else NAN)
        out["first"].append(vals[0] if vals else NAN)
        out["last"].append(vals[-1] if vals else NAN)
        cuts = sorted({a, b} | {t for t, _ in lin_known if a < t < b})
        si = sw = li = lw = 0.0
        for x, y in itertools.pairwise(cuts):
            left = [p for p in step_known if p[0] <= x]
            if left:  # step: the last value at or before x holds on [x, y)
                si += left[-1][1] * (y - x)
                sw += y - x
            lf = [p for p in lin_known if p[0] <= x]
            rt = [p for p in lin_known if p[0] >= y]
            if lf and rt:  # linear: [x, y) lies inside one segment between known points
                (t0, v0), (t1, v1) = lf[-1], rt[0]
                fx = v0 + (v1 - v0) * (x - t0) / (t1 - t0)
                fy = v0 + (v1 - v0) * (y - t0) / (t1 - t0)
                li += (fx + fy) / 2 * (y - x)
                lw += y - x
        out["twa_step"].append(si / sw if sw else NAN)
        out["twa_linear"].append(li / lw if lw else NAN)
    return out


def ref_interp(
    data: Cols,
    at: list[int],
    method: str,
    good_only: bool,
    prev: Pt | None,
    max_gap: int | None,
) -> tuple[list[float], list[int]]:
    known = ([prev] if prev is not None and not math.isnan(prev[1]) else []) + [
        (t, x) for _, t, x in ref_valid(data, good_only)
    ]

    def one(t: int) -> tuple[float, int]:
        left = [p for p in known if p[0] <= t]
        right = [p for p in known if p[0] > t]
        if not left:
            return NAN, 1
        t0, v0 = left[-1]
        if t0 == t:
            return v0, 0
        if method == "previous":
            return (NAN, 2) if max_gap is not None and t - t0 > max_gap else (v0, 0)
        if not right:
            return NAN, 3
        t1, v1 = right[0]
        if max_gap is not None and t1 - t0 > max_gap:
            return NAN, 2
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0), 0

    res = [one(t) for t in at]
    return [r[0] for r in res], [r[1] for r in res]


def ref_plot(data: Cols, start: int, end: int, intervals: int, good_only: bool) -> list[int]:
    valid = ref_valid(data, good_only)
    keep: set[int] = set()
    for k in range(intervals):
        lo = start + k * (end - start) // intervals
        hi = start + (k + 1) * (end - start) // intervals
        col = [(i, x) for i, t, x in valid if lo <= t < hi]
        if col:
            keep |= {col[0][0], col[-1][0]}
            keep.add(min(col, key=lambda p: p[1])[0])  # min/max return the first on ties
            keep.add(max(col, key=lambda p: p[1])[0])
    return sorted(keep)


# ---------------------------------------------------------------- strategies

VALUES = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False),
    st.integers(-3, 3).map(float),  # ties for min/max
    st.just(NAN),
)
QUALS = st.sampled_from([0, 64, 191, 192, 216, 255])
OFFSETS = st.sampled_from([0, -(10**15), 1_700_000_000_000_000, (1 << 60) - 5000])


@st.composite
def series(draw: st.DrawFn) -> tuple[Cols, int]:
    offset = draw(OFFSETS)
    n = draw(st.integers(0, 40))
    times = sorted(draw(st.sets(st.integers(-1000, 1000), min_size=n, max_size=n)))
    vals = draw(st.lists(VALUES, min_size=n, max_size=n))
    quals = draw(st.lists(QUALS, min_size=n, max_size=n))
    return cols([(t + offset, x) for t, x in zip(times, vals, strict=True)], quals), offset


def close(got: npt.ArrayLike, want: list[float], what: str) -> None:
    np.testing.assert_allclose(
        np.asarray(got, np.float64),
        np.array(want, np.float64),
        rtol=1e-9,
        atol=1e-7,
        equal_nan=True,
        err_msg=what,
    )


# ---------------------------------------------------------------- property tests


@PROPS
@given(
    s=series(),
    lo=st.integers(-1100, 1100),
    span=st.integers(-5, 2200),
    interval=st.one_of(st.integers(1, 300), st.sampled_from([1 << 40, 10**18])),
    origin=st.integers(-2000, 2000),
    good_only=st.booleans(),
    prev=st.none() | st.tuples(st.integers(1, 10**6), VALUES),
    nxt=st.none() | st.tuples(st.integers(0, 10**6), VALUES),
    chunk=st.sampled_from([(3, 2), (5, 4), (1 << 18, 64)]),
)
def test_bucket_aggregate_matches_reference(
    s: tuple[Cols, int],
    lo: int,
    span: int,
    interval: int,
    origin: int,
    good_only: bool,
    prev: Pt | None,
    nxt: Pt | None,
    chunk: tuple[int, int],
) -> None:
    data, off = s
    start, end = lo + off, lo + span + off
    origin += off if interval < 1000 else 0
    p = None if prev is None else (start - prev[0], prev[1])
    nx = None if nxt is None else (end + nxt[0], nxt[1])
    with small_chunks(*chunk):
        got = bucket_aggregate(
            *data,
            start,
            end,
            interval,
            AGGREGATES,
            origin=origin,
            good_only=good_only,
            prev=p,
            next_=nx,
        )
        # Asking for one aggregate alone (other NaN detection path) gives the same.
        alone = {
            name: bucket_aggregate(
                *data,
                start,
                end,
                interval,
                [name],
                origin=origin,
                good_only=good_only,
                prev=p,
                next_=nx,
            ).values[name]
            for name in AGGREGATES
        }
    want = ref_buckets(data, start, end, interval, origin, good_only, p, nx)
    assert got.start.tolist() == ref_edges(start, end, interval, origin)
    assert got.values["count"].dtype == np.int64
    for name in ("count", "min", "max", "first", "last"):  # exact
        assert np.array_equal(got.values[name], np.array(want[name]), equal_nan=True), name
    for name in ("sum", "avg", "twa_step", "twa_linear"):
        close(got.values[name], want[name], name)
    for name in AGGREGATES:
        assert np.array_equal(alone[name], got.values[name], equal_nan=True), name


@PROPS
@given(
    s=series(),
    at=st.lists(st.integers(-1100, 1100), max_size=30),
    method=st.sampled_from(["previous", "linear"]),
    good_only=st.booleans(),
    prev=st.none() | st.tuples(st.integers(1, 500), VALUES),
    max_gap=st.none() | st.integers(0, 300),
    extremes=st.booleans(),
    fast=st.booleans(),
)
def test_interpolate_matches_reference(
    s: tuple[Cols, int],
    at: list[int],
    method: str,
    good_only: bool,
    prev: Pt | None,
    max_gap: int | None,
    extremes: bool,
    fast: bool,
) -> None:
    data, off = s
    first = int(data[0][0]) if len(data[0]) else off
    p = None if prev is None else (first - prev[0], prev[1])
    times = sorted(t + off for t in at)
    if extremes:
        times = [-(1 << 63), *times, (1 << 63) - 1]
    with small_chunks(3, 2) if fast else small_chunks(1 << 18, 64):
        vals, stat = interpolate(
            *data,
            np.array(times, np.int64),
            method,
            good_only=good_only,
            prev=p,
            max_gap=max_gap,
        )
    want_v, want_s = ref_interp(data, times, method, good_only, p, max_gap)
    assert stat.dtype == np.uint8
    assert stat.tolist() == want_s
    close(vals, want_v, "values")


@PROPS
@given(
    s=series(),
    lo=st.integers(-1100, 1100),
    span=st.integers(-5, 2200),
    intervals=st.integers(1, 50),
    good_only=st.booleans(),
    chunk=st.sampled_from([(3, 2), (4, 3), (1 << 18, 64)]),
)
def test_plot_matches_reference(
    s: tuple[Cols, int],
    lo: int,
    span: int,
    intervals: int,
    good_only: bool,
    chunk: tuple[int, int],
) -> None:
    data, off = s
    start, end = lo + off, lo + span + off
    with small_chunks(*chunk):
        idx = plot(*data, start, end, intervals, good_only=good_only)
    want = ref_plot(data, start, end, intervals, good_only)
    assert idx.dtype == np.int64
    assert idx.tolist() == want
    # Invariants, as documented: sorted unique, <= 4 per column, whole-range ends kept.
    assert np.all(np.diff(idx) > 0)
    assert len(idx) <= 4 * intervals
    valid = [i for i, t, _ in ref_valid(data, good_only) if start <= t < end]
    if valid:
        assert idx[0] == valid[0] and idx[-1] == valid[-1]


@PROPS
@given(
    n=st.integers(1, 400),
    step=st.integers(1, 1000),
    jitter=st.integers(0, 600),
    base=st.sampled_from([0, -(10**15), (1 << 60) - 10**6]),
    seed=st.integers(0, 2**32 - 1),
    keys=st.lists(st.integers(-2000, 500_000), max_size=80),
    regular_keys=st.booleans(),
)
def test_locate_matches_searchsorted(
    n: int, step: int, jitter: int, base: int, seed: int, keys: list[int], regular_keys: bool
) -> None:
    # Near-regular series (the guess is right or corrected) and irregular ones (fallback).
    rng = np.random.default_rng(seed)
    t = base + np.arange(n, dtype=np.int64) * step
    t = np.unique(t + rng.integers(0, jitter + 1, n))
    k = np.array(keys, np.int64) + base
    if regular_keys:
        k = base - 7 + np.arange(len(keys), dtype=np.int64) * max(step * 3 // 2, 1)
    with small_chunks(3, 2):
        assert segments.locate(t, k).tolist() == np.searchsorted(t, k).tolist()


# ---------------------------------------------------------------- bucket edges


def test_is_good() -> None:
    assert is_good(np.array([0, 63, 64, 191, 192, 193, 255], np.uint8)).tolist() == [
        False,
        False,
        False,
        False,
        True,
        True,
        True,
    ]


def test_bucket_edges_alignment() -> None:
    assert bucket_edges(0, 10, 5).tolist() == [0, 5]
    assert bucket_edges(3, 12, 5).tolist() == [0, 5, 10]  # first bucket starts before start
    assert bucket_edges(0, 10, 5, origin=2).tolist() == [-3, 2, 7]
    # Negative (pre-1970) times: floor, not truncation toward zero.
    assert bucket_edges(-7, 3, 5).tolist() == [-10, -5, 0]
    assert bucket_edges(-10, -5, 5).tolist() == [-10]
    assert bucket_edges(-1, 0, 5).tolist() == [-5]
    assert bucket_edges(-7, 3, 5, origin=-3).tolist() == [-8, -3, 2]
    minute = 60_000_000
    t = 1_700_000_123_456_789
    b = bucket_edges(t, t + 10 * minute, 5 * minute)
    assert np.all(b % (5 * minute) == 0) and b[0] <= t < b[0] + 5 * minute
    assert bucket_edges(5, 5, 1).size == 0 and bucket_edges(5, 4, 1).size == 0


def test_bucket_edges_limits() -> None:
    with pytest.raises(ValueError):
        bucket_edges(0, 10, 0)
    with pytest.raises(ValueError):
        bucket_edges(0, 10, -5)
    with pytest.raises(ValueError):
        bucket_edges(0, agg.MAX_BUCKETS + 1, 1)
    assert bucket_edges(0, agg.MAX_BUCKETS, 1).size == agg.MAX_BUCKETS
    # Huge intervals: one aligned bucket, as long as its start is representable.
    assert bucket_edges(-5, 5, 1 << 62).tolist() == [-(1 << 62), 0]
    assert bucket_edges(1, 5, 1 << 62).tolist() == [0]
    assert bucket_edges(5, 6, 10**30).tolist() == [0]
    with pytest.raises(ValueError):
        bucket_edges(-5, 5, 10**30)  # aligned start -10**30 is not an int64
    with pytest.raises(ValueError):
        bucket_edges(-(1 << 62), 1 << 62, 1 << 62)  # end - first >= 2**63
    with pytest.raises(ValueError):
        bucket_edges(0, 1 << 63, 1)


def test_regular_times() -> None:
    assert regular_times(-7, 5, 4).tolist() == [-7, -3, 1]
    assert regular_times(0, 1, 10**30).tolist() == [0]
    assert regular_times(3, 3, 1).size == 0
    with pytest.raises(ValueError):
        regular_times(0, 10, 0)
    with pytest.raises(ValueError):
        regular_times(0, agg.MAX_BUCKETS + 1, 1)


# ---------------------------------------------------------------- point aggregates


def test_no_points() -> None:
    ts, v, q = cols([])
    r = bucket_aggregate(ts, v, q, 0, 30, 10, AGGREGATES)
    assert r.start.tolist() == [0, 10, 20]
    assert r.values["count"].tolist() == [0, 0, 0]
    for name in AGGREGATES[1:]:
        assert np.isnan(r.values[name]).all(), name
    # With prev, the step signal is known: it holds across every bucket.
    r = bucket_aggregate(ts, v, q, 0, 30, 10, AGGREGATES, prev=(-1, 4.0), next_=(40, 8.0))
    assert r.values["twa_step"].tolist() == [4.0, 4.0, 4.0]
    # Linear from (-1, 4) to (40, 8): bucket [0, 10) averages f(5) = 4 + 4 * 6 / 41.
    close(r.values["twa_linear"], [4 + 4 * (k * 10 + 6) / 41 for k in range(3)], "lin")
    empty = bucket_aggregate(ts, v, q, 5, 5, 10, AGGREGATES)
    assert empty.start.size == 0 and all(a.size == 0 for a in empty.values.values())
    assert empty.values["count"].dtype == np.int64


def test_edges_one_bucket_and_gaps() -> None:
    pts = [(0, 1.0), (9, 2.0), (10, 3.0), (40, 4.0), (49, 5.0)]
    r = bucket_aggregate(*cols(pts), 0, 50, 10, ["count", "first", "last", "sum", "avg"])
    assert r.values["count"].tolist() == [2, 1, 0, 0, 2]  # 10 starts the second bucket
    assert np.array_equal(r.values["first"], [1.0, 3.0, NAN, NAN, 4.0], equal_nan=True)
    assert np.array_equal(r.values["sum"], [3.0, 3.0, NAN, NAN, 9.0], equal_nan=True)
    # All points in one bucket; start/end not aligned; points outside ignored.
    r = bucket_aggregate(*cols(pts), 5, 45, 100, ["count", "min", "max", "first", "last"])
    assert r.start.tolist() == [0]
    assert [r.values[k][0] for k in ("count", "min", "max", "first", "last")] == [3, 2, 4, 2, 4]
    one = bucket_aggregate(*cols([(7, 2.5)]), 0, 20, 10, AGGREGATES)
    assert one.values["avg"].tolist()[0] == 2.5 and np.isnan(one.values["avg"][1])
    assert one.values["twa_step"].tolist() == [2.5, 2.5]  # holds from 7 to end
    assert np.isnan(one.values["twa_linear"]).all()  # a lone point has no segment


def test_nan_values_are_missing() -> None:
    pts = [(0, 1.0), (2, NAN), (4, 3.0), (10, NAN), (12, NAN)]
    r = bucket_aggregate(*cols(pts), 0, 20, 10, AGGREGATES)
    assert r.values["count"].tolist() == [2, 0]
    assert r.values["sum"][0] == 4.0 and r.values["max"][0] == 3.0
    assert np.isnan(r.values["min"][1]) and np.isnan(r.values["first"][1])
    # The NaN at 2 is skipped: 1.0 holds over [0, 4), then 3.0 holds to the end.
    assert r.values["twa_step"].tolist() == [(1.0 * 4 + 3.0 * 6) / 10, 3.0]
    for name in ("count", "first", "last"):  # detected without a NaN-propagating reducer
        alone = bucket_aggregate(*cols(pts), 0, 20, 10, [name]).values[name]
        assert np.array_equal(alone, r.values[name], equal_nan=True)


def test_good_only() -> None:
    pts = [(0, 1.0), (5, 100.0), (10, 3.0)]
    r = bucket_aggregate(
        *cols(pts, [192, 0, 192]), 0, 20, 20, ["max", "count", "twa_step"], good_only=True
    )
    assert r.values["max"].tolist() == [3.0] and r.values["count"].tolist() == [2]
    assert r.values["twa_step"].tolist() == [(1.0 * 10 + 3.0 * 10) / 20]
    all_bad = bucket_aggregate(*cols(pts, [0, 64, 128]), 0, 20, 10, AGGREGATES, good_only=True)
    assert all_bad.values["count"].tolist() == [0, 0]
    assert np.isnan(all_bad.values["twa_step"]).all()
    # Bad points before start are not taken as the held value; prev is (caller-filtered).
    r = bucket_aggregate(
        *cols([(-5, 9.0)], [0]), 0, 10, 10, ["twa_step"], good_only=True, prev=(-8, 2.0)
    )
    assert r.values["twa_step"].tolist() == [2.0]
    r = bucket_aggregate(*cols([(-5, 9.0)], [0]), 0, 10, 10, ["twa_step"], prev=(-8, 2.0))
    assert r.values["twa_step"].tolist() == [9.0]  # newer in-array point wins


def test_large_timestamps_exact() -> None:
    big = (1 << 60) - 100
    pts = [(big, 1.0), (big + 1, 2.0), (big + 3, 4.0)]
    r = bucket_aggregate(*cols(pts), big, big + 4, 1 << 61, ["twa_step", "twa_linear", "sum"])
    assert r.start.tolist() == [0]
    # step: 1*1 + 2*2 + 4*1 = 9 over 4; linear over [big, big+3]: 1.5 + 2*3 = 7.5 over 3
    assert r.values["twa_step"].tolist() == [9 / 4]
    assert r.values["twa_linear"].tolist() == [7.5 / 3]
    neg = bucket_aggregate(*cols([(-(1 << 60) + 1, 5.0)]), -(1 << 60), 0, 1 << 59, ["count"])
    assert neg.start[0] == -(1 << 60) and neg.values["count"].tolist() == [1, 0]


def test_validation() -> None:
    ts, v, q = cols([(0, 1.0)])
    with pytest.raises(ValueError):
        bucket_aggregate(ts, v, q, 0, 10, 5, ["median"])
    with pytest.raises(ValueError):
        bucket_aggregate(ts, v, q, 0, 10, 5, "avg")
    with pytest.raises(ValueError):
        bucket_aggregate(ts, v, q, 0, 10, 5, ["avg"], prev=(0, 1.0))
    with pytest.raises(ValueError):
        bucket_aggregate(ts, v, q, 0, 10, 5, ["avg"], next_=(9, 1.0))
    with pytest.raises(ValueError):
        bucket_aggregate(ts, v[:0], q, 0, 10, 5, ["avg"])
    with pytest.raises(TypeError):
        bucket_aggregate(ts, v, q, 0.5, 10, 5, ["avg"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        bucket_aggregate(ts, v, q, 0, 10, 5, ["twa_step"], prev=(-(1 << 64), 1.0))
    with pytest.raises(ValueError):
        plot(ts, v, q, -(1 << 63), (1 << 63) - 1, 3)
    with pytest.raises(ValueError):
        interpolate(ts, v, q, np.zeros((2, 2), np.int64))
    assert bucket_aggregate(ts, v, q, 0, 10, 5, []).values == {}


# ---------------------------------------------------------------- time weighting by hand


def test_twa_step_by_hand() -> None:
    pts = [(0, 0.0), (10, 10.0)]
    # [0, 20): 0.0 on [0, 10), 10.0 on [10, 20) -> (0*10 + 10*10) / 20 = 5
    assert agg1(pts, 0, 20, 20, "twa_step") == [5.0]
    # next_ changes nothing: the last value holds until end either way.
    assert agg1(pts, 0, 20, 20, "twa_step", next_=(15_000, 99.0)) == [5.0]
    # [-10, 20) without prev: [-10, 0) is unknown and left out -> still 100 / 20 = 5
    assert agg1(pts, -10, 20, 30, "twa_step", origin=-10) == [5.0]
    # with prev (-30, 4.0): 4.0 holds on [-10, 0) -> (4*10 + 0*10 + 10*10) / 30 = 140 / 30
    assert agg1(pts, -10, 20, 30, "twa_step", origin=-10, prev=(-30, 4.0)) == [140 / 30]
    # 5-wide buckets: [0,5) 0, [5,10) 0 (held), [10,15) 10, [15,20) 10 (held to end)
    assert agg1(pts, 0, 20, 5, "twa_step") == [0.0, 0.0, 10.0, 10.0]
    # Bucket [4, 14) of width 10 from origin 4: 0.0 on [4,10) (6 us), 10 on [10,14) -> 40/10
    assert agg1(pts, 4, 14, 10, "twa_step", origin=4) == [4.0]


def test_twa_linear_by_hand() -> None:
    pts = [(0, 0.0), (10, 10.0)]
    # [0, 20), no next_: defined on [0, 10] only: trapezoid (0+10)/2*10 = 50 over 10 -> 5
    assert agg1(pts, 0, 20, 20, "twa_linear") == [5.0]
    # next_ (20, 30.0): [10, 20) adds (10+30)/2*10 = 200 -> (50 + 200) / 20 = 12.5
    assert agg1(pts, 0, 20, 20, "twa_linear", next_=(20, 30.0)) == [12.5]
    # next_ (30, 30.0): f(20) = 10 + 20 * 10/20 = 20, [10,20) adds (10+20)/2*10 = 150 -> 10
    assert agg1(pts, 0, 20, 20, "twa_linear", next_=(30, 30.0)) == [10.0]
    # [-10, 20) with prev (-20, -20.0): f(-10) = -20 + 20 * 10/20 = -10,
    # [-10,0) adds (-10+0)/2*10 = -50; with next_ (30, 30.0): (-50 + 50 + 150) / 30 = 5
    got = agg1(pts, -10, 20, 30, "twa_linear", origin=-10, prev=(-20, -20.0), next_=(30, 30.0))
    assert got == [5.0]
    # Buckets of 5: f is the line t -> t on [0, 10]: [0,5) -> 2.5, [5,10) -> 7.5, then no data
    assert np.array_equal(agg1(pts, 0, 20, 5, "twa_linear"), [2.5, 7.5, NAN, NAN], equal_nan=True)
    # An empty bucket between points is one trapezoid: points (0, 0), (30, 30), buckets of 10
    assert agg1([(0, 0.0), (30, 30.0)], 0, 30, 10, "twa_linear") == [5.0, 15.0, 25.0]


# ---------------------------------------------------------------- interpolation


def test_interpolate_edge_cases() -> None:
    ts, v, q = cols([(0, 0.0), (10, 10.0), (100, 20.0)], [192, 192, 192])
    at = np.array([-5, 0, 5, 10, 55, 100, 150], np.int64)
    vals, st_ = interpolate(ts, v, q, at, "previous")
    assert st_.tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert np.array_equal(vals, [NAN, 0, 0, 10, 10, 20, 20], equal_nan=True)
    vals, st_ = interpolate(ts, v, q, at, "linear")
    assert st_.tolist() == [1, 0, 0, 0, 0, 0, 3]
    assert np.array_equal(vals, [NAN, 0, 5, 10, 15, 20, NAN], equal_nan=True)
    # max_gap: previous expires 20 us after a point; linear refuses to bridge > 20 us.
    vals, st_ = interpolate(ts, v, q, at, "previous", max_gap=20)
    assert st_.tolist() == [1, 0, 0, 0, 2, 0, 2]
    vals, st_ = interpolate(ts, v, q, at, "linear", max_gap=20)
    assert st_.tolist() == [1, 0, 0, 0, 2, 0, 3]
    assert vals[5] == 20.0  # exact hit: fine whatever the gap
    # prev before the first point fills the start.
    vals, st_ = interpolate(ts, v, q, at, "linear", prev=(-10, -10.0))
    assert vals[0] == -5.0 and st_[0] == 0
    vals, st_ = interpolate(ts, v, q, np.array([-20, -10]), "previous", prev=(-10, 7.0))
    assert st_.tolist() == [1, 0] and vals[1] == 7.0
    # bad quality dropped with good_only: the point at 10 disappears
    q2 = np.array([192, 0, 192], np.uint8)
    vals, _ = interpolate(ts, v, q2, np.array([10, 55]), "linear", good_only=True)
    assert vals.tolist() == [2.0, 11.0]  # (0, 0) to (100, 20)
    # no points at all
    vals, st_ = interpolate(ts[:0], v[:0], q[:0], np.array([1, 2]), "linear", prev=(0, 1.0))
    assert st_.tolist() == [3, 3]
    vals, st_ = interpolate(ts[:0], v[:0], q[:0], np.array([1]), "previous")
    assert st_.tolist() == [1] and np.isnan(vals[0])
    with pytest.raises(ValueError):
        interpolate(ts, v, q, at, "cubic")
    with pytest.raises(ValueError):
        interpolate(ts, v, q, at, prev=(0, 1.0))  # prev must be older than ts[0]
    with pytest.raises(ValueError):
        interpolate(ts, v, q, at, max_gap=-1)


def test_interpolate_extreme_times() -> None:
    lo, hi = -(1 << 60), (1 << 60) - 1
    ts, v, q = cols([(lo, 0.0), (hi, 1.0)])
    at = np.array([0, np.iinfo(np.int64).max], np.int64)
    vals, st_ = interpolate(ts, v, q, at, "previous", max_gap=1 << 62)
    assert st_.tolist() == [0, 2]  # 2**63-1 - (2**60-1) > 2**62: no int64 overflow
    vals, st_ = interpolate(ts, v, q, at[:1], "linear")
    assert st_.tolist() == [0] and vals[0] == pytest.approx(0.5)


# ---------------------------------------------------------------- plot


def test_plot_cases() -> None:
    ts, v, q = cols([(0, 5.0), (1, 1.0), (2, 9.0), (3, 4.0), (25, 7.0)])
    # 3 columns of [0, 30): [0,10) has 4 points (all kept), [10,20) none, [20,30) one.
    assert plot(ts, v, q, 0, 30, 3).tolist() == [0, 1, 2, 3, 4]
    # fewer points than columns
    assert plot(ts, v, q, 0, 30, 1000).tolist() == [0, 1, 2, 3, 4]
    assert plot(ts, v, q, 0, 30, 1).tolist() == [0, 1, 2, 4]  # 3 is neither end nor extreme
    assert plot(ts[:0], v[:0], q[:0], 0, 30, 3).size == 0
    assert plot(ts, v, q, 30, 30, 3).size == 0
    v2 = v.copy()
    v2[1] = NAN
    assert plot(ts, v2, q, 0, 30, 1).tolist() == [0, 2, 3, 4]  # NaN skipped: 3 is the min
    with pytest.raises(ValueError):
        plot(ts, v, q, 0, 30, 0)


def test_plot_large_random() -> None:
    rng = np.random.default_rng(5)
    n = 200_000
    ts = np.cumsum(rng.integers(1, 2000, n)).astype(np.int64) - 10**8
    v = np.round(rng.normal(0, 1, n), 1)  # many ties
    q = np.where(rng.random(n) < 0.01, 0, 192).astype(np.uint8)
    start, end = int(ts[100]), int(ts[-100])
    idx = plot(ts, v, q, start, end, 700, good_only=True)
    cut = start + np.arange(701) * (end - start) // 700
    col = np.searchsorted(cut, ts[idx], "right") - 1
    good = is_good(q)
    for c in np.unique(col)[::37].tolist():  # check a sample of columns with a loop
        members = np.flatnonzero((ts >= cut[c]) & (ts < cut[c + 1]) & good)
        mv = v[members]
        want = {members[0], members[-1], members[np.argmin(mv)], members[np.argmax(mv)]}
        assert set(idx[col == c].tolist()) == {int(i) for i in want}
    assert np.all(good[idx]) and np.all(np.diff(idx) > 0)
