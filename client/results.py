"""What the clients return: numpy columns with a few conveniences, and tag metadata."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from xtsdb.protocol.errors import XtsdbError

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
    errors: dict[int, XtsdbError] = field(default_factory=dict)
    """Tags whose newest point could not be read (a damaged block): absent, with the error."""

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


@dataclass(frozen=True)
class AggregateResult:
    """Aggregates of one tag per time bucket (see docs/historian.md for the rules).

    ``start`` holds the aligned bucket starts (the first may be before the
    requested start); ``values`` one array per aggregate, ``count`` as int64 and
    the others as float64 (NaN where a bucket has no value).
    """

    start: Int64Array
    values: dict[str, npt.NDArray[Any]]

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def __getitem__(self, aggregate: str) -> npt.NDArray[Any]:
        return self.values[aggregate]

    @property
    def datetimes(self) -> npt.NDArray[np.datetime64]:
        """The bucket starts as ``datetime64[us]`` (UTC)."""
        return self.start.view("datetime64[us]")

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``: a column per aggregate, a UTC ``time`` index of bucket starts."""
        pd = _pandas()
        index = pd.DatetimeIndex(pd.to_datetime(self.start, unit="us", utc=True), name="time")
        return pd.DataFrame(dict(self.values), index=index)


@dataclass(frozen=True)
class InterpolateResult:
    """Values of one tag at the requested times, with a status per time.

    ``status`` is 0 (ok), 1 (no data before the time), 2 (the gap to the data
    exceeds ``max_gap``) or 3 (after the last point, ``linear`` only); every
    status but 0 comes with a NaN value.
    """

    STATUS_OK = 0
    STATUS_NO_DATA_BEFORE = 1
    STATUS_GAP = 2
    STATUS_AFTER_LAST = 3

    timestamps: Int64Array
    values: Float64Array
    status: UInt8Array

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``: ``value`` and ``status`` columns, a UTC ``time`` index."""
        pd = _pandas()
        index = pd.DatetimeIndex(pd.to_datetime(self.timestamps, unit="us", utc=True), name="time")
        return pd.DataFrame({"value": self.values, "status": self.status}, index=index)


@dataclass(frozen=True)
class TagInfo:
    """A tag of the server's catalog: its id, its name and its metadata."""

    id: int
    name: str
    unit: str = ""
    description: str = ""
    value_type: str = "float64"
    duplicates: str = "last"
    """Which of two writes of one timestamp is kept: 'last', 'first', or 'reject' the later."""
    retention_us: int = 0
    """This tag's own retention (0: the database's applies)."""
    created_us: int = 0

    @classmethod
    def from_wire(cls, info: dict[str, Any]) -> TagInfo:
        """From a tag map of the protocol; keys this client does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in info.items() if k in known})


class TagPage(NamedTuple):
    """A page of :meth:`~xtsdb.client.Client.search_tags`: the tags, and whether more match."""

    tags: list[TagInfo]
    more: bool
