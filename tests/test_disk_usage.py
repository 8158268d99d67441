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
