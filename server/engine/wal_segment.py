"""WAL segment files: the bytes of a segment header and of each record.

On-disk format (all integers little-endian).

A segment is named ``wal-{first_lsn:020d}.log``; ``first_lsn`` is the LSN of its first record
(the name sorts in LSN order). It starts with a 38-byte header::

    offset  size  field
    0       8     magic b"XTSWAL01"
    8       2     format version (u16, currently 1)
    10      16    instance_id (the data directory's identity; a foreign segment is refused)
    26      8     first_lsn (u64, must equal the number in the file name)
    34      4     crc32 of bytes 0..34

followed by records, back to back, each a 16-byte header and its payload::

    offset  size  field
    0       4     payload length (u32, at most MAX_RECORD_PAYLOAD = 1 GiB)
    4       4     crc32 over (the 8 lsn bytes + payload)
    8       8     lsn (u64): the first record's is first_lsn, each next one is exactly +1
    16      n     payload

The record stream built from these files (LSN order, group commit, replay,
torn tails, recycling) is ``wal.py``.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from xtsdb.protocol.errors import CorruptionError, FormatVersionError

FORMAT_VERSION = 1
MAX_RECORD_PAYLOAD = 1 << 30

SEG_MAGIC = b"XTSWAL01"
SEG_HEADER = struct.Struct("<8sH16sQ")
SEGMENT_HEADER_SIZE = SEG_HEADER.size + 4
REC_HEADER = struct.Struct("<IIQ")
RECORD_HEADER_SIZE = REC_HEADER.size
LSN = struct.Struct("<Q")
CRC = struct.Struct("<I")
SEGMENT_NAME = re.compile(r"^wal-(\d{20})\.log$")
# Payloads smaller than this are copied next to their header so a batch of many small records
# is a few large iovecs; bigger ones are handed to the kernel by reference (no Python copy).
COPY_BELOW = 64 * 1024
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16, 1024)


@dataclass
class Segment:
    first_lsn: int
    path: Path
    size: int


def record_crc(lsn: int, payload: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(LSN.pack(lsn)))


def datasync(fd: int) -> None:
    # Looked up at call time so tests can monkeypatch os.fdatasync; macOS has no fdatasync.
    getattr(os, "fdatasync", os.fsync)(fd)


def write_all(fd: int, bufs: Sequence[memoryview | bytes | bytearray], offset: int) -> None:
    """Write byte buffers at ``offset``, coping with IOV_MAX and short writes."""
    pending = [memoryview(b) for b in bufs]
    while pending:
        chunk = pending[:_IOV_MAX]
        n = os.pwritev(fd, chunk, offset)
        if n <= 0:
            raise OSError(errno.EIO, "pwritev wrote nothing")
        offset += n
        while n and pending:  # drop what was written; keep the unwritten rest of a short write
            head = pending[0]
            if n >= head.nbytes:
                n -= head.nbytes
                pending.pop(0)
            else:
                pending[0] = head[n:]
                n = 0


def parse_segment_header(data: bytes, instance_id: bytes, path: Path) -> int | None:
    """first_lsn of a valid header; None if torn/garbage; raises if valid but not ours."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return None
    body, (crc,) = data[: SEG_HEADER.size], CRC.unpack_from(data, SEG_HEADER.size)
    magic, version, inst, first_lsn = SEG_HEADER.unpack(body)
    if magic != SEG_MAGIC or zlib.crc32(body) != crc:
        return None
    if version != FORMAT_VERSION:
        raise FormatVersionError(f"{path}: WAL format version {version}, expected {FORMAT_VERSION}")
    if inst != instance_id:
        raise CorruptionError(f"{path}: segment belongs to instance {inst.hex()}, not ours")
    return int(first_lsn)


def read_record(f: BinaryIO, lsn: int, remaining: int) -> tuple[bytes | None, str | None]:
    """(payload, None) for a valid record, (None, None) at a clean end, else (None, why)."""
    header = f.read(RECORD_HEADER_SIZE)
    if not header:
        return None, None
    if len(header) < RECORD_HEADER_SIZE:
        return None, "short record header"
    length, crc, rec_lsn = REC_HEADER.unpack(header)
    if length > MAX_RECORD_PAYLOAD:
        return None, f"length {length} over the maximum"
    if length > remaining - RECORD_HEADER_SIZE:  # checked before read() allocates `length`
        return None, f"length {length} runs past the end of the file"
    if rec_lsn != lsn:
        return None, f"LSN {rec_lsn} where {lsn} was expected"
    payload = f.read(length)
    if len(payload) < length or record_crc(lsn, payload) != crc:
        return None, "CRC mismatch"
    return payload, None


def encode_records(views: list[memoryview], lsn: int) -> tuple[list[memoryview | bytearray], int]:
    """The batch's bytes as few iovecs; returns them and their total size."""
    bufs: list[memoryview | bytearray] = []
    small = bytearray()
    total = len(views) * RECORD_HEADER_SIZE
    for v in views:
        total += v.nbytes
        small += REC_HEADER.pack(v.nbytes, record_crc(lsn, v), lsn)
        if v.nbytes < COPY_BELOW:
            small += v
        else:
            bufs.append(small)
            bufs.append(v)
            small = bytearray()
        lsn += 1
    if small:
        bufs.append(small)
    return bufs, total
