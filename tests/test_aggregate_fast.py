"""Where summaries do not pay, aggregates decode: the answer is the decoded one, bit for bit.

``summary_agg`` skips blocks that span ``MAX_CELLS`` buckets or more (their cells are
wider than a bucket) and gives up when the blocks it could summarise hold less than
``MIN_SHARE`` of the range's points: merging a few cells into many decoded buckets
cost more than decoding everything (bench/aggregate.py, 90 days in 5-min buckets).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xtsdb.server.engine import Engine, EngineConfig, summary_agg

SEC = 1_000_000
AGGS = ("count", "min", "max", "sum", "avg", "first", "last")
CFG = EngineConfig(block_points=1000, read_workers=0)


def _fill(eng: Engine, n: int) -> None:
    rng = np.random.default_rng(3)
    eng.write(1, np.arange(n, dtype=np.int64) * SEC, np.round(rng.normal(20, 5, n), 3))
    eng.flush()


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def test_small_buckets_over_dense_blocks_decode_everything(tmp_path: Path) -> None:
    # Ten full blocks of 1,000 s (each spans more than 8 buckets of 60 s) and a
    # 100-point tail whose 60 s cells would fit: summarising the tail alone does not pay.
    with Engine.open(tmp_path / "db", CFG) as eng:
        _fill(eng, 10_100)
        got = eng.aggregate(1, 0, 10_100 * SEC, 60 * SEC, AGGS)
        with summary_agg.mode(enabled=False):
            dec = eng.aggregate(1, 0, 10_100 * SEC, 60 * SEC, AGGS)
        assert got.blocks_summarised == 0
        assert got.stats.blocks_read == 11
        for name in AGGS:
            assert _bits(got.values[name]) == _bits(dec.values[name]), name


def test_one_clean_block_decodes(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "db", CFG) as eng:
        _fill(eng, 1000)
        got = eng.aggregate(1, 0, 1000 * SEC, 3600 * SEC, AGGS)
        assert got.blocks_summarised == 0 and got.stats.blocks_read == 1
        assert got.values["count"].tolist() == [1000]


def test_wide_buckets_still_answer_from_summaries(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "db", CFG) as eng:
        _fill(eng, 20_000)
        got = eng.aggregate(1, 0, 20_000 * SEC, 86_400 * SEC, AGGS)
        assert got.blocks_summarised == 20 and got.stats.blocks_read == 0
        with summary_agg.mode(enabled=False):
            dec = eng.aggregate(1, 0, 20_000 * SEC, 86_400 * SEC, AGGS)
        for name in ("count", "min", "max", "first", "last"):
            assert _bits(got.values[name]) == _bits(dec.values[name]), name
        np.testing.assert_allclose(got.values["sum"], dec.values["sum"], rtol=1e-12)
