"""A validated columnar write: the unit the WAL logs and the MemBuffers apply.

Validation happens once, when a batch is built, so the server can refuse a bad
request before it is queued for the group commit, and the engine can trust a
batch later. A batch is stored as *runs*: consecutive points of one tag. The
WAL record bytes are the batch's only copy of the data; the arrays handed to
MemBuffers are read-only views into them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from xtsdb.protocol.errors import CorruptionError, InvalidInput

from .points import GOOD_QUALITY, TS_LIMIT, Float64Array, Int64Array, UInt8Array, UInt32Array

RECORD_WRITE = 1
_HEADER = struct.Struct("<BBHII4x")  # type, flags, reserved, n_points, n_runs, pad to 16
MAX_TAG_ID = (1 << 32) - 1


@dataclass(frozen=True)
class WriteBatch:
    """Points of one or many tags; ``run_tags[i]`` owns points ``run_bounds[i]:run_bounds[i+1]``.

    ``payload`` is the WAL record body; the arrays are views into it.
    """

    payload: bytes | bytearray | memoryview
    run_tags: UInt32Array
    run_bounds: Int64Array
    timestamps: Int64Array
    values: Float64Array
    qualities: UInt8Array

    @property
    def n_points(self) -> int:
        return int(self.timestamps.shape[0])

    @classmethod
    def build(
        cls,
        tags: Any,
        timestamps: Any,
        values: Any,
        qualities: Any = None,
    ) -> WriteBatch:
        """Validate user input and pack it; raises :class:`InvalidInput` and changes nothing."""
        ts = _timestamps(timestamps)
        n = ts.shape[0]
        vals = _values(values, n)
        qual = _qualities(qualities, n)
        tag_col = _tags(tags, n)
        if tag_col is None:
            run_tags = np.array([int(tags)], dtype=np.uint32) if n else np.empty(0, np.uint32)
            bounds = np.array([0, n], dtype=np.int64) if n else np.zeros(1, np.int64)
        else:
            run_tags, bounds, order = _runs(tag_col)
            if order is not None:  # interleaved tags: group them, keeping write order per tag
                ts, vals, qual = ts[order], vals[order], qual[order]
        return cls._pack(run_tags, bounds, ts, vals, qual)

    @classmethod
    def _pack(
        cls,
        run_tags: UInt32Array,
        bounds: Int64Array,
        ts: Int64Array,
        vals: Float64Array,
        qual: UInt8Array,
    ) -> WriteBatch:
        n, r = ts.shape[0], run_tags.shape[0]
        size = _HEADER.size + 16 * n + 8 * r + n
        buf = bytearray(size)
        _HEADER.pack_into(buf, 0, RECORD_WRITE, 0, 0, n, r)
        views = _views(buf, n, r)
        views[0][:] = ts
        views[1][:] = vals
        views[2][:] = run_tags
        views[3][:] = np.diff(bounds).astype(np.uint32)
        views[4][:] = qual
        return cls(buf, views[2], bounds, views[0], views[1], views[4])

    @classmethod
    def from_payload(cls, payload: bytes | bytearray | memoryview) -> WriteBatch:
        """Decode a WAL record body written by :meth:`build` (checked by CRC already)."""
        if len(payload) < _HEADER.size:
            raise CorruptionError("WAL write record shorter than its header")
        kind, _flags, _res, n, r = _HEADER.unpack_from(payload, 0)
        if kind != RECORD_WRITE or len(payload) != _HEADER.size + 16 * n + 8 * r + n:
            raise CorruptionError("WAL write record has an inconsistent header")
        ts, vals, run_tags, counts, qual = _views(payload, n, r)
        bounds = np.zeros(r + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        if bounds[-1] != n:
            raise CorruptionError("WAL write record run lengths do not add up")
        return cls(payload, run_tags, bounds, ts, vals, qual)

    def runs(self) -> list[tuple[int, slice]]:
        """``(tag_id, slice)`` per run, in write order."""
        b = self.run_bounds.tolist()
        return [(t, slice(b[i], b[i + 1])) for i, t in enumerate(self.run_tags.tolist())]


def _views(buf: Any, n: int, r: int) -> tuple[Any, Any, Any, Any, Any]:
    off = _HEADER.size
    ts = np.frombuffer(buf, np.int64, n, off)
    off += 8 * n
    vals = np.frombuffer(buf, np.float64, n, off)
    off += 8 * n
    run_tags = np.frombuffer(buf, np.uint32, r, off)
    off += 4 * r
    counts = np.frombuffer(buf, np.uint32, r, off)
    off += 4 * r
    qual = np.frombuffer(buf, np.uint8, n, off)
    return ts, vals, run_tags, counts, qual


def _column(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidInput(f"{what} must be a 1-D array, got {arr.ndim} dimensions")
    return arr


def _timestamps(x: Any) -> Int64Array:
    arr = _column(x, "timestamps")
    if arr.dtype.kind == "f":
        if np.isnan(arr).any():
            raise InvalidInput("timestamps contain NaN; timestamps are integer microseconds")
        raise InvalidInput(f"timestamps must be integer microseconds, got {arr.dtype}")
    if arr.dtype.kind not in "iu":
        if arr.size == 0:
            return np.empty(0, np.int64)
        raise InvalidInput(f"timestamps must be integer microseconds, got {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) >= TS_LIMIT:
        raise InvalidInput("timestamp out of range (|ts| must be < 2**60 us)")
    ts = arr.astype(np.int64, copy=False)
    if ts.size and (int(ts.min()) <= -TS_LIMIT or int(ts.max()) >= TS_LIMIT):
        raise InvalidInput("timestamp out of range (|ts| must be < 2**60 us)")
    return ts


def _values(x: Any, n: int) -> Float64Array:
    arr = _column(x, "values")
    if arr.dtype.kind not in "biuf":
        raise InvalidInput(f"values must be numbers, got {arr.dtype}")
    if arr.shape[0] != n:
        raise InvalidInput(f"values has {arr.shape[0]} elements, timestamps has {n}")
    # NaN and +-inf are stored bit-exact: a historian may use them as markers.
    return arr.astype(np.float64, copy=False)


def _qualities(x: Any, n: int) -> UInt8Array:
    if x is None:
        return np.full(n, GOOD_QUALITY, dtype=np.uint8)
    arr = np.asarray(x)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise InvalidInput("qualities must be a 1-D array of integers 0..255")
    if arr.shape[0] != n:
        raise InvalidInput(f"qualities has {arr.shape[0]} elements, timestamps has {n}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
        raise InvalidInput("qualities must be in 0..255")
    return arr.astype(np.uint8, copy=False)


def _tags(x: Any, n: int) -> UInt32Array | None:
    """None for a single tag id (validated), else the per-point tag column."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        if not 0 <= int(x) <= MAX_TAG_ID:
            raise InvalidInput(f"tag id {int(x)} out of range 0..{MAX_TAG_ID}")
        return None
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise InvalidInput("tags must be an integer tag id or a 1-D integer array")
    if arr.shape[0] != n:
        raise InvalidInput(f"tags has {arr.shape[0]} elements, timestamps has {n}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > MAX_TAG_ID):
        raise InvalidInput(f"tag id out of range 0..{MAX_TAG_ID}")
    return arr.astype(np.uint32, copy=False)


def _runs(tags: UInt32Array) -> tuple[UInt32Array, Int64Array, Int64Array | None]:
    n = tags.shape[0]
    if n == 0:
        return np.empty(0, np.uint32), np.zeros(1, np.int64), None
    starts = np.flatnonzero(tags[1:] != tags[:-1]) + 1
    order = None
    # Many short runs would make applying the batch a loop per point: sort by tag
    # instead (stable, so each tag keeps its points in write order).
    if starts.shape[0] > max(64, n // 16):
        order = np.argsort(tags, kind="stable")
        tags = tags[order]
        starts = np.flatnonzero(tags[1:] != tags[:-1]) + 1
    bounds = np.concatenate(([0], starts, [n])).astype(np.int64)
    return tags[bounds[:-1]].astype(np.uint32), bounds, order


RECORD_DELETE = 2


@dataclass(frozen=True)
class DeleteRecord:
    """Deletes ``[starts[i], ends[i])`` of ``tags[i]``; the WAL record of a delete."""

    payload: bytes | bytearray | memoryview
    tags: UInt32Array
    starts: Int64Array
    ends: Int64Array

    @classmethod
    def build(cls, tag_id: Any, start: Any, end: Any) -> DeleteRecord:
        if _tags(tag_id, 1) is not None:
            raise InvalidInput("delete takes one integer tag id")
        lo, hi = _bound(start, "start"), _bound(end, "end")
        if hi <= lo:
            raise InvalidInput(f"delete range is empty: start {lo} >= end {hi}")
        buf = bytearray(_HEADER.size + 20)
        _HEADER.pack_into(buf, 0, RECORD_DELETE, 0, 0, 1, 0)
        struct.pack_into("<qqI", buf, _HEADER.size, lo, hi, int(tag_id))
        return cls.from_payload(buf)

    @classmethod
    def from_payload(cls, payload: bytes | bytearray | memoryview) -> DeleteRecord:
        kind, _f, _r, n, _ = _HEADER.unpack_from(payload, 0)
        if kind != RECORD_DELETE or len(payload) != _HEADER.size + 20 * n:
            raise CorruptionError("WAL delete record has an inconsistent header")
        off = _HEADER.size
        starts = np.frombuffer(payload, np.int64, n, off)
        ends = np.frombuffer(payload, np.int64, n, off + 8 * n)
        tags = np.frombuffer(payload, np.uint32, n, off + 16 * n)
        return cls(payload, tags, starts, ends)

    def ranges(self) -> list[tuple[int, int, int]]:
        """``(tag_id, start, end)`` per range."""
        return list(zip(self.tags.tolist(), self.starts.tolist(), self.ends.tolist(), strict=True))


def decode_record(payload: bytes | bytearray | memoryview) -> WriteBatch | DeleteRecord:
    """A WAL record body, by its type byte."""
    if len(payload) < _HEADER.size:
        raise CorruptionError("WAL record shorter than its header")
    if payload[0] == RECORD_DELETE:
        return DeleteRecord.from_payload(payload)
    return WriteBatch.from_payload(payload)


def _bound(x: Any, what: str) -> int:
    """A delete bound: an integer, clamped to the timestamp range (so 'everything' is easy)."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise InvalidInput(f"delete {what} must be an integer timestamp")
    return max(-TS_LIMIT, min(TS_LIMIT, int(x)))
