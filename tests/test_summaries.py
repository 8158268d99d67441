"""Block summaries: aggregates answered from them equal the decoded answer, bit for bit.

Three paths are compared on the same engine: summaries as stored (the default),
summaries recomputed by decoding (``summary_agg.mode(stored=False)``, what a
missing or damaged summary costs) and no summaries at all (every block decoded,
``mode(enabled=False)``), plus the loop references of ``test_aggregate``.
"""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_aggregate import cols, ref_buckets

from xtsdb.server.engine import Engine, EngineConfig, summary_agg
from xtsdb.server.engine.aggregate import Buckets
from xtsdb.server.engine.summary import CELL, summarise

SEC = 1_000_000
AGGS = ("count", "min", "max", "sum", "avg", "first", "last")
EXACT = ("count", "min", "max", "first", "last")
CFG = EngineConfig(chunk_size=256 * 1024, meta_extents=1, block_points=20, read_workers=0)
PROPS = settings(
    max_examples=int(os.environ.get("XTSDB_SUMMARY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
Model = dict[int, tuple[float, int]]


def bits(a: npt.NDArray[np.generic]) -> list[int]:
    """The raw 64-bit patterns: NaN payloads and the sign of zero count."""
    return np.ascontiguousarray(a).view(np.int64).tolist()


def three_ways(eng: Engine, *args: object, **kw: object) -> tuple[Buckets, Buckets, Buckets]:
    # The seal lock keeps the background sealer from moving memory into blocks
    # between the three calls: each must see the same state.
    with eng._seals.lock:
        got = eng.aggregate(*args, **kw)  # type: ignore[arg-type]
        with summary_agg.mode(stored=False):
            rec = eng.aggregate(*args, **kw)  # type: ignore[arg-type]
        with summary_agg.mode(enabled=False):
            dec = eng.aggregate(*args, **kw)  # type: ignore[arg-type]
    return got, rec, dec


def check_same(got: Buckets, rec: Buckets, dec: Buckets) -> None:
    assert bits(got.start) == bits(dec.start)
    for name in got.values:
        assert bits(got.values[name]) == bits(rec.values[name]), name  # bitwise
        if name in EXACT:
            assert np.array_equal(got.values[name], dec.values[name], equal_nan=True), name
        else:  # summation order: rounding only
            np.testing.assert_allclose(
                got.values[name], dec.values[name], rtol=1e-12, atol=1e-9, err_msg=name
            )


# ---------------------------------------------------------------- property test

VALUES = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False),
    st.integers(-3, 3).map(float),
    st.just(-0.0),
    st.just(math.nan),
)
QUALS = st.sampled_from([0, 64, 192, 192, 192, 216])
# A write: n points from second s0, every ``step`` seconds (runs that may overlap:
# late data and rewrites).
WRITE = st.tuples(
    st.just("write"),
    st.integers(0, 599),
    st.integers(1, 40),
    st.integers(1, 5),
    st.lists(st.tuples(VALUES, QUALS), min_size=40, max_size=40),
)
OPS = st.lists(
    st.one_of(
        WRITE,
        st.tuples(st.just("flush")),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("delete"), st.integers(0, 600), st.integers(1, 120)),
    ),
    min_size=1,
    max_size=12,
)


def apply(eng: Engine, model: Model, op: tuple[object, ...]) -> None:
    if op[0] == "write":
        s0, n, step = int(op[1]), int(op[2]), int(op[3])  # type: ignore[call-overload]
        pts: list[tuple[float, int]] = list(op[4])[:n]  # type: ignore[call-overload]
        ts = (s0 + np.arange(n, dtype=np.int64) * step) * SEC
        eng.write(1, ts, [p[0] for p in pts], [p[1] for p in pts])
        model.update(zip(ts.tolist(), pts, strict=True))
    elif op[0] == "delete":
        lo, n = int(op[1]) * SEC, int(op[2]) * SEC  # type: ignore[call-overload]
        eng.delete(1, lo, lo + n)
        for t in [t for t in model if lo <= t < lo + n]:
            del model[t]
    elif op[0] == "flush":
        eng.flush()


@PROPS
@given(
    ops=OPS,
    lo=st.just(0) | st.integers(-60, 600),
    span=st.just(700) | st.integers(0, 700),
    interval=st.sampled_from([1, 7, 10, 60, 300, 600, 600, 3600, 3600]),
    origin=st.sampled_from([0, 0, 0, 5, -30]),
    good_only=st.booleans(),
    block_points=st.sampled_from([3, 8, 20]),
    sealed=st.booleans(),
)
def test_summaries_answer_as_decoding(
    ops: list[tuple[object, ...]],
    lo: int,
    span: int,
    interval: int,
    origin: int,
    good_only: bool,
    block_points: int,
    sealed: bool,
) -> None:
    cfg = EngineConfig(
        chunk_size=256 * 1024, meta_extents=1, block_points=block_points, read_workers=0
    )
    model: Model = {}
    with tempfile.TemporaryDirectory(prefix="xtsdb-summ-") as d:
        eng = Engine.open(Path(d) / "db", cfg)
        try:
            for op in ops:
                if op[0] == "reopen":  # summaries come back from the index
                    eng.close()
                    eng = Engine.open(Path(d) / "db", cfg)
                else:
                    apply(eng, model, op)
            if sealed:  # else some points stay in memory
                eng.flush()
            start, end = lo * SEC, (lo + span) * SEC
            args = (1, start, end, interval * SEC, AGGS)
            kw = {"origin_us": origin * SEC, "good_only": good_only}
            got, rec, dec = three_ways(eng, *args, **kw)
        finally:
            eng.close()
    check_same(got, rec, dec)
    keys = sorted(model)
    data = cols([(t, model[t][0]) for t in keys], [model[t][1] for t in keys])
    want = ref_buckets(data, start, end, interval * SEC, origin * SEC, good_only, None, None)
    for name in EXACT:
        assert np.array_equal(got.values[name], np.array(want[name]), equal_nan=True), name
    for name in ("sum", "avg"):
        np.testing.assert_allclose(
            got.values[name], want[name], rtol=1e-9, atol=1e-7, equal_nan=True, err_msg=name
        )


# ---------------------------------------------------------------- when summaries are used


def _year_of_hours(eng: Engine, days: int = 40) -> int:
    """``days`` of one point a minute, sealed: blocks of 20 points (20 minutes)."""
    n = days * 24 * 60
    v = np.round(20 + np.cumsum(np.random.default_rng(3).normal(0, 0.5, n)), 3)
    eng.write(1, np.arange(n, dtype=np.int64) * 60 * SEC, v)
    eng.flush()
    return n


def test_day_buckets_over_many_sealed_blocks_decode_none(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "db", CFG) as eng:
        n = _year_of_hours(eng)
        blocks = len(eng._tags[1].blocks)
        assert blocks == n // 20
        for interval in (86_400 * SEC, 3600 * SEC):
            got, rec, dec = three_ways(eng, 1, 0, n * 60 * SEC, interval, AGGS)
            assert got.stats.blocks_read == 0 and got.stats.points_from_disk == 0
            assert got.blocks_summarised == blocks
            assert dec.blocks_summarised == 0 and dec.stats.blocks_read == blocks
            check_same(got, rec, dec)
        assert eng.stats()["blocks_summarised"] == 2 * 2 * blocks  # got and rec, twice
        # 2-minute buckets cut the blocks' 5-minute cells: every block decodes.
        got = eng.aggregate(1, 0, n * 60 * SEC, 120 * SEC, ["avg"])
        assert got.blocks_summarised == 0 and got.stats.blocks_read == blocks
    with Engine.open(tmp_path / "db", CFG) as eng:  # loaded from the index, not recomputed
        assert not eng.repairs
        got = eng.aggregate(1, 0, n * 60 * SEC, 86_400 * SEC, ["count", "avg"])
        assert got.stats.blocks_read == 0 and got.blocks_summarised == blocks
        assert got.values["count"].tolist() == [1440] * 40


def test_what_overlaps_a_block_makes_it_decode(tmp_path: Path) -> None:
    day = 86_400 * SEC
    with Engine.open(tmp_path / "db", CFG) as eng:
        n = _year_of_hours(eng, days=4)
        blocks = len(eng._tags[1].blocks)
        eng.write(1, [10 * 60 * SEC + 1], [1e6])  # late point inside block 0, in memory
        got, rec, dec = three_ways(eng, 1, 0, n * 60 * SEC, day, AGGS)
        check_same(got, rec, dec)
        assert got.blocks_summarised == blocks - 1 and got.values["max"][0] == 1e6
        eng.flush()  # now a block of its own, overlapping block 0: both decode
        got, rec, dec = three_ways(eng, 1, 0, n * 60 * SEC, day, AGGS)
        check_same(got, rec, dec)
        assert got.blocks_summarised == blocks - 1 and got.stats.blocks_read == 2
        eng.delete(1, day + 30 * 60 * SEC, day + 31 * 60 * SEC)  # masks one block
        got, rec, dec = three_ways(eng, 1, 0, n * 60 * SEC, day, AGGS)
        check_same(got, rec, dec)
        assert got.blocks_summarised == blocks - 2 and got.values["count"][1] == 1439


def test_good_only_decodes_blocks_with_bad_points(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "db", CFG) as eng:
        ts = np.arange(200, dtype=np.int64) * 60 * SEC
        q = np.full(200, 192, np.uint8)
        q[45] = 0  # block 2 holds one Bad point
        eng.write(1, ts, np.arange(200.0), q)
        eng.flush()
        for good_only, summarised in ((False, 10), (True, 9)):
            got, rec, dec = three_ways(
                eng, 1, 0, 200 * 60 * SEC, 3600 * SEC, AGGS, good_only=good_only
            )
            check_same(got, rec, dec)
            assert got.blocks_summarised == summarised
        assert got.values["count"].tolist()[0] == 59


def test_nan_values_are_missing_in_summaries() -> None:
    ts = np.arange(6, dtype=np.int64) * SEC // 10  # one 1-second cell
    s = summarise(
        ts, np.array([math.nan, 2.0, -1.0, math.nan, 5.0, math.nan]), np.full(6, 192, np.uint8)
    )
    assert s.cells.dtype == CELL and len(s.cells) == 1
    c = s.cells[0]
    assert (int(c["count"]), float(c["min"]), float(c["max"]), float(c["sum"])) == (
        3,
        -1.0,
        5.0,
        6.0,
    )
    assert (int(c["first_t"]), float(c["first"]), int(c["last_t"]), float(c["last"])) == (
        SEC // 10,
        2.0,
        4 * SEC // 10,
        5.0,
    )
    empty = summarise(ts, np.full(6, math.nan), np.zeros(6, np.uint8))
    assert len(empty.cells) == 0 and not empty.all_good


# ---------------------------------------------------------------- the index as a witness


def _rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path / "index.sqlite3") as db:
        return db.execute("SELECT chunk_id, idx FROM summaries").fetchall()


def test_damaged_summary_is_reported_recomputed_and_never_served(tmp_path: Path) -> None:
    from xtsdb.server.check import check

    with Engine.open(tmp_path / "db", CFG) as eng:
        n = _year_of_hours(eng, days=2)
        want = eng.aggregate(1, 0, n * 60 * SEC, 3600 * SEC, AGGS)
    chunk, idx = _rows(tmp_path / "db")[5]
    with sqlite3.connect(tmp_path / "db" / "index.sqlite3") as db:
        (cells,) = db.execute(
            "SELECT cells FROM summaries WHERE chunk_id = ? AND idx = ?", (chunk, idx)
        ).fetchone()
        arr = np.frombuffer(cells, CELL).copy()
        arr["max"] += 1000.0  # bit rot SQLite cannot see
        db.execute(
            "UPDATE summaries SET cells = ? WHERE chunk_id = ? AND idx = ?",
            (arr.tobytes(), chunk, idx),
        )
    report = check(tmp_path / "db")
    assert report.damaged and any("summary" in line for line in report.lines())
    with Engine.open(tmp_path / "db", CFG) as eng:
        assert any("summary" in r and "CRC" in r for r in eng.repairs)
        got = eng.aggregate(1, 0, n * 60 * SEC, 3600 * SEC, AGGS)
        assert got.stats.blocks_read == 0  # recomputed at open, from the block
        for name in AGGS:
            assert bits(got.values[name]) == bits(want.values[name]), name
    assert not check(tmp_path / "db").damaged  # written back
    with Engine.open(tmp_path / "db", CFG) as eng:
        assert not eng.repairs


def test_index_without_summaries_is_upgraded_at_open(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "db", CFG) as eng:
        n = _year_of_hours(eng, days=2)
        want = eng.aggregate(1, 0, n * 60 * SEC, 3600 * SEC, AGGS)
    with sqlite3.connect(tmp_path / "db" / "index.sqlite3") as db:
        db.execute("DROP TABLE summaries")  # as an index written before summaries
    with Engine.open(tmp_path / "db", CFG) as eng:
        assert not eng.repairs  # an upgrade, not damage
        got = eng.aggregate(1, 0, n * 60 * SEC, 3600 * SEC, AGGS)
        assert got.stats.blocks_read == 0 and got.blocks_summarised == n // 20
        for name in AGGS:
            assert bits(got.values[name]) == bits(want.values[name]), name
    assert len(_rows(tmp_path / "db")) == n // 20


def test_blocks_indexed_without_summaries_are_summarised_at_open(tmp_path: Path) -> None:
    """A crash after a block's seal but before its index transaction: rows come from a rescan."""
    with Engine.open(tmp_path / "db", CFG) as eng:
        n = _year_of_hours(eng, days=2)
        want = eng.aggregate(1, 0, n * 60 * SEC, 3600 * SEC, AGGS)
    with sqlite3.connect(tmp_path / "db" / "index.sqlite3") as db:
        db.execute("DELETE FROM summaries WHERE idx % 3 = 0")
        db.execute("DELETE FROM blocks WHERE idx % 3 = 0")  # the chunk is then rescanned
    with Engine.open(tmp_path / "db", CFG) as eng:
        got = eng.aggregate(1, 0, n * 60 * SEC, 3600 * SEC, AGGS)
        assert got.stats.blocks_read == 0 and got.blocks_summarised == n // 20
        for name in AGGS:
            assert bits(got.values[name]) == bits(want.values[name]), name


def test_summary_missing_in_memory_is_decoded_and_healed(tmp_path: Path) -> None:
    """A block written by a path that does not summarise (e.g. a merge) costs a decode, once."""
    with Engine.open(tmp_path / "db", CFG) as eng:
        n = _year_of_hours(eng, days=1)
        table = eng._store.index.summaries
        block = eng._tags[1].blocks[7]
        table.drop_chunk(block.chunk_id)
        assert table.get(block) is None
        got = eng.aggregate(1, 0, n * 60 * SEC, 3600 * SEC, AGGS)
        assert got.blocks_summarised == n // 20 and got.stats.blocks_read > 0
        again = eng.aggregate(1, 0, n * 60 * SEC, 3600 * SEC, AGGS)
        assert again.stats.blocks_read == 0
        for name in AGGS:
            assert bits(got.values[name]) == bits(again.values[name]), name


# ---------------------------------------------------------------- kill -9

KILL_CFG = dict(chunk_size=64 * 1024, meta_extents=1, block_points=40, read_workers=0)
CHILD = """
import sys, numpy as np
from xtsdb.server.engine import Engine, EngineConfig
eng = Engine.open(sys.argv[1], EngineConfig(**eval(sys.argv[2])))
print("open", flush=True)
at = int(sys.argv[3])
for i in range(100_000):
    ts = (at + np.arange(i * 30, i * 30 + 30, dtype=np.int64)) * 1_000_000
    eng.write(1, ts, np.sin(ts / 1e8))
    if i % 2:
        eng.flush()  # blocks and their index rows (with summaries) as fast as it can
"""


def test_kill_9_while_sealing_leaves_every_block_summarised(tmp_path: Path) -> None:
    data = tmp_path / "db"
    rng = np.random.default_rng(5)
    for rnd in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(data), repr(KILL_CFG), str(rnd * 10**7)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "open"
            time.sleep(float(rng.uniform(0.2, 0.8)))
        finally:
            proc.kill()  # SIGKILL, this child only
            proc.wait(timeout=30)
        with Engine.open(data, EngineConfig(**KILL_CFG)) as eng:  # type: ignore[arg-type]
            blocks = eng._tags[1].blocks
            assert len(blocks) > 0
            table = eng._store.index.summaries
            assert all(table.get(b) is not None for b in blocks)  # none missing
            end = (rnd + 1) * 10**7 * SEC
            got, rec, dec = three_ways(eng, 1, 0, end, 600 * SEC, AGGS)
            check_same(got, rec, dec)
            assert got.blocks_summarised > 0


def test_retired_chunks_take_their_summaries_with_them(tmp_path: Path) -> None:
    hour = 3600 * SEC
    cfg = EngineConfig(
        chunk_size=64 * 1024,
        meta_extents=1,
        chunks_per_container=2,
        block_points=500,
        read_workers=0,
        retention_us=24 * hour,
    )
    rng = np.random.default_rng(9)
    with Engine.open(tmp_path / "db", cfg) as eng:
        for day in range(6):  # random doubles: each day fills more than a chunk
            ts = day * 24 * hour + np.arange(0, 24 * hour, 10 * SEC)
            eng.write(1, ts, rng.random(ts.shape[0]))
            eng.flush()
            eng.apply_retention(now_us=int(ts[-1]), grace_s=0)
        live = {(b.chunk_id, b.index) for b in eng._tags[1].blocks}
        assert min(b.first_ts for b in eng._tags[1].blocks) > 2 * 24 * hour  # chunks retired
        got, rec, dec = three_ways(eng, 1, 0, 6 * 24 * hour, hour, AGGS)
        check_same(got, rec, dec)
        assert got.blocks_summarised > 0
    rows = {(int(c), int(i)) for c, i in _rows(tmp_path / "db")}  # type: ignore[call-overload]
    assert rows == live  # none left for retired chunks, none missing
