"""What a data directory costs on disk (du), not only what its blocks hold.

A chunk reserves disk space ahead of its writes (posix_fallocate), so a block
never lands in unallocated space. The reservation must follow the fill: a
small database should not carry megabytes of allocated, never-written space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xtsdb.server.engine.config import EXTENT, EngineConfig
from xtsdb.server.engine.engine import Engine
from xtsdb.server.engine.store import RESERVE_MAX, reserve_target


def _allocated(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*.xtc"))


def test_reserve_target_follows_the_fill() -> None:
    chunk = 64 * 1024 * 1024
    for end in (1, EXTENT - 1, EXTENT, 300_000, 5_000_000, 40_000_000, chunk - 1, chunk):
        target = reserve_target(end, chunk)
        assert end <= target <= chunk
        assert target % EXTENT == 0
        # ahead of the fill by about 1/64 of it (at least an extent, at most 4 MiB)
        assert target - end <= min(RESERVE_MAX + EXTENT, max(2 * EXTENT, end // 64 + EXTENT))


def test_a_small_database_is_not_rounded_up_to_megabytes(tmp_path: Path) -> None:
    eng = Engine.open(tmp_path / "db", EngineConfig())
    try:
        rng = np.random.default_rng(7)
        n = 200_000
        ts = np.arange(n, dtype=np.int64) * 1_000_000
        values = np.round(np.cumsum(rng.normal(size=n)), 3)  # ~1 byte a point once encoded
        for tag in range(1, 21):
            eng.write(tag, ts[: n // 20] + tag, values[: n // 20])
        eng.flush()
        stats = eng.stats()
        used = _allocated(tmp_path / "db")
    finally:
        eng.close()
    meta = EngineConfig().meta_extents * EXTENT
    blocks = int(stats["block_bytes"])
    assert blocks > 150_000  # the data is really there
    # Allocated: the container header, the chunk's meta region, the blocks and
    # a reservation ahead of them that follows the fill (was a 4 MiB step).
    ahead = reserve_target(meta + blocks, 64 * 1024 * 1024) - (meta + blocks)
    assert ahead <= 2 * EXTENT
    assert used <= EXTENT + meta + blocks + ahead + EXTENT, (used, blocks)


def _index_rows(db: Path) -> int:
    """Block rows readable from the index file alone (a copy without its -wal)."""
    import shutil
    import sqlite3

    copy = db.parent / "index-copy.sqlite3"
    shutil.copyfile(db / "index.sqlite3", copy)
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute("SELECT count(*) FROM blocks").fetchone()[0])
    finally:
        conn.close()
        copy.unlink()


def _write_blocks(eng: Engine, tags: int, points: int) -> None:
    ts = np.arange(points, dtype=np.int64) * 1_000_000
    values = np.round(np.cumsum(np.random.default_rng(3).normal(size=points)), 3)
    for tag in range(1, tags + 1):
        eng.write(tag, ts, values)


def test_a_flush_folds_the_index_wal_into_its_file(tmp_path: Path) -> None:
    # SQLite checkpoints by itself only at 1,000 pages: a small index lived in its
    # WAL, where every later version of a page is another copy (du counted it twice).
    db = tmp_path / "db"
    eng = Engine.open(db, EngineConfig(block_points=1_000))
    try:
        _write_blocks(eng, 200, 3_000)
        eng.flush()
        wal = db / "index.sqlite3-wal"
        assert not wal.exists() or wal.stat().st_size == 0
        assert _index_rows(db) == int(eng.stats()["blocks"]) == 600
    finally:
        eng.close()


def test_an_idle_sealer_checkpoints_the_index(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import time

    from xtsdb.server.engine import sealing

    monkeypatch.setattr(sealing, "IDLE_INDEX_CHECKPOINT_S", 0.0)
    db = tmp_path / "db"
    eng = Engine.open(db, EngineConfig(block_points=1_000))
    try:
        _write_blocks(eng, 50, 2_000)  # full MemBuffers: the sealer seals them unasked
        eng.commit()
        wal = db / "index.sqlite3-wal"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if int(eng.stats()["blocks"]) == 100 and wal.exists() and wal.stat().st_size == 0:
                break
            time.sleep(0.1)
        assert wal.stat().st_size == 0, "the index WAL was never checkpointed"
        assert _index_rows(db) == 100
    finally:
        eng.close()
