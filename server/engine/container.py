"""Container files, chunk slots, chunk headers and the block directory (on-disk format v1).

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
    64  state flags, one byte each: ALLOCATED, SEALED, DEPRECATED, FREE.
        Active-low and write-once: 0xFF = not set, 0x00 = set. A state change
        writes one byte, so a torn write cannot move a chunk backwards.
    128 seal record, written once when the chunk is sealed:
        n_blocks u32 | data_end u64 | min_ts i64 | max_ts i64 | dir_crc u32 | crc32 u32
    256 block directory: DIR_ENTRY.size bytes per data block, in seal order.

Data bodies are packed back to back after the meta region; a directory entry
gives each body's offset (from the chunk start), length and CRC. An entry is
written once, after its body, when the block is sealed; the hot path never
rewrites metadata. In an unsealed chunk the directory ends at the first entry
whose CRC fails or whose ``seq`` does not increase.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from xtsdb.protocol.errors import CorruptionError, DiskFull, StorageError

from .config import EXTENT
from .fsync import fsync_path

FORMAT_VERSION = 1
CONTAINER_MAGIC = b"XTSCONT1"
CHUNK_MAGIC = b"XTSCHNK1"

_CONTAINER = struct.Struct("<8sHHIQII16s")  # + crc u32
_CHUNK = struct.Struct("<8sHHIQ16s")  # + crc u32
_SEAL = struct.Struct("<IQqqI")  # + crc u32
DIR_ENTRY = struct.Struct("<IBBHqqIIQIIQQq4x")  # + crc u32 -> 80 bytes
_U32 = struct.Struct("<I")

FLAGS_OFFSET = 64
SEAL_OFFSET = 128
DIR_OFFSET = 256
ENTRY_SIZE = DIR_ENTRY.size + 4

FLAG_ALLOCATED, FLAG_SEALED, FLAG_DEPRECATED, FLAG_FREE = range(4)
_SET, _UNSET = b"\x00", b"\xff"

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

    def pack(self) -> bytes:
        raw = DIR_ENTRY.pack(
            self.tag_id, self.codec, self.flags, 0, self.first_ts, self.last_ts, self.count,
            self.body_len, self.body_off, self.body_crc, self.generation, self.seq, self.max_lsn,
            self.mask_seq,
        )  # fmt: skip
        return raw + _U32.pack(crc32(raw))

    @classmethod
    def unpack(cls, raw: bytes | memoryview, chunk_id: int, index: int) -> BlockEntry | None:
        """The entry, or None if its CRC fails (torn, or never written)."""
        body = raw[: DIR_ENTRY.size]
        if _U32.unpack_from(raw, DIR_ENTRY.size)[0] != crc32(body) or not any(body):
            return None
        f = DIR_ENTRY.unpack(body)
        return cls(chunk_id, index, f[0], f[1], f[2], f[4], f[5], f[6], f[7], f[8], f[9], f[10],
                   f[11], f[12], f[13])  # fmt: skip


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
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            # The file has its full size at once (chunk offsets are a multiplication)
            # but is sparse: each chunk reserves real blocks as it fills (reserve()),
            # so a small database does not occupy a whole container on disk.
            os.ftruncate(fd, geometry.file_size)
            _fallocate(fd, 0, EXTENT, path)
            head = _CONTAINER.pack(
                CONTAINER_MAGIC, FORMAT_VERSION, 0, geometry.n_chunks, geometry.chunk_size,
                geometry.meta_extents, container_no, instance_id,
            )  # fmt: skip
            os.pwrite(fd, head + _U32.pack(crc32(head)), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        fsync_path(path.parent)
        return cls(path, container_no, geometry, fd)

    @classmethod
    def open(cls, path: Path, instance_id: bytes) -> ContainerFile:
        fd = os.open(path, os.O_RDWR)
        try:
            raw = os.pread(fd, _CONTAINER.size + 4, 0)
            if len(raw) < _CONTAINER.size + 4 or raw[:8] != CONTAINER_MAGIC:
                raise CorruptionError(f"{path}: not an xtsdb container (bad magic)")
            if _U32.unpack_from(raw, _CONTAINER.size)[0] != crc32(raw[: _CONTAINER.size]):
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
        head = _CHUNK.pack(CHUNK_MAGIC, FORMAT_VERSION, 0, generation, chunk_id, instance_id)
        flags = _SET + _UNSET * 3
        self.pwrite(head + _U32.pack(crc32(head)), base)
        self.pwrite(flags, base + FLAGS_OFFSET)

    def set_flag(self, slot: int, flag: int) -> None:
        self.pwrite(_SET, self.geometry.chunk_base(slot) + FLAGS_OFFSET + flag)

    def write_entry(self, slot: int, entry: BlockEntry) -> None:
        off = self.geometry.chunk_base(slot) + DIR_OFFSET + entry.index * ENTRY_SIZE
        self.pwrite(entry.pack(), off)

    def write_seal(self, slot: int, entries: list[BlockEntry], data_end: int) -> int:
        """Write the seal record; returns the directory CRC it holds."""
        dir_bytes = b"".join(e.pack() for e in entries)
        min_ts = min((e.first_ts for e in entries), default=0)
        max_ts = max((e.last_ts for e in entries), default=0)
        rec = _SEAL.pack(len(entries), data_end, min_ts, max_ts, crc32(dir_bytes))
        self.pwrite(rec + _U32.pack(crc32(rec)), self.geometry.chunk_base(slot) + SEAL_OFFSET)
        return crc32(dir_bytes)

    def scan_chunk(self, slot: int, instance_id: bytes, *, entries: bool = True) -> ChunkScan:
        """Read one chunk's meta region and report what is valid in it."""
        g = self.geometry
        chunk_id = self.container_no * g.n_chunks + slot
        meta = os.pread(self.fd, g.meta_bytes if entries else DIR_OFFSET, g.chunk_base(slot))
        scan = ChunkScan(chunk_id, self.container_no, slot, allocated=False)
        head = meta[: _CHUNK.size]
        if head[:8] != CHUNK_MAGIC or _U32.unpack_from(meta, _CHUNK.size)[0] != crc32(head):
            if any(meta[: _CHUNK.size + 4]):
                # Not blank, so it was allocated once: the header is damaged (or its
                # formatting was torn). Its blocks may still be salvageable.
                scan.damaged = True
                if entries:
                    self._salvage_entries(scan, memoryview(meta))
            return scan  # a blank header: never allocated
        _, version, _, generation, stored_id, inst = _CHUNK.unpack(head)
        if version != FORMAT_VERSION or inst != instance_id or stored_id != chunk_id:
            raise CorruptionError(f"{self.path.name} slot {slot}: chunk header does not match")
        flags = meta[FLAGS_OFFSET : FLAGS_OFFSET + 4]
        scan.allocated = flags[FLAG_ALLOCATED] == 0
        scan.sealed = flags[FLAG_SEALED] == 0
        scan.deprecated = flags[FLAG_DEPRECATED] == 0
        scan.free = flags[FLAG_FREE] == 0
        scan.generation = generation
        if scan.sealed:
            rec = meta[SEAL_OFFSET : SEAL_OFFSET + _SEAL.size + 4]
            if _U32.unpack_from(rec, _SEAL.size)[0] != crc32(rec[: _SEAL.size]):
                # The SEALED byte landed but the record did not: treat as unsealed.
                scan.sealed = False
                scan.anomaly = "seal record torn"
            else:
                scan.seal_n_blocks, scan.data_end, _, _, scan.seal_dir_crc = _SEAL.unpack_from(rec)
        if entries:
            self._scan_entries(scan, memoryview(meta))
        return scan

    def _salvage_entries(self, scan: ChunkScan, meta: memoryview) -> None:
        """Directory entries of a chunk whose header is damaged: each has its own CRC.

        Formatting zeroes the whole meta region, so entries of an earlier generation
        cannot linger; the generation most entries agree on is the chunk's.
        """
        g = self.geometry
        found = []
        for i in range(g.dir_capacity):
            off = DIR_OFFSET + i * ENTRY_SIZE
            e = BlockEntry.unpack(meta[off : off + ENTRY_SIZE], scan.chunk_id, i)
            if e is not None and self._plausible(e, e.generation, -1):
                found.append(e)
        if found:
            gens = [e.generation for e in found]
            scan.generation = max(set(gens), key=gens.count)
            found = [e for e in found if e.generation == scan.generation]
        scan.entries = found
        scan.allocated = True

    def _plausible(self, e: BlockEntry, generation: int, last_seq: int) -> bool:
        g = self.geometry
        return (
            e.generation == generation
            and e.seq > last_seq
            and e.body_off >= g.meta_bytes
            and e.body_off + e.body_len <= g.chunk_size
        )

    def _scan_entries(self, scan: ChunkScan, meta: memoryview) -> None:
        g = self.geometry
        found: list[BlockEntry] = []
        limit = scan.seal_n_blocks if scan.sealed else g.dir_capacity
        last_seq, data_end = -1, g.meta_bytes
        for i in range(limit):
            off = DIR_OFFSET + i * ENTRY_SIZE
            e = BlockEntry.unpack(meta[off : off + ENTRY_SIZE], scan.chunk_id, i)
            if e is None or not self._plausible(e, scan.generation, last_seq):
                if scan.sealed:
                    # Each entry carries its own CRC, so the others stay trustworthy;
                    # the damaged block's points are reported, never guessed.
                    scan.anomaly += f"directory entry {i} damaged; "
                    continue
                if any(meta[off : DIR_OFFSET + g.dir_capacity * ENTRY_SIZE]):
                    scan.anomaly = f"directory entry {i} torn with later bytes present"
                break
            found.append(e)
            last_seq = e.seq
            data_end = max(data_end, e.body_off + e.body_len)
        if scan.sealed:
            dir_bytes = meta[DIR_OFFSET : DIR_OFFSET + scan.seal_n_blocks * ENTRY_SIZE]
            if crc32(dir_bytes) != scan.seal_dir_crc:
                scan.anomaly += "directory CRC mismatch; "
        else:
            scan.data_end = data_end
        scan.entries = found


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


def container_path(directory: Path, container_no: int) -> Path:
    return directory / f"c-{container_no:06d}.xtc"
