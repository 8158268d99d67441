"""Plot mode from block summaries: the same points as decoding every block, bit for bit.

Three paths on the same engine (summaries as stored, summaries recomputed by
decoding, every block decoded) and a per-column loop over the model's points
(the reference), all with the snapped columns of ``summary_plot.column_edges``.
"""

from __future__ import annotations

import itertools
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from numpy.lib.recfunctions import repack_fields
from test_summaries import CFG, OPS, PROPS, SEC, Model, apply, bits

from xtsdb.server.engine import Engine, EngineConfig, summary_agg, summary_plot
from xtsdb.server.engine import aggregate as agg
from xtsdb.server.engine.points import Points
from xtsdb.server.engine.summary import CELL, summarise

Triple = tuple[list[int], list[int], list[int]]


def as_lists(p: Points) -> Triple:
    return p.timestamps.tolist(), bits(p.values), p.qualities.tolist()


def three_ways(eng: Engine, *args: int, good_only: bool) -> tuple[Points, Points, Points]:
    with eng._seals.lock:  # the sealer must not move points between the three calls
        got = eng.plot(*args, good_only=good_only)
        with summary_agg.mode(stored=False):
            rec = eng.plot(*args, good_only=good_only)
        with summary_plot.mode(enabled=False):
            dec = eng.plot(*args, good_only=good_only)
    return got, rec, dec


def reference(model: Model, edges: list[int], good_only: bool) -> Triple:
    """Per column: first, last, first min and first max of the valid points, by loop."""
    keep: set[int] = set()
    for a, b in itertools.pairwise(edges):
        col = [
            (t, v)
            for t, (v, q) in sorted(model.items())
            if a <= t < b and v == v and (q >= 192 or not good_only)
        ]
        if not col:
            continue
        vals = [v for _, v in col]
        lo, hi = min(vals), max(vals)
        first_min = next(t for t, v in col if v == lo)
        first_max = next(t for t, v in col if v == hi)
        keep |= {col[0][0], col[-1][0], first_min, first_max}
    ts = sorted(keep)
    return ts, bits(np.array([model[t][0] for t in ts])), [model[t][1] for t in ts]


@PROPS
@given(
    ops=OPS,
    lo=st.just(0) | st.integers(-60, 600),
    span=st.just(700) | st.integers(1, 700),
    intervals=st.sampled_from([1, 2, 3, 5, 7, 12, 50, 1000]),
    good_only=st.booleans(),
    block_points=st.sampled_from([3, 8, 20]),
    sealed=st.booleans(),
)
def test_plot_from_summaries_is_plot_by_decoding(
    ops: list[tuple[object, ...]],
    lo: int,
    span: int,
    intervals: int,
    good_only: bool,
    block_points: int,
    sealed: bool,
) -> None:
    cfg = EngineConfig(
        chunk_size=256 * 1024, meta_extents=1, block_points=block_points, read_workers=0
    )
    model: Model = {}
    start, end = lo * SEC, (lo + span) * SEC
    with tempfile.TemporaryDirectory(prefix="xtsdb-plot-") as d:
        eng = Engine.open(Path(d) / "db", cfg)
        try:
            for op in ops:
                if op[0] == "reopen":
                    eng.close()
                    eng = Engine.open(Path(d) / "db", cfg)
                else:
                    apply(eng, model, op)
            if sealed:
                eng.flush()
            got, rec, dec = three_ways(eng, 1, start, end, intervals, good_only=good_only)
        finally:
            eng.close()
    assert as_lists(got) == as_lists(rec) == as_lists(dec)
    edges = summary_plot.column_edges(start, end, intervals).tolist()
    assert as_lists(got) == reference(model, edges, good_only)


def _second_data(eng: Engine, n: int) -> None:
    """``n`` seconds of a noisy signal with NaNs, bad points and repeated values."""
    rng = np.random.default_rng(7)
    v = np.round(rng.normal(0, 3, n), 0)  # many ties: the first one must win
    v[rng.integers(0, n, n // 50)] = np.nan
    q = np.where(rng.random(n) < 0.02, 0, 192).astype(np.uint8)
    eng.write(1, np.arange(n, dtype=np.int64) * SEC, v, q)
    eng.flush()


def test_long_range_decodes_only_the_blocks_it_must(tmp_path: Path) -> None:
    cfg = EngineConfig(chunk_size=1 << 20, meta_extents=1, block_points=600, read_workers=0)
    n = 36_000  # ten hours of 1 s data in 60 blocks of 10 minutes (5-minute cells)
    with Engine.open(tmp_path / "db", cfg) as eng:
        _second_data(eng, n)
        eng.write(1, [5000 * SEC], [1e6])  # rewrites a sealed point: its block decodes
        eng.delete(1, 20_000 * SEC, 20_100 * SEC)  # a tombstone: the blocks under it decode
        eng.flush()
        blocks = len(eng._tags[1].blocks)
        for good_only in (False, True):
            got, rec, dec = three_ways(eng, 1, 0, n * SEC, 30, good_only=good_only)
            assert as_lists(got) == as_lists(rec) == as_lists(dec)
            assert dec.stats.blocks_read == blocks
            if not good_only:  # 6-minute columns snapped to whole minutes: only the
                # blocks under the rewrite and the delete decode
                assert 0 < got.stats.blocks_read <= 4
            assert 1e6 in got.values.tolist()
        # Short columns (2.6 s) cut every cell: all decode, unsnapped, as aggregate.plot.
        p = eng.plot(1, 0, 3600 * SEC, 1370)
        pts = eng.query(1, 0, 3600 * SEC)
        idx = agg.plot(pts.timestamps, pts.values, pts.qualities, 0, 3600 * SEC, 1370)
        assert as_lists(p) == as_lists(
            Points(pts.timestamps[idx], pts.values[idx], pts.qualities[idx])
        )


def test_snapped_edges_stay_inside_and_increasing() -> None:
    year = 365 * 86_400 * SEC
    for start, intervals in ((0, 1370), (1_700_000_123_456_789, 1370), (-year, 999), (7, 1)):
        e = summary_plot.column_edges(start, start + year, intervals)
        assert e[0] == start and e[-1] == start + year and np.all(np.diff(e) > 0)
        if intervals > 1:
            assert np.all(e[1:-1] % (3600 * SEC) == 0)  # 6.4-hour columns: whole hours


def test_cell_points_are_the_first_extremes_with_their_qualities() -> None:
    ts = np.arange(6, dtype=np.int64) * SEC // 10
    v = np.array([0.0, -0.0, 5.0, np.nan, -0.0, 5.0])
    s = summarise(ts, v, np.array([200, 10, 192, 0, 7, 216], np.uint8))
    c = s.cells[0]
    assert (int(c["min_t"]), int(c["max_t"])) == (0, 2 * SEC // 10)
    assert bits(np.array([c["min_v"], c["max_v"]])) == bits(np.array([0.0, 5.0]))
    quals = [int(c[f"q_{r}"]) for r in ("first", "last", "min", "max")]
    assert quals == [200, 216, 200, 192]


def test_older_cell_format_is_recomputed_not_reported(tmp_path: Path) -> None:
    from xtsdb.server.check import check
    from xtsdb.server.engine.container import crc32
    from xtsdb.server.engine.summary import _HEAD

    with Engine.open(tmp_path / "db", CFG) as eng:
        eng.write(1, np.arange(200, dtype=np.int64) * 60 * SEC, np.arange(200.0))
        eng.flush()
        want = as_lists(eng.plot(1, 0, 200 * 60 * SEC, 7))
    old = [n for n in CELL.names or () if not n.startswith(("min_", "max_", "q_", "pad"))]
    with sqlite3.connect(tmp_path / "db" / "index.sqlite3") as db:  # format 1 rows
        rows = db.execute("SELECT * FROM summaries").fetchall()
        for c, i, seq, crc, grid, good, cells, _ in rows:
            arr = np.frombuffer(cells, CELL)
            body = repack_fields(arr[old]).tobytes()
            assert len(body) == 64 * len(arr)
            head = _HEAD.pack(c, i, seq, crc, grid, good, len(arr))
            db.execute(
                "UPDATE summaries SET cells = ?, crc = ? WHERE chunk_id = ? AND idx = ?",
                (body, crc32(head + body), c, i),
            )
    assert not check(tmp_path / "db").damaged  # an upgrade, not damage
    with Engine.open(tmp_path / "db", CFG) as eng:
        assert not eng.repairs
        assert as_lists(eng.plot(1, 0, 200 * 60 * SEC, 7)) == want
    with sqlite3.connect(tmp_path / "db" / "index.sqlite3") as db:
        sizes = {len(r[0]) % CELL.itemsize for r in db.execute("SELECT cells FROM summaries")}
        assert sizes == {0}  # rewritten in the current format
