"""The frames of the replicated write log: what a node publishes and every replica applies.

One byte of kind, then the body:

- ``W``: a :class:`~xtsdb.server.engine.wal_records.WriteBatch` payload, exactly
  the WAL record the engine writes (validated by the publishing node);
- ``D``: a range delete, ``<I q q``: tag id, start, end (microseconds).

Applying a suffix of the log again, in order, on top of what it already
applied changes nothing: writes are upserts by timestamp in log order, and a
delete applied again is followed again by every write that came after it
(see docs/cluster.md, Guarantees).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from xtsdb.protocol.errors import CorruptionError
from xtsdb.server.engine.wal_records import WriteBatch

_DELETE = struct.Struct("<Iqq")
_POINT_BYTES = 8 + 8 + 1 + 8  # timestamp, value, quality, and at worst a run of its own
_OVERHEAD = 256  # the kind byte, the record header, NATS headers: well under this


@dataclass(frozen=True)
class Delete:
    tag: int
    start: int
    end: int


Frame = WriteBatch | Delete


def encode(frame: Frame) -> bytes:
    if isinstance(frame, WriteBatch):
        return b"W" + bytes(frame.payload)
    return b"D" + _DELETE.pack(frame.tag, frame.start, frame.end)


def decode(data: bytes) -> Frame:
    kind, body = data[:1], data[1:]
    try:
        if kind == b"W":
            return WriteBatch.from_payload(bytearray(body))
        if kind == b"D":
            return Delete(*_DELETE.unpack(body))
    except struct.error as exc:
        raise CorruptionError(f"write-log frame {kind!r}: {exc}") from None
    raise CorruptionError(f"write-log frame of unknown kind {kind!r}")


def split(batch: WriteBatch, shards: int, max_bytes: int) -> list[tuple[int, WriteBatch]]:
    """``batch`` as ``(shard, part)`` frames: by shard (tag id modulo ``shards``), each
    part under ``max_bytes`` encoded (NATS' max_payload), write order kept per tag."""
    if batch.n_points == 0:
        return []
    run_shards = batch.run_tags.astype(np.int64) % shards
    if (run_shards == run_shards[0]).all():
        by_shard = [(int(run_shards[0]), batch)]
    else:
        counts = np.diff(batch.run_bounds)
        point_shard = np.repeat(run_shards, counts)
        point_tag = np.repeat(batch.run_tags, counts)
        by_shard = []
        for shard in np.unique(run_shards).tolist():
            sel = point_shard == shard
            part = WriteBatch.build(
                point_tag[sel], batch.timestamps[sel], batch.values[sel], batch.qualities[sel]
            )
            by_shard.append((int(shard), part))
    per_frame = max(1, (max_bytes - _OVERHEAD) // _POINT_BYTES)
    out: list[tuple[int, WriteBatch]] = []
    for shard, part in by_shard:
        if len(part.payload) + _OVERHEAD <= max_bytes:
            out.append((shard, part))
            continue
        tags = np.repeat(part.run_tags, np.diff(part.run_bounds))
        for lo in range(0, part.n_points, per_frame):
            hi = lo + per_frame
            piece = WriteBatch.build(
                tags[lo:hi], part.timestamps[lo:hi], part.values[lo:hi], part.qualities[lo:hi]
            )
            out.append((shard, piece))
    return out
