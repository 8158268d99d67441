"""Worker processes (server/engine/workers.py): same bytes as inline, retries on death.

Real processes, real shared memory, real container files: a worker is killed
with SIGKILL by its own pid (from the pool) and the job must still give the
inline answer, byte for byte.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from xtsdb.protocol.errors import CorruptionError
from xtsdb.server.engine import Engine, EngineConfig
from xtsdb.server.engine.membuffer import Columns
from xtsdb.server.engine.workers import WorkerPool, encode_inline, encode_many

SMALL = dict(chunk_size=1 << 20, meta_extents=2, block_points=1000)


def _segments(seed: int) -> list[Columns]:
    """Blocks of every kind the codec has: regular, jittered, XOR floats, -0.0, NaN, qualities."""
    rng = np.random.default_rng(seed)
    out: list[Columns] = []
    for i in range(24):
        n = int(rng.integers(1, 3000))
        ts = np.cumsum(rng.integers(1, 5 if i % 3 else 2, n)).astype(np.int64) * 1000 + i
        decimal = np.round(rng.normal(size=n) * 100, 2)
        v = rng.normal(size=n) if i % 4 == 0 else decimal  # not decimal: XOR mode
        if i % 5 == 1:
            v[:: max(1, n // 7)] = -0.0
        if i % 6 == 2:
            v[:: max(1, n // 5)] = np.nan
        q = np.full(n, 192, np.uint8) if i % 2 else rng.integers(0, 256, n).astype(np.uint8)
        out.append((ts, v, q))
    return out


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(2, 64 << 20)
    yield p
    p.close()


def _same(a: list[tuple[bytes, object]], b: list[tuple[bytes, object]]) -> None:
    assert len(a) == len(b)
    for (body_a, sum_a), (body_b, sum_b) in zip(a, b, strict=True):
        assert body_a == body_b
        assert sum_a.cells.tobytes() == sum_b.cells.tobytes()  # type: ignore[attr-defined]
        assert (sum_a.grid, sum_a.all_good) == (sum_b.grid, sum_b.all_good)  # type: ignore[attr-defined]


def test_encoded_bytes_and_summaries_match_inline(pool: WorkerPool) -> None:
    for seed in range(3):
        segs = _segments(seed)
        got = encode_many(pool, segs, 3)
        _same(got, encode_inline(segs, 3))
    assert pool.replaced == 0 and len(pool.pids()) == 2  # the workers did the work


def test_killed_worker_costs_a_retry_not_bytes(pool: WorkerPool) -> None:
    segs = _segments(7)
    want = encode_inline(segs, 3)
    pool.start_all()
    for round_ in range(3):
        os.kill(pool.pids()[0], signal.SIGKILL)
        _same(encode_many(pool, segs, 3), want)
        assert pool.replaced == round_ + 1
    _same(encode_many(pool, segs, 3), want)  # the replacements work


def test_job_beyond_the_arena_cap_runs_inline() -> None:
    p = WorkerPool(1, 1 << 16)  # 64 KiB: a 3,000-point segment does not fit
    try:
        segs = _segments(3)
        _same(encode_many(p, segs, 3), encode_inline(segs, 3))
        assert p.replaced == 0
    finally:
        p.close()


def _write(eng: Engine, n: int) -> tuple[np.ndarray, np.ndarray]:
    ts = np.arange(n, dtype=np.int64) * 1000
    v = np.round(np.sin(np.arange(n) / 300.0) * 50, 3)
    v[::977] = np.random.default_rng(1).normal(size=v[::977].shape[0])  # some irregular blocks
    eng.write(1, ts, v)
    eng.write(2, ts[::3] + 7, v[::3] * 2)
    eng.flush()
    return ts, v


def test_engine_seals_in_workers_and_reads_through_them(tmp_path: Path) -> None:
    inline_cfg = EngineConfig(**SMALL, workers=0, read_workers=0)
    pool_cfg = EngineConfig(**SMALL, workers=2, seal_pool_min_points=1, parallel_min_points=1)
    with Engine.open(tmp_path / "a", inline_cfg) as a, Engine.open(tmp_path / "b", pool_cfg) as b:
        ts, v = _write(a, 200_000)
        _write(b, 200_000)
        assert b._procs is not None and len(b._procs.pids()) == 2
        for tag in (1, 2):
            pa, pb = a.query(tag, 0, 1 << 60), b.query(tag, 0, 1 << 60)
            assert pa.timestamps.tobytes() == pb.timestamps.tobytes()
            assert pa.values.tobytes() == pb.values.tobytes()
            assert pa.qualities.tobytes() == pb.qualities.tobytes()
        got = b.query(1, 0, 1 << 60)
        assert np.array_equal(got.timestamps, ts) and np.array_equal(got.values, v)
        # The same blocks, byte for byte: the index rows agree on every body CRC.
        crcs_a = [e.body_crc for e in a._tags[1].blocks]
        assert crcs_a == [e.body_crc for e in b._tags[1].blocks] and len(crcs_a) == 200
        # A worker killed between reads: the next read is still whole and right.
        os.kill(b._procs.pids()[0], signal.SIGKILL)
        again = b.query(1, 0, 1 << 60)
        assert again.values.tobytes() == got.values.tobytes()
        # Sealing after the death: the replacement encodes.
        b.write(1, ts + ts[-1] + 1000, v)
        b.flush()
        assert b.query(1, 0, 1 << 60).timestamps.shape[0] == 400_000
    with Engine.open(tmp_path / "b", pool_cfg) as b:  # reopened: everything is there
        assert b.query(1, 0, 1 << 60).timestamps.shape[0] == 400_000


def test_corrupt_block_is_reported_through_the_pool(tmp_path: Path) -> None:
    cfg = EngineConfig(**SMALL, workers=2, seal_pool_min_points=1, parallel_min_points=1)
    with Engine.open(tmp_path / "c", cfg) as eng:
        _write(eng, 20_000)
        ref = eng._store.ref(eng._tags[1].blocks[-1])  # decoded by a worker, not the caller
        with open(ref.path, "r+b") as f:
            f.seek(ref.offset + ref.length // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
        with pytest.raises(CorruptionError):
            eng.query(1, 0, 1 << 60)
        assert eng._procs is not None and eng._procs.replaced == 0


def test_reads_beyond_the_arena_cap_decode_inline(tmp_path: Path) -> None:
    cap = 256 * 1024  # 15 K points of columns: each worker's part of the query is bigger
    cfg = EngineConfig(**SMALL, workers=2, parallel_min_points=1, arena_max_bytes=cap)
    with Engine.open(tmp_path / "d", cfg) as eng:
        ts, v = _write(eng, 100_000)
        eng._reader.warm_up()
        assert eng._procs is not None
        before = _jobs(eng._procs)
        got = eng.query(1, 0, 1 << 60)  # parts of ~33 K points: over the cap, inline
        assert np.array_equal(got.timestamps, ts) and np.array_equal(got.values, v)
        assert _jobs(eng._procs) == before
        small = eng.query(1, 0, 20_000 * 1000)  # 20 K points: parts of ~7 K fit
        assert np.array_equal(small.values, v[:20_000])
        assert _jobs(eng._procs) > before  # that one went through the workers
        with eng._procs.take(2) as ws:
            assert all(a.size <= cap for w in ws for a in w.arenas.values())


def _jobs(pool: WorkerPool) -> int:
    with pool.take(pool.size) as ws:
        return sum(w.jobs for w in ws)
