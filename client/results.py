"""What ``query`` and ``last`` return: numpy columns with a few conveniences."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
UInt8Array = npt.NDArray[np.uint8]
UInt32Array = npt.NDArray[np.uint32]

PANDAS_HINT = "pip install 'xtsdb[pandas]'"


def _pandas() -> Any:
    # Lazy: pandas is an optional extra and costs ~0.3 s to import.
    try:
        import pandas
    except ImportError as exc:
        raise ImportError(
            f"to_pandas() needs pandas, which is not installed: {PANDAS_HINT}"
        ) from exc
    return pandas


@dataclass(frozen=True)
class QueryResult:
    """Points of one tag with ``start <= ts < end``, sorted by timestamp.

    The arrays may be read-only views of the received message; copy them to
    modify in place.
    """

    timestamps: Int64Array
    """Microseconds since the Unix epoch (UTC)."""
    values: Float64Array
    qualities: UInt8Array
    stats: dict[str, int] = field(default_factory=dict)
    """Read statistics of the query (blocks read and skipped, points from disk/memory)."""

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def datetimes(self) -> npt.NDArray[np.datetime64]:
        """The timestamps as ``datetime64[us]`` (UTC, as numpy datetimes have no zone)."""
        return self.timestamps.view("datetime64[us]")

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``: ``value`` and ``quality`` columns, a UTC ``time`` index."""
        pd = _pandas()
        index = pd.DatetimeIndex(pd.to_datetime(self.timestamps, unit="us", utc=True), name="time")
        return pd.DataFrame({"value": self.values, "quality": self.qualities}, index=index)


@dataclass(frozen=True)
class LastResult:
    """The latest point of each requested tag that has data; others are absent."""

    tags: UInt32Array
    timestamps: Int64Array
    values: Float64Array
    qualities: UInt8Array

    def __len__(self) -> int:
        return int(self.tags.shape[0])

    def to_dict(self) -> dict[int, tuple[int, float, int]]:
        """``{tag: (timestamp_us, value, quality)}``."""
        return {
            t: (ts, v, q)
            for t, ts, v, q in zip(
                self.tags.tolist(),
                self.timestamps.tolist(),
                self.values.tolist(),
                self.qualities.tolist(),
                strict=True,
            )
        }
