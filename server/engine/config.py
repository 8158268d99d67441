"""Engine tuning knobs and the on-disk geometry chosen when a data directory is created."""

from __future__ import annotations

from dataclasses import dataclass

EXTENT = 16 * 1024
"""Smallest aligned unit on disk: container headers, chunks and meta regions are multiples of it."""


@dataclass(frozen=True)
class EngineConfig:
    """Settings for :class:`xtsdb.server.engine.Engine`.

    The geometry fields (``chunk_size``, ``chunks_per_container``,
    ``meta_extents``) are fixed when a data directory is created and read back
    from its ``xtsdb.meta`` afterwards; the others may change at every open.
    """

    # -- geometry (fixed at creation) --
    chunk_size: int = 64 * 1024 * 1024
    chunks_per_container: int = 16
    meta_extents: int = 16  # chunk header + block directory; 16 extents hold ~4,000 entries

    # -- write path --
    fsync: bool = True  # False: WAL writes reach the OS but are not fsynced (documented risk)
    wal_segment_bytes: int = 64 * 1024 * 1024
    wal_checkpoint_bytes: int = 256 * 1024 * 1024  # WAL size that forces all MemBuffers to seal
    block_points: int = 8192  # a tag's MemBuffer is sealed into a block at this many points
    zstd_level: int = 3
    max_memory_points: int = 32_000_000  # writers wait for the sealer beyond this (~550 MB)

    # -- retention --
    retention_us: int = 0  # 0 keeps data forever; else chunks older than this are retired
    retention_check_s: float = 60.0  # how often the background thread looks
    retention_grace_s: float = 60.0  # a retired chunk is reused only after this long

    # -- read path --
    read_workers: int = 2  # deprecated: 0 keeps every read inline; the pool size is `workers`
    # Queries touching fewer disk points decode inline. Measured by
    # `python -m bench.engine --workers` (bench/results/workers.txt): on the
    # 2-core reference machine at load ~2, the caller + 2 workers lose to inline
    # decoding up to 4 M points (1.1-2.5x) and win at 8 M (0.75x); under load ~8
    # from other jobs the crossover moved to 0.5-4 M, scheduling noise. The quiet
    # run's figure is the default. Lower it on machines with more cores.
    parallel_min_points: int = 8_000_000

    # -- worker processes (workers.py): block encoding at seal time, large reads --
    workers: int = -1  # -1: one per core this process may use; 0: everything inline
    arena_max_bytes: int = 128 * 1024 * 1024  # cap of each of a worker's 2 arenas
    seal_pool_min_points: int = 65_536  # rounds with fewer encode inline (bench.engine --workers)

    # -- compaction (compaction.py) --
    compaction: bool = True  # merge overlapping/small blocks and apply deletes in the background
    compaction_interval_s: float = 10.0  # how often the compactor looks for tags to merge
    compaction_rate: int = 2_000_000  # points rewritten per second at most (0: no pause)

    def __post_init__(self) -> None:
        if self.chunk_size % EXTENT or self.chunk_size < 4 * EXTENT:
            raise ValueError(f"chunk_size must be a multiple of {EXTENT} and >= 4 extents")
        if not 1 <= self.meta_extents < self.chunk_size // EXTENT:
            raise ValueError("meta_extents must leave room for data in a chunk")
        if self.chunks_per_container < 1:
            raise ValueError("chunks_per_container must be >= 1")
        if self.block_points < 1:
            raise ValueError("block_points must be >= 1")
        if self.workers < -1:
            raise ValueError("workers must be >= 0 (or -1: one per core)")
