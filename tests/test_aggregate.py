"""Bucket aggregates, interpolation and plot mode against straightforward loop references.

Property tests here; the hand-written cases are in ``test_aggregate_cases.py``.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xtsdb.server.engine import reductions as segments
from xtsdb.server.engine.aggregate import (
    AGGREGATES,
    bucket_aggregate,
    interpolate,
    plot,
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
