"""Container files, chunk slots, chunk headers and the block directory (on-disk format v2).

A container is a preallocated file: one extent of header, then ``n_chunks``
fixed-size chunk slots, so chunk ``s`` of container ``c`` starts at
``EXTENT + s * chunk_size`` and a scan needs no index. Byte layout
(little-endian):

Container header, offset 0 (one extent)::

    0  magic "XTSCONT1" | 8 version u16 | 10 pad u16 | 12 n_chunks u32
    16 chunk_size u64   | 24 meta_extents u32 | 28 container_no u32
    32 instance_id 16 bytes | 48 crc32 of bytes 0..47 u32

Chunk meta region (``meta_extents`` extents at the start of the chunk)::

    0   chunk header: magic "XTSCHNK1" | version u16 | pad u16 | generation u32
        | chunk_id u64 | instance_id 16 | crc32 of bytes 0..39 u32       (44 bytes)
    64  chunk states, one 8-byte word each: ALLOCATED, SEALED, DEPRECATED, FREE.
        Write-once: 0xFF * 8 = not set, the state's own 8-byte pattern = set.
        Anything else is damage, decided by witnesses (see chunkscan.py),
        so one changed byte can never turn "set" into "unset" or back.
    128 seal record, written once when the chunk is sealed:
        n_blocks u32 | data_end u64 | min_ts i64 | max_ts i64 | dir_check u32 | crc32 u32
        dir_check is a CRC32 over the first n_blocks directory entries *without*
        their own CRCs (a CRC over records that end in their CRC is a constant).
    256 block directory: ENTRY_SIZE bytes per data block, in seal order.

Data bodies are packed back to back after the meta region; a directory entry
gives each body's offset (from the chunk start), length and CRC. An entry is
written once, after its body, when the block is sealed; the hot path never
rewrites metadata. In an unsealed chunk the directory ends at the first entry
whose CRC fails or whose ``seq`` does not increase, unless valid entries follow
it: then that entry is damage (reported, restored from the index if it can be),
never the end.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from xtsdb.protocol.errors import CorruptionError, DiskFull, StorageError

from .config import EXTENT
from .fsync import fsync_path

FORMAT_VERSION = 2  # v2: 8-byte state words, a directory check that sees every row
CONTAINER_MAGIC = b"XTSCONT1"
CHUNK_MAGIC = b"XTSCHNK1"

_CONTAINER = struct.Struct("<8sHHIQII16s")  # + crc u32
CONTAINER_HEADER_SIZE = _CONTAINER.size + 4
TMP_SUFFIX = ".tmp"  # a container file being made (renamed into place when whole)
CHUNK_HEADER = struct.Struct("<8sHHIQ16s")  # + crc u32
SEAL_RECORD = struct.Struct("<IQqqI")  # + crc u32
DIR_ENTRY = struct.Struct("<IBBHqqIIQIIQQq4x")  # + crc u32 -> 80 bytes
U32 = struct.Struct("<I")

FLAGS_OFFSET = 64
SEAL_OFFSET = 128
DIR_OFFSET = 256
ENTRY_SIZE = DIR_ENTRY.size + 4

FLAG_ALLOCATED, FLAG_SEALED, FLAG_DEPRECATED, FLAG_FREE = range(4)
FLAG_NAMES = ("ALLOCATED", "SEALED", "DEPRECATED", "FREE")
STATE_WORD = 8
STATE_BYTES = 4 * STATE_WORD
# No set pattern holds a 0xFF byte, so turning unset into set (or back) takes 8 changed bytes.
SET_WORDS = (b"XTSALLOC", b"XTSSEALD", b"XTSDEPRC", b"XTSFREE!")
UNSET_WORD = b"\xff" * STATE_WORD
SET, UNSET, DAMAGED = "set", "unset", "damaged"

BLOCK_SORTED = 0x01  # timestamps strictly increasing (every block this engine writes)
# A tombstone is a directory entry without a body: points of its tag in
# [first_ts, last_ts] held by blocks with seq < mask_seq are deleted. Living in
# the directory, it is found by the same scan that finds blocks, so an index
# rebuild can never revive deleted points.
BLOCK_TOMBSTONE = 0x02
CODEC_NONE = 0


def crc32(data: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Geometry:
    chunk_size: int
    n_chunks: int
    meta_extents: int

    @property
    def meta_bytes(self) -> int:
        return self.meta_extents * EXTENT

    @property
    def dir_capacity(self) -> int:
        return (self.meta_bytes - DIR_OFFSET) // ENTRY_SIZE

    @property
    def file_size(self) -> int:
        return EXTENT + self.n_chunks * self.chunk_size

    def chunk_base(self, slot: int) -> int:
        return EXTENT + slot * self.chunk_size


_TAIL = "first_ts last_ts count body_len body_off body_crc generation seq max_lsn mask_seq"
_entry_tail = attrgetter(*_TAIL.split())


@dataclass(frozen=True)
class BlockEntry:
    """One directory entry: where a sealed block is and what it holds."""

    chunk_id: int
    index: int  # position in the chunk's directory
    tag_id: int
    codec: int
    flags: int
    first_ts: int
    last_ts: int
    count: int
    body_len: int
    body_off: int  # from the chunk start
    body_crc: int
    generation: int
    seq: int  # database-wide seal order: a higher seq is a later write
    max_lsn: int  # newest WAL record whose points are in this block
    mask_seq: int = 0  # tombstones only: blocks with a lower seq are masked

    @property
    def is_tombstone(self) -> bool:
        return bool(self.flags & BLOCK_TOMBSTONE)

    def pack_body(self) -> bytes:
        """The entry without its own CRC (raises ``struct.error`` on out-of-range fields)."""
        # On disk: the fields after (chunk_id, index), with a zero pad after ``flags``.
        return DIR_ENTRY.pack(self.tag_id, self.codec, self.flags, 0, *_entry_tail(self))

    def pack(self) -> bytes:
        raw = self.pack_body()
        return raw + U32.pack(crc32(raw))

    @classmethod
    def unpack(cls, raw: bytes | memoryview, chunk_id: int, index: int) -> BlockEntry | None:
        """The entry, or None if its CRC fails (torn, or never written)."""
        body = raw[: DIR_ENTRY.size]
        if U32.unpack_from(raw, DIR_ENTRY.size)[0] != crc32(body) or not any(body):
            return None
        tag_id, codec, flags, _pad, *rest = DIR_ENTRY.unpack(body)
        return cls(chunk_id, index, tag_id, codec, flags, *rest)


def dir_check(raw: bytes | bytearray | memoryview, n: int) -> int:
    """The seal record's check over ``n`` packed directory entries: their CRCs left out."""
    c = 0
    for i in range(n):
        c = zlib.crc32(raw[i * ENTRY_SIZE : i * ENTRY_SIZE + DIR_ENTRY.size], c)
    return c & 0xFFFFFFFF


def entries_check(entries: list[BlockEntry]) -> int | None:
    """:func:`dir_check` of entries in memory (index rows); None if a field cannot be packed."""
    try:
        return crc32(b"".join(e.pack_body() for e in entries))
    except (struct.error, TypeError):
        return None


@dataclass
class ChunkScan:
    """What a raw scan of one chunk slot found."""

    chunk_id: int
    container_no: int
    slot: int
    allocated: bool
    sealed: bool = False
    deprecated: bool = False
    free: bool = False
    generation: int = 0
    entries: list[BlockEntry] | None = None
    data_end: int = 0
    anomaly: str = ""  # why the directory was cut short, if it was
    seal_n_blocks: int = -1
    seal_dir_crc: int = 0
    damaged: bool = False  # the header is neither valid nor blank: never reuse the slot
    damaged_at: list[int] = field(default_factory=list)  # directory positions that failed
    # States found damaged or contradictory: the value decided from witnesses, to rewrite.
    state_fixes: list[tuple[int, bool]] = field(default_factory=list)
    state_notes: list[str] = field(default_factory=list)


class ContainerFile:
    """One preallocated container file; positional reads and writes only (thread-safe)."""

    def __init__(self, path: Path, container_no: int, geometry: Geometry, fd: int) -> None:
        self.path = path
        self.container_no = container_no
        self.geometry = geometry
        self.fd = fd
        self.dirty = False

    @classmethod
    def create(
        cls, path: Path, container_no: int, geometry: Geometry, instance_id: bytes
    ) -> ContainerFile:
        """Make a container file whole under a temporary name, then rename it into place.

        A crash at any step (create, size, reserve, header, fsync, rename, fsync of the
        directory) leaves either no ``c-*.xtc`` or a whole one; a leftover ``.tmp``
        holds nothing yet and is removed at the next open (:func:`remove_unfinished`).
        """
        if path.exists():
            raise StorageError(f"{path} exists already")
        tmp = path.with_name(path.name + TMP_SUFFIX)
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            # The file has its full size at once (chunk offsets are a multiplication)
            # but is sparse: each chunk reserves real blocks as it fills (reserve()),
            # so a small database does not occupy a whole container on disk.
            os.ftruncate(fd, geometry.file_size)
            _fallocate(fd, 0, EXTENT, path)
            head = _CONTAINER.pack(
                CONTAINER_MAGIC,
                FORMAT_VERSION,
                0,
                geometry.n_chunks,
                geometry.chunk_size,
                geometry.meta_extents,
                container_no,
                instance_id,
            )
            os.pwrite(fd, head + U32.pack(crc32(head)), 0)
            os.fsync(fd)
            os.rename(tmp, path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        fsync_path(path.parent)  # the new name, before any chunk in it is relied on
        return cls(path, container_no, geometry, fd)

    @classmethod
    def open(cls, path: Path, instance_id: bytes) -> ContainerFile:
        fd = os.open(path, os.O_RDWR)
        try:
            raw = os.pread(fd, CONTAINER_HEADER_SIZE, 0)
            if len(raw) < CONTAINER_HEADER_SIZE or raw[:8] != CONTAINER_MAGIC:
                raise CorruptionError(f"{path}: not an xtsdb container (bad magic)")
            if U32.unpack_from(raw, _CONTAINER.size)[0] != crc32(raw[: _CONTAINER.size]):
                raise CorruptionError(f"{path}: container header CRC mismatch")
            _magic, version, _, n_chunks, chunk_size, meta_extents, no, inst = (
                _CONTAINER.unpack_from(raw)
            )
            if version != FORMAT_VERSION:
                raise CorruptionError(f"{path}: container format version {version} unsupported")
            if inst != instance_id:
                raise CorruptionError(f"{path}: container belongs to another database instance")
            geometry = Geometry(chunk_size, n_chunks, meta_extents)
            if os.fstat(fd).st_size < geometry.file_size:
                raise CorruptionError(f"{path}: container file is truncated")
        except BaseException:
            os.close(fd)
            raise
        return cls(path, no, geometry, fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def sync(self) -> None:
        if self.dirty:
            try:
                os.fdatasync(self.fd)
            except OSError as exc:
                raise _storage_error(exc, f"fsync of {self.path}") from exc
            self.dirty = False

    def reserve(self, slot: int, start: int, end: int) -> None:
        """Allocate real blocks for bytes ``start:end`` of a chunk before writing them.

        Running out of disk then shows up here, before a block is half written.
        """
        _fallocate(self.fd, self.geometry.chunk_base(slot) + start, end - start, self.path)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        try:
            written = os.pwrite(self.fd, data, offset)
        except OSError as exc:
            raise _storage_error(exc, f"write to {self.path}") from exc
        if written != len(data):
            raise StorageError(f"short write to {self.path}")
        self.dirty = True

    def read_body(self, slot: int, entry: BlockEntry) -> bytes:
        """The block body, CRC-checked: a mismatch is an error, never data."""
        body = os.pread(self.fd, entry.body_len, self.geometry.chunk_base(slot) + entry.body_off)
        if len(body) != entry.body_len or crc32(body) != entry.body_crc:
            raise CorruptionError(
                f"block CRC mismatch: {self.path.name} chunk {entry.chunk_id} entry {entry.index}"
                f" (tag {entry.tag_id}, {entry.count} points)"
            )
        return body

    def read_body_unchecked(self, slot: int, entry: BlockEntry) -> bytes:
        return os.pread(self.fd, entry.body_len, self.geometry.chunk_base(slot) + entry.body_off)

    # -- chunk state -----------------------------------------------------

    def format_chunk(self, slot: int, chunk_id: int, generation: int, instance_id: bytes) -> None:
        base = self.geometry.chunk_base(slot)
        self.reserve(slot, 0, self.geometry.meta_bytes)
        # Zero the whole meta region first: a reused slot must not show stale entries.
        self.pwrite(bytes(self.geometry.meta_bytes), base)
        head = CHUNK_HEADER.pack(CHUNK_MAGIC, FORMAT_VERSION, 0, generation, chunk_id, instance_id)
        self.pwrite(head + U32.pack(crc32(head)), base)
        self.pwrite(SET_WORDS[FLAG_ALLOCATED] + UNSET_WORD * 3, base + FLAGS_OFFSET)

    def set_flag(self, slot: int, flag: int) -> None:
        self.write_state(slot, flag, True)

    def write_state(self, slot: int, flag: int, value: bool) -> None:
        """Write one state word; ``value=False`` only repairs a word found damaged."""
        word = SET_WORDS[flag] if value else UNSET_WORD
        self.pwrite(word, self.geometry.chunk_base(slot) + FLAGS_OFFSET + flag * STATE_WORD)

    def write_entry(self, slot: int, entry: BlockEntry) -> None:
        off = self.geometry.chunk_base(slot) + DIR_OFFSET + entry.index * ENTRY_SIZE
        self.pwrite(entry.pack(), off)

    def write_seal(
        self, slot: int, entries: list[BlockEntry], data_end: int, n_blocks: int | None = None
    ) -> int:
        """Write the seal record over directory positions ``0..n_blocks-1``; returns its check.

        Positions without an entry (damage recovery could not restore) are
        checked as the bytes on disk, so the seal describes the directory as it is.
        """
        n = len(entries) if n_blocks is None else n_blocks
        known = {e.index: e.pack() for e in entries}
        if len(known) < n:
            base = self.geometry.chunk_base(slot) + DIR_OFFSET
            raw = bytearray(os.pread(self.fd, n * ENTRY_SIZE, base))
            for i, packed in known.items():
                raw[i * ENTRY_SIZE : (i + 1) * ENTRY_SIZE] = packed
            check = dir_check(raw, n)
        else:
            check = crc32(b"".join(known[i][: DIR_ENTRY.size] for i in range(n)))
        min_ts = min((e.first_ts for e in entries), default=0)
        max_ts = max((e.last_ts for e in entries), default=0)
        rec = SEAL_RECORD.pack(n, data_end, min_ts, max_ts, check)
        self.pwrite(rec + U32.pack(crc32(rec)), self.geometry.chunk_base(slot) + SEAL_OFFSET)
        return check

    def read_meta(self, slot: int, length: int | None = None) -> bytes:
        g = self.geometry
        return os.pread(self.fd, g.meta_bytes if length is None else length, g.chunk_base(slot))

    def slot_blank(self, slot: int) -> bool:
        """True if the meta region and the first data page of a slot are all zeros.

        Only then does a blank chunk header mean "never allocated": the file is
        sparse, so a slot never used reads as zeros everywhere.
        """
        g = self.geometry
        raw = os.pread(self.fd, g.meta_bytes + 4096, g.chunk_base(slot))
        return not any(raw)

    def scan_chunk(self, slot: int, instance_id: bytes, *, entries: bool = True) -> ChunkScan:
        """Read one chunk's meta region and report what is valid in it (see chunkscan)."""
        from .chunkscan import scan_chunk

        return scan_chunk(self, slot, instance_id, entries=entries)


def _fallocate(fd: int, offset: int, length: int, path: Path) -> None:
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        raise _storage_error(exc, f"reserving space in {path}") from exc


def _storage_error(exc: OSError, what: str) -> StorageError:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"no space left on device during {what}")
    return StorageError(f"{what} failed: {exc}")
