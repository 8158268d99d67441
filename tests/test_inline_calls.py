"""Small engine calls answered on the event loop: which ones, and the same answers.

A real server (in this process, so the test reads the decision's counters)
answers each request once with the fast path allowed and once with it off
(``max_points=0``: everything through the query pool, as before); the answers
must be identical bit for bit, and the counters say which way each went. A
block evicted from the page cache, a read over the point bound, a
time-weighted or several-tag aggregate and a ``last`` whose value is not
cached must all go to the pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xtsdb.client import Client, connect
from xtsdb.server.app import ServerThread
from xtsdb.server.engine import Engine
from xtsdb.server.inline_calls import CALLS, InlineCalls

T0 = 1_700_000_000_000_000
SEC = 1_000_000
N = 10_000  # the compare row's tag: 10 K points, 1 s apart


@contextmanager
def counted(expect_inline: int, expect_pooled: int) -> Iterator[None]:
    inline, pooled = CALLS.inline, CALLS.pooled
    yield
    assert (CALLS.inline - inline, CALLS.pooled - pooled) == (expect_inline, expect_pooled)


@contextmanager
def pool_only() -> Iterator[None]:
    saved = CALLS.max_points
    CALLS.max_points = 0
    try:
        yield
    finally:
        CALLS.max_points = saved


def same(a: Any, b: Any) -> None:
    """Equal answers: arrays bit for bit (NaN included), in dicts and lists too."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    else:
        assert a == b


def both_ways(call: Callable[[], Any], inline: bool) -> Any:
    """``call()`` with the fast path allowed (taking it iff ``inline``) and without."""
    with counted(int(inline), int(not inline)):
        fast = call()
    with pool_only(), counted(0, 1):
        slow = call()
    same(fast, slow)
    return fast


@pytest.fixture
def loaded(server_factory: Callable[..., ServerThread]) -> Iterator[tuple[ServerThread, Client]]:
    srv = server_factory()
    rng = np.random.default_rng(7)
    with connect(srv.url) as db:
        ts = T0 + np.arange(N, dtype=np.int64) * SEC
        db.write(1, ts, np.cumsum(rng.normal(size=N)))
        db.write(2, ts, rng.normal(size=N))
        db.flush_server()  # sealed into blocks on disk (SMALL_ENGINE: 1,000 points a block)
        db.write(1, ts[-1:] + SEC, [0.5])  # and one point in memory
        yield srv, db


def agg(db: Client, tags: Any, aggs: Any = ("min", "max", "avg")) -> Any:
    r = db.aggregate(tags, T0, T0 + (N + 1) * SEC, 300 * SEC, list(aggs))
    if isinstance(r, dict):  # several tags: by tag
        return {k: (x.start, x.values) for k, x in r.items()}
    return r.start, r.values


def test_the_compare_rows_aggregate_is_answered_inline(loaded: tuple[ServerThread, Client]) -> None:
    _, db = loaded
    got = both_ways(lambda: agg(db, 1), inline=True)
    assert got[0].shape[0] in (34, 35)  # 5-min buckets over 10,001 s, aligned to 0
    got = both_ways(lambda: agg(db, 1, ["count", "sum", "first", "last"]), inline=True)
    assert int(got[1]["count"].sum()) == N + 1


def test_small_queries_and_cached_lasts_are_answered_inline(
    loaded: tuple[ServerThread, Client],
) -> None:
    _, db = loaded

    def query(tag: int, n: int) -> Any:
        r = db.query(tag, T0, T0 + n * SEC)
        return r.timestamps, r.values, r.qualities

    assert both_ways(lambda: query(1, 500), inline=True)[0].shape[0] == 500
    assert both_ways(lambda: query(99, 500), inline=True)[0].shape[0] == 0  # no such data

    def last(tags: list[int]) -> Any:
        r = db.last(tags)
        return r.tags, r.timestamps, r.values, r.qualities

    assert both_ways(lambda: last([1, 2, 99]), inline=True)[0].tolist() == [1, 2]


def test_large_weighted_and_several_tag_calls_go_to_the_pool(
    loaded: tuple[ServerThread, Client],
) -> None:
    _, db = loaded
    saved = CALLS.max_points
    CALLS.max_points = 4_000  # the tag's 10,001 points are more than that
    try:
        both_ways(lambda: agg(db, 1), inline=False)
    finally:
        CALLS.max_points = saved
    both_ways(lambda: agg(db, 1, ["twa_step"]), inline=False)  # reads outside the range too
    both_ways(lambda: agg(db, [1, 2]), inline=False)


def _evict(data_dir: Path) -> int:
    """Drop the container files' pages from the page cache (they are clean: fsynced)."""
    files = [p for p in data_dir.rglob("*") if p.is_file() and "container" in str(p)]
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return len(files)


def test_a_block_not_in_the_page_cache_goes_to_the_pool(
    loaded: tuple[ServerThread, Client],
) -> None:
    srv, db = loaded
    assert _evict(Path(srv.config.data_dir)) > 0
    with counted(0, 1):
        cold = agg(db, 1)  # read from the disk, in a pool thread; now cached again
    with counted(1, 0):
        warm = agg(db, 1)
    same(cold, warm)


def test_last_of_an_uncached_value_goes_to_the_pool(tmp_path: Path) -> None:
    calls = InlineCalls()
    with Engine.open(tmp_path / "data") as e:
        e.write(3, [T0, T0 + SEC], [1.0, 2.0])
        e.flush()
        assert calls.last(e, [3, 4]).inline  # cached, and a tag without data
        e._state.last.forget(3)  # as after a delete: the engine would read blocks
        assert not calls.last(e, [3]).inline
        assert not calls.last(e, list(range(calls.max_tags + 1))).inline
        assert (calls.inline, calls.pooled) == (1, 2)
        assert e.last([3]).values.tolist() == [2.0]
        assert calls.last(e, [3]).inline  # computed once, cached again


def test_memory_outside_the_range_does_not_count_against_the_bound(tmp_path: Path) -> None:
    calls = InlineCalls(max_points=5_000)
    with Engine.open(tmp_path / "data") as e:
        old = T0 + np.arange(1_000, dtype=np.int64) * SEC
        e.write(3, old, np.ones(1_000))
        e.flush()  # 1,000 old points in a block
        for k in range(10):  # 20,000 newer points in memory, in 10 writes
            ts = T0 + (10_000 + k * 2_000 + np.arange(2_000, dtype=np.int64)) * SEC
            e.write(3, ts, np.zeros(2_000))
        assert calls.read(e, 3, T0, T0 + 1_000 * SEC).inline  # the old hour alone
        assert not calls.read(e, 3, T0, T0 + 20_000 * SEC).inline  # reaches into memory
