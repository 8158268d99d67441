"""Per-tag in-memory state: unsealed buffers, published blocks, tombstones.

Lists are replaced rather than mutated wherever a reader may hold them, so a
query's snapshot (taken under the engine's state lock) stays consistent after
the lock is released.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .container import BlockEntry
from .membuffer import MemBuffer
from .wal_records import WriteBatch


class TagState:
    __slots__ = ("_arrays", "active", "blocks", "policy", "sealing", "tombstones", "version")

    def __init__(self) -> None:
        self.active = MemBuffer()
        self.sealing: list[MemBuffer] = []
        self.blocks: list[BlockEntry] = []  # in seq order: later blocks win ties
        self.tombstones: list[BlockEntry] = []  # deletes that mask older blocks
        self.policy = "last"  # duplicate policy from the catalog: last, first or reject
        self.version = 0  # bumped on every write, guards the last-value cache
        self._arrays: tuple[int, np.ndarray, np.ndarray] | None = None

    def replace_blocks(self, blocks: list[BlockEntry], tombstones: list[BlockEntry]) -> None:
        """New lists (a reader's snapshot of the old ones stays valid)."""
        self.blocks, self.tombstones, self._arrays = blocks, tombstones, None
        self.version += 1

    def block_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """first_ts / last_ts of ``blocks`` as arrays (rebuilt only when blocks changed)."""
        n = len(self.blocks)
        if self._arrays is None or self._arrays[0] != n:
            firsts = np.fromiter((b.first_ts for b in self.blocks), np.int64, n)
            lasts = np.fromiter((b.last_ts for b in self.blocks), np.int64, n)
            self._arrays = (n, firsts, lasts)
        return self._arrays[1], self._arrays[2]


def run_tops(batch: WriteBatch) -> tuple[list[int], np.ndarray]:
    """Per run: the newest timestamp and the index of its last occurrence (later wins)."""
    ts, bounds = batch.timestamps, batch.run_bounds
    starts = bounds[:-1]
    if starts.shape[0] <= 16:  # few long runs: no need for batch-sized temporaries
        b = bounds.tolist()
        idx = [b[k + 1] - 1 - int(np.argmax(ts[b[k] : b[k + 1]][::-1])) for k in range(len(b) - 1)]
        pos = np.array(idx, dtype=np.int64)
    else:
        top = np.maximum.reduceat(ts, starts)
        at_top = ts == np.repeat(top, np.diff(bounds))
        pos = np.maximum.reduceat(np.where(at_top, np.arange(ts.shape[0]), -1), starts)
    return ts[pos].tolist(), pos


@dataclass
class BlockTotals:
    """Running totals of the published data blocks (under the engine's state lock).

    Kept as blocks are published and retired so that ``stats()``, which every
    metrics scrape and readiness probe calls, never walks the whole directory.
    """

    blocks: int = 0
    points: int = 0
    bytes: int = 0

    def add(self, entries: Iterable[BlockEntry], sign: int = 1) -> None:
        for e in entries:
            self.blocks += sign
            self.points += sign * e.count
            self.bytes += sign * e.body_len
