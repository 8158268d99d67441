"""The last-value file: what ``last()`` knows, kept across a clean restart.

Without it the first ``last()`` after a restart reads the newest block of every
tag it names, a cost far above a warm ``last()`` (``bench/last.py`` measures
both, with and without the file). So a clean
close, after its final seal (every point is then in a block), writes each
cached newest point to ``last-values.bin``, and the next open loads it.

It is a cache and never a source of truth: a missing, torn or damaged file (it
ends with a CRC) is ignored and the values are computed again as before. An
entry is used only if its tag's blocks are the very ones it was computed from:
the file records the highest block ``seq`` in the database, and per tag how
many blocks and tombstones it had. Blocks are only ever added (with a higher
``seq``) or removed (retention), so equal counts and no ``seq`` above the
file's mean the same blocks, hence the same newest point. A tag sealed,
deleted from or trimmed since (say, before a crash) is simply computed again;
WAL records replayed at open update loaded entries as any write does.

Layout (little-endian): magic ``XTSLAST1``, u16 version, 16-byte instance id,
u64 seq, u32 n; then columns of n entries: u32 tag, i64 ts, f64 value,
u8 quality, u32 blocks, u32 tombstones; then a u32 CRC32 of all that precedes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .tagstate import TagState

log = logging.getLogger("xtsdb.engine")

NAME = "last-values.bin"
_MAGIC = b"XTSLAST1"
_VERSION = 1
_HEAD = struct.Struct("<8sH16sQI")
_CRC = struct.Struct("<I")
# tag, ts, value, quality, blocks, tombstones
_COLUMNS = (np.uint32, np.int64, np.float64, np.uint8, np.uint32, np.uint32)

LastValue = tuple[int, float, int]  # (timestamp_us, value, quality)


class LastValues:
    """The newest point of each tag whose value is known, kept as writes arrive.

    Guarded by the engine state's lock (the caller holds it). An absent entry
    means "not known", never "no data": ``last()`` then computes it from the
    tag's blocks and memory (see ``query.ReadPath.last``).
    """

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[int, LastValue] = {}

    def get(self, tag_id: int) -> LastValue | None:
        return self._values.get(tag_id)

    def set(self, tag_id: int, value: LastValue) -> None:
        self._values[tag_id] = value

    def forget(self, tag_id: int) -> None:
        """The cached value may be stale (a delete, a policy change, retention)."""
        self._values.pop(tag_id, None)

    def load(self, path: Path, instance_id: bytes, tags: Mapping[int, TagState]) -> None:
        """Take the entries of the file at ``path`` that still hold for ``tags``."""
        self._values.update(load(path, instance_id, tags))

    def save(self, path: Path, instance_id: bytes, tags: Mapping[int, TagState]) -> None:
        save(path, instance_id, tags, self._values)


def max_seq(tags: Mapping[int, TagState]) -> int:
    """The highest ``seq`` of any block or tombstone (lists are kept in seq order)."""
    return max(
        (lst[-1].seq for t in tags.values() for lst in (t.blocks, t.tombstones) if lst),
        default=0,
    )


def save(
    path: Path,
    instance_id: bytes,
    tags: Mapping[int, TagState],
    values: Mapping[int, LastValue],
) -> None:
    """Write the file for ``values`` (only tags with nothing left in memory)."""
    ids = [t for t in values if t in tags and not tags[t].active.count and not tags[t].sealing]
    rows = [values[t] for t in ids]
    cols: list[np.ndarray] = [
        np.array(ids, np.uint32),
        np.array([r[0] for r in rows], np.int64),
        np.array([r[1] for r in rows], np.float64),
        np.array([r[2] for r in rows], np.uint8),
        np.array([len(tags[t].blocks) for t in ids], np.uint32),
        np.array([len(tags[t].tombstones) for t in ids], np.uint32),
    ]
    head = _HEAD.pack(_MAGIC, _VERSION, instance_id, max_seq(tags), len(ids))
    body = head + b"".join(c.astype(c.dtype.newbyteorder("<")).tobytes() for c in cols)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            data = body + _CRC.pack(zlib.crc32(body))
            if os.write(fd, data) != len(data):
                raise OSError("short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:  # a cache: the next open computes the values again
        log.warning("could not write %s (%s); last() recomputes after the restart", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


def load(path: Path, instance_id: bytes, tags: Mapping[int, TagState]) -> dict[int, LastValue]:
    """The entries of the file that still hold for ``tags``; {} if there is no usable file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("ignoring %s (%s); last() recomputes", path, exc)
        return {}
    cols = _parse(data, instance_id)
    if cols is None:
        log.warning("ignoring %s: damaged or not this database's; last() recomputes", path)
        return {}
    seq, columns = cols
    out: dict[int, LastValue] = {}
    for tag, ts, value, q, n_blocks, n_tombs in zip(*(c.tolist() for c in columns), strict=True):
        t = tags.get(tag)
        if (
            t is None
            or len(t.blocks) != n_blocks
            or len(t.tombstones) != n_tombs
            or (t.blocks and t.blocks[-1].seq > seq)
            or (t.tombstones and t.tombstones[-1].seq > seq)
        ):
            continue  # its blocks changed since the file was written
        out[tag] = (ts, value, q)
    return out


def usable(data: bytes, instance_id: bytes) -> bool:
    """Whether ``data`` is a whole last-value file of this database (``check`` asks)."""
    return _parse(data, instance_id) is not None


def _parse(data: bytes, instance_id: bytes) -> tuple[int, list[np.ndarray]] | None:
    if len(data) < _HEAD.size + _CRC.size:
        return None
    body = data[: -_CRC.size]
    if zlib.crc32(body) != _CRC.unpack_from(data, len(body))[0]:
        return None
    magic, version, instance, seq, n = _HEAD.unpack_from(body)
    widths = sum(np.dtype(dt).itemsize for dt in _COLUMNS)
    if (magic, version, instance) != (_MAGIC, _VERSION, instance_id):
        return None
    if len(body) != _HEAD.size + n * widths:
        return None
    cols, at = [], _HEAD.size
    for dt in _COLUMNS:
        cols.append(np.frombuffer(body, np.dtype(dt).newbyteorder("<"), n, at))
        at += n * np.dtype(dt).itemsize
    return int(seq), cols
