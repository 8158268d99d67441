"""Bucket aggregates, interpolation and plot mode: hand-written cases (edges, limits, NaN).

The property tests against loop references are in ``test_aggregate.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_aggregate import NAN, agg1, close, cols

from xtsdb.server.engine import aggregate as agg
from xtsdb.server.engine.aggregate import (
    AGGREGATES,
    bucket_aggregate,
    bucket_edges,
    interpolate,
    is_good,
    plot,
    regular_times,
)

# ---------------------------------------------------------------- bucket edges


def test_is_good() -> None:
    quality = np.array([0, 63, 64, 191, 192, 193, 255], np.uint8)
    assert is_good(quality).tolist() == [False] * 4 + [True] * 3


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
