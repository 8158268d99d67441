"""A bucket's aggregate does not depend on the range asked, and halves add up exactly.

``reductions`` cuts its cache-sized chunks at segment (bucket) starts, so the
sum of a bucket is the same bits whether the range began at it or long before
it; ``split_agg`` relies on that to answer a large range in two halves at once.
Chunks are made tiny here so that buckets straddle them all the time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xtsdb.server.engine import Engine, EngineConfig, reductions, split_agg, summary_agg
from xtsdb.server.engine.aggregate import bucket_aggregate

PLAIN = ["count", "min", "max", "sum", "avg", "first", "last"]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()  # bit for bit, NaN and -0.0


def _points(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(1, 5, n)).astype(np.int64)
    v = rng.normal(0, 1e6, n) * 10.0 ** rng.integers(-3, 4, n)  # sums that round
    v[rng.random(n) < 0.02] = np.nan
    q = np.where(rng.random(n) < 0.05, 0, 192).astype(np.uint8)
    return ts, v, q


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    chunk=st.integers(3, 40),
    interval=st.integers(1, 60),
    cut=st.integers(1, 50),
    good_only=st.booleans(),
)
def test_a_bucket_sums_the_same_bits_whatever_range_holds_it(
    seed: int, chunk: int, interval: int, cut: int, good_only: bool
) -> None:
    ts, v, q = _points(seed, 600)
    end = int(ts[-1]) + 1
    mid = min(cut, (end - 1) // interval) * interval  # a bucket edge inside the range
    saved = reductions.CHUNK
    reductions.CHUNK = chunk
    try:
        whole = bucket_aggregate(ts, v, q, 0, end, interval, PLAIN, good_only=good_only)
        a = bucket_aggregate(ts, v, q, 0, mid, interval, PLAIN, good_only=good_only)
        b = bucket_aggregate(ts, v, q, mid, end, interval, PLAIN, good_only=good_only)
    finally:
        reductions.CHUNK = saved
    assert _same(np.concatenate((a.start, b.start)), whole.start)
    for name in PLAIN:
        assert _same(np.concatenate((a.values[name], b.values[name])), whole.values[name]), name


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reductions, "CHUNK", 97)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    interval=st.sampled_from([7, 50, 300, 1_000]),
    origin=st.integers(-500, 500),
    good_only=st.booleans(),
    deleted=st.booleans(),
)
def test_the_engine_answers_in_halves_exactly_as_whole(
    tmp_path_factory: pytest.TempPathFactory,
    small_chunks: None,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
    interval: int,
    origin: int,
    good_only: bool,
    deleted: bool,
) -> None:
    path = Path(tmp_path_factory.mktemp("halves")) / "db"
    eng = Engine.open(path, EngineConfig(block_points=500, workers=0))
    try:
        ts, v, q = _points(seed, 6_000)
        eng.write(1, ts[:4_000], v[:4_000], q[:4_000])
        eng.flush()  # sealed blocks, then newer points in memory
        eng.write(1, ts[4_000:], v[4_000:], q[4_000:])
        if deleted:
            eng.delete(1, int(ts[1_000]), int(ts[1_300]))
        start, end = int(ts[10]), int(ts[-10])
        args = (1, start, end, interval, PLAIN)
        with summary_agg.mode(enabled=False):  # the decoded path, the one that splits
            monkeypatch.setattr(split_agg, "SPLIT_MIN_POINTS", 1 << 62)
            whole = eng.aggregate(*args, origin_us=origin, good_only=good_only)
            monkeypatch.setattr(split_agg, "SPLIT_MIN_POINTS", 1)
            snap = eng._reads.snapshot(1)
            assert snap is not None
            assert split_agg.split_point(snap, start, end, interval, origin) is not None
            halves = eng.aggregate(*args, origin_us=origin, good_only=good_only)
    finally:
        eng.close()
    assert _same(halves.start, whole.start)
    for name in PLAIN:
        assert _same(halves.values[name], whole.values[name]), name
    assert halves.stats.points_from_disk >= whole.stats.points_from_disk


def test_time_weighted_aggregates_are_never_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(split_agg, "SPLIT_MIN_POINTS", 1)
    calls: list[int] = []
    real = split_agg.in_halves
    monkeypatch.setattr(split_agg, "in_halves", lambda *a: calls.append(1) or real(*a))
    eng = Engine.open(tmp_path / "db", EngineConfig(block_points=100, workers=0))
    try:
        ts = np.arange(1_000, dtype=np.int64) * 10
        eng.write(1, ts, np.sin(ts / 100.0))
        eng.flush()
        with summary_agg.mode(enabled=False):  # decoded, as summaries cannot answer
            eng.aggregate(1, 0, 10_000, 1_000, ["twa_step", "avg"])
            assert calls == []
            eng.aggregate(1, 0, 10_000, 1_000, ["avg"])
            assert calls == [1]
    finally:
        eng.close()
