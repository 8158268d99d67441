"""What queries return: columnar numpy arrays plus the read statistics of that query."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from xtsdb.protocol.errors import XtsdbError

# The protocol defines both; the engine relies on them: TS_LIMIT keeps the codec's
# delta-of-delta arithmetic inside int64 without overflow checks.
from xtsdb.protocol.messages import GOOD_QUALITY as GOOD_QUALITY
from xtsdb.protocol.messages import TS_LIMIT as TS_LIMIT

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
UInt8Array = npt.NDArray[np.uint8]
UInt32Array = npt.NDArray[np.uint32]


@dataclass
class ReadStats:
    """Counters of one query (and, summed, of the engine's lifetime)."""

    blocks_read: int = 0
    blocks_skipped: int = 0
    points_from_disk: int = 0
    points_from_memory: int = 0

    def add(self, other: ReadStats) -> None:
        self.blocks_read += other.blocks_read
        self.blocks_skipped += other.blocks_skipped
        self.points_from_disk += other.points_from_disk
        self.points_from_memory += other.points_from_memory

    def as_dict(self) -> dict[str, int]:
        return {
            "blocks_read": self.blocks_read,
            "blocks_skipped": self.blocks_skipped,
            "points_from_disk": self.points_from_disk,
            "points_from_memory": self.points_from_memory,
        }


@dataclass
class Points:
    """Points of one tag sorted by timestamp, one value per timestamp."""

    timestamps: Int64Array
    values: Float64Array
    qualities: UInt8Array
    stats: ReadStats = field(default_factory=ReadStats)
    more: bool = False  # the limit cut the result short: more points are in the range

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    @classmethod
    def empty(cls) -> Points:
        return cls(
            np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.uint8), ReadStats()
        )


@dataclass
class LastPoints:
    """The latest point of each tag that has one; tags with no data are absent.

    A tag whose newest point could not be read (a damaged block) is absent as
    well, and ``errors`` says why: absence alone would read as "no data".
    """

    tag_ids: UInt32Array
    timestamps: Int64Array
    values: Float64Array
    qualities: UInt8Array
    errors: dict[int, XtsdbError] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.tag_ids.shape[0])
