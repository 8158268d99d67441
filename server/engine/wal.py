"""Write-ahead log: numbered, self-describing records in append-only segment files.

The bytes of a segment and of a record are in ``wal_segment.py``; the
checkpoint file (the LSN replay starts after) in ``wal_checkpoint.py``.

Durability reasoning
--------------------
* A batch is acknowledged (``append_many`` returns) only after all its records were written
  and ``fdatasync`` returned. A crash before that may leave any subset of the batch's pages on
  disk, in any order, so replay checks every record (length bound, CRC, LSN = previous + 1) and
  stops at the first bad one. Records are self-describing: nothing outside the segment files
  (no metadata that a reopen could reset) is needed to find the valid prefix.
* Only the last segment can have a torn tail: before a new segment is created the old one is
  fdatasync'ed (even with ``fsync=False``), and the new segment's header is fsync'ed together
  with the directory before any record goes in. So damage in the last segment is truncated
  away (unacknowledged data), while the same damage anywhere else is reported as
  :class:`CorruptionError` (acknowledged data would otherwise vanish silently).
* A new process never appends after a tail that might be torn: it starts a new segment.
* When a write or fsync fails the kernel may already have dropped the dirty pages it reported
  as failed ("fsyncgate"), so a later fsync could succeed without the data being on disk. The
  WAL therefore refuses every later append until it is reopened and replayed.
* With ``fsync=False`` records reach the page cache only: they survive a process crash but
  an OS crash may lose the tail of the last segment (never anything before it, see above).
  A clean ``close()`` syncs them in both modes.
* Missing LSNs (between segments, or before the first one) are an error only if some of them
  are above ``after_lsn``: records at or below the checkpoint are not needed, so a segment
  whose records all are (its successor starts at or below after_lsn + 1) is not even read.
* Limit: damage inside the last segment looks exactly like a torn tail, so it is truncated
  (with a note in ``repairs``) rather than reported; an unsynced batch can leave a valid
  record behind an invalid one, so "valid data follows" does not prove corruption there.
"""

from __future__ import annotations

import errno
import os
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from xtsdb.protocol.errors import (
    CorruptionError,
    DiskFull,
    DurabilityError,
    EngineClosed,
    InvalidInput,
    StorageError,
)

from .fsync import fsync_path, make_dirs

# The checkpoint file lives in the WAL directory; its readers import it from here.
from .wal_checkpoint import CHECKPOINT_FILE as CHECKPOINT_FILE
from .wal_checkpoint import read_checkpoint as read_checkpoint
from .wal_checkpoint import write_checkpoint as write_checkpoint
from .wal_segment import (
    CRC,
    FORMAT_VERSION,
    MAX_RECORD_PAYLOAD,
    RECORD_HEADER_SIZE,
    SEG_HEADER,
    SEG_MAGIC,
    SEGMENT_HEADER_SIZE,
    SEGMENT_NAME,
    Segment,
    encode_records,
    parse_segment_header,
    read_record,
    write_all,
)

# Called through this module's name so fault tests can make the WAL's syncs fail.
from .wal_segment import datasync as _datasync


class Wal:
    """The write-ahead log of one data directory. Thread-safe; see the module docstring.

    Invariants: LSNs are consecutive from the checkpoint on, across segments;
    ``append_many`` returns only once its records are written (and, with
    ``fsync``, synced); only the last segment may end in a torn record; after a
    failed write or sync nothing is appended until the WAL is reopened and replayed.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        segment_bytes: int = 64 << 20,
        fsync: bool = True,
        instance_id: bytes = b"\0" * 16,
    ) -> None:
        if len(instance_id) != 16:
            raise ValueError("instance_id must be 16 bytes")
        self._dir = Path(directory)
        make_dirs(self._dir)
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._instance_id = bytes(instance_id)
        self._lock = threading.Lock()
        self._segments: list[Segment] = []
        for entry in os.scandir(self._dir):
            m = SEGMENT_NAME.match(entry.name)
            if m:
                size = entry.stat().st_size
                self._segments.append(Segment(int(m.group(1)), Path(entry.path), size))
        self._segments.sort(key=lambda s: s.first_lsn)
        self._last_lsn = 0
        self._next_lsn = 1  # only moves forward: LSNs of a failed batch are never reused
        # Replay is what establishes last_lsn, so it must run to completion before appending
        # to a WAL that already has segments (an empty directory is ready at once).
        self._ready = not self._segments
        self._replay_called = False
        self._appended = False
        self._fd: int | None = None  # current segment, created lazily by the first append
        self._dirty = False
        self._failed: str | None = None
        self._closed = False
        self.repairs: list[str] = []

    # -- properties -----------------------------------------------------------------------

    @property
    def last_lsn(self) -> int:
        """LSN of the last acknowledged (or replayed) record."""
        return self._last_lsn

    @property
    def size_bytes(self) -> int:
        """Total bytes of live segments (no lock: must not wait for an fsync in progress)."""
        return sum(s.size for s in list(self._segments))

    # -- replay ---------------------------------------------------------------------------

    def replay(self, after_lsn: int) -> Iterator[tuple[int, memoryview]]:
        """Yield ``(lsn, payload)`` for records with lsn > after_lsn; must be run to the end.

        Each payload is its own bytes object, so a caller keeping views into one record
        does not pin a whole segment in memory.
        """
        if self._replay_called or self._appended:
            raise RuntimeError("replay() may run only once, before the first append")
        self._replay_called = True
        return self._replay(after_lsn)

    def _replay(self, after_lsn: int) -> Iterator[tuple[int, memoryview]]:
        segs = list(self._segments)
        self._next_lsn = after_lsn + 1  # where the next segment must start (or before)
        for idx, seg in enumerate(segs):
            next_first = segs[idx + 1].first_lsn if idx + 1 < len(segs) else None
            yield from self._replay_segment(seg, next_first, after_lsn)
        self._last_lsn = max(after_lsn, self._next_lsn - 1)
        self._next_lsn = self._last_lsn + 1
        self._ready = True

    def _replay_segment(
        self, seg: Segment, next_first: int | None, after_lsn: int
    ) -> Iterator[tuple[int, memoryview]]:
        # Records of a non-last segment end just before the next segment's first LSN, so a
        # segment wholly at or below after_lsn is not read: it only waits for recycle().
        skip = next_first is not None and next_first - 1 <= after_lsn
        with open(seg.path, "rb", buffering=1 << 16) as f:
            size = os.fstat(f.fileno()).st_size
            first = parse_segment_header(f.read(SEGMENT_HEADER_SIZE), self._instance_id, seg.path)
            if first is None:
                if skip:
                    assert next_first is not None
                    self.repairs.append(f"{seg.path.name}: bad header, all records checkpointed")
                    self._next_lsn = next_first
                    return
                # A crash right after creating the segment leaves a torn header and no records;
                # a valid record behind a bad header means the header itself was damaged.
                f.seek(SEGMENT_HEADER_SIZE)
                behind = read_record(f, seg.first_lsn, size - SEGMENT_HEADER_SIZE)[0]
                if next_first is not None or behind is not None:
                    raise CorruptionError(f"{seg.path}: segment header is damaged")
                seg.path.unlink()
                fsync_path(self._dir)
                self._segments.remove(seg)
                self.repairs.append(f"{seg.path.name}: torn segment header, segment deleted")
                return
            expected = self._next_lsn
            if first != seg.first_lsn:
                raise CorruptionError(f"{seg.path}: header says first LSN {first}")
            if first > expected and first - 1 > after_lsn:
                raise CorruptionError(
                    f"{seg.path}: WAL records {expected}..{first - 1} are missing"
                )
            if first < expected and expected - 1 > after_lsn:
                raise CorruptionError(f"{seg.path}: overlaps records before LSN {expected}")
            if skip:
                assert next_first is not None
                self._next_lsn = next_first
                return
            self._next_lsn = first
            offset = SEGMENT_HEADER_SIZE
            while True:
                payload, reason = read_record(f, self._next_lsn, size - offset)
                if payload is None:
                    break
                lsn = self._next_lsn
                self._next_lsn += 1
                offset += RECORD_HEADER_SIZE + len(payload)
                if lsn > after_lsn:
                    yield lsn, memoryview(payload)
            if reason is None:
                return
            if next_first is not None:
                raise CorruptionError(f"{seg.path}: damaged record at offset {offset}: {reason}")
        # A torn tail is data that was never acknowledged; cut it off durably so nothing
        # appended later can end up behind garbage.
        os.truncate(seg.path, offset)
        fsync_path(seg.path)
        seg.size = offset
        self.repairs.append(
            f"{seg.path.name}: torn tail at offset {offset} ({reason}); "
            f"dropped {size - offset} bytes"
        )

    # -- append ---------------------------------------------------------------------------

    def append_many(self, payloads: Sequence[bytes | bytearray | memoryview]) -> int:
        """Log ``payloads`` as consecutive records with one fsync; return the last LSN."""
        with self._lock:
            self._check_usable()
            if not self._ready:
                raise RuntimeError("replay() must run to completion before the first append")
            if not payloads:
                return self._last_lsn
            views = []
            for p in payloads:
                v = memoryview(p)
                if not v.c_contiguous:
                    raise InvalidInput("WAL payloads must be contiguous buffers")
                if v.nbytes > MAX_RECORD_PAYLOAD:
                    raise InvalidInput(f"WAL record of {v.nbytes} bytes over {MAX_RECORD_PAYLOAD}")
                views.append(v if v.format == "B" and v.ndim == 1 else v.cast("B"))
            self._appended = True
            first_lsn = self._next_lsn
            self._next_lsn += len(views)
            bufs, total = encode_records(views, first_lsn)
            start: int | None = None
            synced = False
            try:
                if self._fd is None or self._segments[-1].size >= self._segment_bytes:
                    self._rotate(first_lsn)
                assert self._fd is not None
                seg = self._segments[-1]
                start = seg.size
                write_all(self._fd, bufs, start)
                seg.size = start + total
                self._dirty = True
                if self._fsync:
                    synced = True
                    _datasync(self._fd)
                    self._dirty = False
            except OSError as exc:
                full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                if full and not synced and self._undo_batch(first_lsn, start):
                    # Nothing reached an fsync, and the partial batch is cut away: the
                    # WAL is as before this call and takes writes again once space
                    # returns. (A failed fsync is different: see _fail.)
                    raise DiskFull(f"WAL append: no space left on device ({exc})") from exc
                raise self._fail(exc, "append", start) from exc
            self._last_lsn = first_lsn + len(views) - 1
            return self._last_lsn

    def _rotate(self, first_lsn: int) -> None:
        """Close the current segment durably and start ``wal-{first_lsn}``."""
        path = self._dir / f"wal-{first_lsn:020d}.log"
        last = self._segments[-1] if self._segments else None
        if self._fd is None and last is not None and last.path == path:
            if last.size <= SEGMENT_HEADER_SIZE:
                # A replayed segment with no records (a crash right after it was created):
                # start it afresh rather than trust a header that may never have been synced.
                self._segments.pop().path.unlink()
        elif self._fd is None and last is not None:
            # Written by an earlier process, perhaps with fsync=False: make it durable before
            # it stops being the last segment (only the last one may have a torn tail).
            fsync_path(last.path)
        if self._fd is not None:
            _datasync(self._fd)  # even with fsync=False, for the same reason
            self._dirty = False
            os.close(self._fd)
            self._fd = None
        body = SEG_HEADER.pack(SEG_MAGIC, FORMAT_VERSION, self._instance_id, first_lsn)
        header = body + CRC.pack(zlib.crc32(body))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._fd = fd
        self._segments.append(Segment(first_lsn, path, 0))
        write_all(fd, [header], 0)
        os.fsync(fd)  # the header and the file size, before any record relies on them
        fsync_path(self._dir)  # the file's existence
        self._segments[-1].size = SEGMENT_HEADER_SIZE

    def _undo_batch(self, first_lsn: int, start: int | None) -> bool:
        """Remove a batch whose write failed before any fsync; False if that fails too."""
        try:
            if start is None:  # the failure was in creating a new segment
                seg = self._segments[-1] if self._segments else None
                if seg is not None and seg.first_lsn == first_lsn:
                    if self._fd is not None:
                        os.close(self._fd)
                        self._fd = None
                    self._segments.pop()
                    seg.path.unlink(missing_ok=True)
            else:
                assert self._fd is not None
                os.ftruncate(self._fd, start)
                self._segments[-1].size = start
        except OSError:
            return False
        self._next_lsn = first_lsn  # the records are gone: their LSNs are free again
        return True

    @property
    def failed(self) -> bool:
        """True once the WAL refuses appends until it is reopened."""
        return self._failed is not None

    def _fail(self, exc: OSError, what: str, start: int | None) -> StorageError:
        self._failed = f"{what} failed: {exc}"
        if self._fd is not None and start is not None:
            try:  # best effort: the CRC/LSN checks at replay are the real guard
                os.ftruncate(self._fd, start)
                self._segments[-1].size = start
            except OSError:
                pass
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFull(f"WAL {what}: no space left on device ({exc})")
        return DurabilityError(f"WAL {what} failed: {exc}")

    def _check_usable(self) -> None:
        if self._closed:
            raise EngineClosed("the WAL is closed")
        if self._failed is not None:
            raise DurabilityError(f"WAL failed earlier: {self._failed}; reopen the engine")

    # -- maintenance ----------------------------------------------------------------------

    def sync(self) -> None:
        """Make every appended record durable (a sync point when ``fsync=False``)."""
        with self._lock:
            self._check_usable()
            if self._fd is not None and self._dirty:
                try:
                    _datasync(self._fd)
                except OSError as exc:
                    raise self._fail(exc, "sync", None) from exc
                self._dirty = False

    def recycle(self, checkpoint_lsn: int) -> int:
        """Delete segments whose records all have lsn <= checkpoint_lsn; return how many."""
        with self._lock:
            removed = 0
            # A segment's last LSN is the next segment's first minus one; the last segment
            # (current, or the newest on disk) is never deleted.
            while len(self._segments) > 1 and self._segments[1].first_lsn - 1 <= checkpoint_lsn:
                try:  # oldest first: a crash midway leaves a contiguous suffix, never a gap
                    self._segments[0].path.unlink()
                except OSError as exc:
                    raise StorageError(f"cannot delete {self._segments[0].path}: {exc}") from exc
                self._segments.pop(0)
                removed += 1
            if self._segments and checkpoint_lsn >= self._last_lsn and self._failed is None:
                # Everything logged is checkpointed: retire the last segment too, so a
                # flushed database keeps no WAL bytes. The next append starts a new
                # segment at last_lsn + 1 (replay numbers on from the checkpoint).
                if self._fd is not None:
                    os.close(self._fd)  # nothing in it is needed any more: no sync
                    self._fd = None
                    self._dirty = False
                self._segments.pop().path.unlink()
                removed += 1
            if removed:
                fsync_path(self._dir)
            return removed

    def close(self) -> None:
        """Idempotent. A clean close makes unsynced records durable (unless the WAL failed)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            fd, self._fd = self._fd, None
            if fd is None:
                return
            try:
                if self._dirty and self._failed is None:
                    _datasync(fd)
                    self._dirty = False
            except OSError as exc:
                raise DurabilityError(f"WAL sync at close failed: {exc}") from exc
            finally:
                os.close(fd)
