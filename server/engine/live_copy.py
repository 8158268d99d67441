"""A consistent copy of a live data directory, taken while the engine keeps writing.

The server's backup op (destination policy, one backup at a time) is
``xtsdb.server.backup``; this is the copy itself, which depends on every
on-disk format of the engine, so it lives here.

The copy is made in this order, and the order is what makes it consistent:

1. ``engine.flush()`` seals every MemBuffer into blocks and writes a
   checkpoint: every point up to the checkpoint LSN ``C`` is now in durable
   blocks.
2. Every live WAL segment is opened (:class:`_WalHold`), *then* ``C`` is read.
   A segment the engine recycles from now on stays readable through our
   descriptor, and one recycled before we opened it held only records <= the
   checkpoint at that moment, which is <= ``C``. So every record after ``C``
   stays readable until the copy ends.
3. The index is copied with SQLite's online backup API (a consistent snapshot).
   It is taken *before* the containers: the engine commits index rows only
   after the blocks they name are on disk, so every block the copied index
   names is in the copied containers (blocks are never moved or rewritten).
4. ``xtsdb.meta`` is copied and the copy gets a checkpoint file saying ``C``.
5. Containers are copied chunk by chunk, only the parts in use: for each
   allocated chunk its meta region is read in one ``pread``, then the bodies
   up to the end of the last directory entry in *that* read. A body is
   written before its entry and a seal is written after the bodies are
   fsynced, so every entry and every seal in the copy refers to bodies that
   were complete before they were read. Never-allocated slots stay holes.
   Blocks sealed after step 1 may or may not be in the copy: their points are
   in the WAL after ``C`` as well, which is what crash recovery expects.
   Then every slot's state (chunk header, flags, seal record) is compared with
   what was copied, and the slots that changed -- sealed, rolled over, retired
   or reused by retention meanwhile -- are copied again, until none did; the
   active chunks are copied again at the end of every pass (see
   :meth:`_Copier.containers` for why retention needs that). A slot retired by
   retention is reused only after ``retention_grace_s`` (60 s), far longer
   than one chunk takes to copy, so its meta region and its bodies are never
   read from two different generations.
6. The WAL after ``C`` is copied until no segment rotated during the copy
   (only the last segment may then end in a half-written record, which
   recovery cuts off, as after a crash).
7. Every other file: the tag catalog through SQLite's backup API, anything
   else byte for byte (``LOCK`` never).

The result is the state a crash at the end of step 6 would have left (fewer
blocks, the rest in the WAL), and recovery turns it into a database holding
every write acknowledged before the backup began, and those acknowledged
during it up to the end of the WAL copy. To restore, start a server on the
copy. The copy is verified by replaying its WAL (step 8) and can be checked
in full with ``xtsdb-server check --data-dir COPY``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from xtsdb.protocol.errors import Overloaded, ShuttingDown

from .chunkscan import SET, UNSET, state_words
from .config import EngineConfig
from .container import DIR_OFFSET, ENTRY_SIZE, FLAG_ALLOCATED, FLAG_SEALED, BlockEntry, Geometry
from .datadir import META_NAME, load_or_create_meta
from .fsync import fsync_path
from .recovery import INDEX_NAME
from .wal import Wal, write_checkpoint

COPY_STEP = 1 << 20
WAL_COPY_ATTEMPTS = 10
CONTAINER_PASSES = 10
_SEGMENT = re.compile(r"^wal-(\d{20})\.log$")
_CONTAINER = re.compile(r"^c-\d{6}\.xtc$")
BEFORE_WAL = ("cluster-applied",)
"""Files that record how far the data got (cluster mode: the stream sequence applied per
shard, docs/cluster.md): copied before the WAL, so the copy's is never ahead of its data."""
# Copied by their own steps (LOCK: never copied).
_COPIED = {"LOCK", META_NAME, INDEX_NAME, "wal", "containers", *BEFORE_WAL}
_NOT_COPIED = ("-wal", "-shm", "-journal", ".tmp")  # SQLite's side files, temp files

StopCheck = Callable[[], bool]


class BackupSource(Protocol):
    """What a backup needs from the engine (all public)."""

    path: Path

    @property
    def checkpoint_lsn(self) -> int: ...

    def flush(self) -> None: ...


def backup(engine: BackupSource, dest: Path, stop: StopCheck = lambda: False) -> dict[str, Any]:
    """Copy ``engine``'s data directory to ``dest`` (created; removed again on failure)."""
    started = time.monotonic()
    src = engine.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.mkdir()
    try:
        engine.flush()
        with _WalHold(src / "wal") as wal:
            checkpoint = engine.checkpoint_lsn  # read after the segments are held (step 2)
            wal.release_upto(checkpoint)
            copy = _Copier(stop, wal)
            copy.sqlite(src / INDEX_NAME, dest / INDEX_NAME)
            copy.file(src / META_NAME, dest / META_NAME)
            for name in BEFORE_WAL:
                if (src / name).exists():
                    copy.file(src / name, dest / name)
            meta = load_or_create_meta(dest, EngineConfig())  # exists: only read
            (dest / "wal").mkdir()
            write_checkpoint(dest / "wal", checkpoint)
            (dest / "containers").mkdir()
            copy.containers(src / "containers", dest / "containers", meta.geometry)
            segments = copy.wal(dest / "wal")
            skipped = copy.rest(src, dest)
        # Step 8: replaying the copied WAL proves it continues from the checkpoint
        # without a gap, and cuts a half-copied last record off the copy.
        copied_wal = Wal(dest / "wal", fsync=True, instance_id=meta.instance_id)
        for _lsn, _payload in copied_wal.replay(checkpoint):
            pass
        last_lsn = copied_wal.last_lsn
        copied_wal.close()
        for directory in (dest / "containers", dest / "wal", dest, dest.parent):
            fsync_path(directory)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return {
        "path": str(dest),
        "bytes": copy.bytes,
        "containers": len(_containers(dest / "containers")),
        "wal_segments": segments,
        "skipped": skipped,
        "checkpoint_lsn": checkpoint,
        "wal_last_lsn": last_lsn,
        "seconds": round(time.monotonic() - started, 3),
    }


class _WalHold:
    """Open descriptors on the WAL segments that may hold records after the checkpoint."""

    def __init__(self, wal_dir: Path) -> None:
        self.dir = wal_dir
        self.fds: dict[int, int] = {}  # first LSN -> descriptor
        self.refresh()

    def __enter__(self) -> _WalHold:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def _listing(self) -> dict[int, Path]:
        out = {}
        for entry in os.scandir(self.dir):
            m = _SEGMENT.match(entry.name)
            if m:
                out[int(m.group(1))] = Path(entry.path)
        return out

    def refresh(self) -> None:
        """Hold the segments created since the last call."""
        listing = self._listing()
        newest = max(self.fds, default=None)
        if newest is not None and newest not in listing:
            # The engine recycles oldest first, so while our newest segment is still
            # listed no later one can have gone. Now one might have: a gap we cannot see.
            raise Overloaded(
                "the WAL was recycled faster than the backup could follow; retry the "
                "backup (a lower write rate or a larger wal_checkpoint_bytes helps)"
            )
        for first, path in sorted(listing.items()):
            if newest is None or first > newest:
                try:
                    self.fds[first] = os.open(path, os.O_RDONLY)
                except FileNotFoundError:  # recycled since the listing: wholly checkpointed
                    continue

    def release_upto(self, checkpoint: int) -> None:
        """Close the segments whose records are all <= ``checkpoint``: the copy needs none."""
        firsts = sorted(self.fds)
        for first, successor in itertools.pairwise(firsts):
            if successor - 1 <= checkpoint:
                os.close(self.fds.pop(first))


class _Copier:
    def __init__(self, stop: StopCheck, hold: _WalHold) -> None:
        self.stop = stop
        self.hold = hold
        self.bytes = 0

    def _check_stop(self) -> None:
        if self.stop():
            raise ShuttingDown("the server is stopping; the backup was abandoned")

    def _range(self, src: int, dst: int, start: int, end: int) -> None:
        """Copy bytes ``start:end`` of ``src`` to the same place in ``dst`` (to EOF if -1)."""
        pos = start
        while end < 0 or pos < end:
            want = COPY_STEP if end < 0 else min(COPY_STEP, end - pos)
            data = os.pread(src, want, pos)
            if not data:
                break
            os.pwrite(dst, data, pos)
            pos += len(data)
            self.bytes += len(data)
            # Often: a WAL segment created meanwhile must be held before it can be
            # recycled, and a listing costs far less than copying a step.
            self.hold.refresh()
            self._check_stop()

    def sqlite(self, src: Path, dst: Path) -> None:
        """A consistent snapshot of a live SQLite database (its -wal included)."""
        if not src.exists():
            return  # a missing index is rebuilt from a scan at the next start
        source = sqlite3.connect(f"{src.as_uri()}?mode=ro", uri=True)
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        fsync_path(dst)
        self.bytes += dst.stat().st_size

    def file(self, src: Path, dst: Path) -> None:
        with _open_pair(src, dst) as (s, d):
            self._range(s, d, 0, -1)

    def containers(self, src_dir: Path, dst_dir: Path, g: Geometry) -> None:
        """Copy every container, then again every chunk whose state moved meanwhile."""
        heads: dict[tuple[str, int], bytes] = {}  # the chunk state each copied slot had
        todo = {name: list(range(g.n_chunks)) for name in _containers(src_dir)}
        for _ in range(CONTAINER_PASSES):
            for name, slots in todo.items():
                self._container(src_dir / name, dst_dir / name, g, slots, heads)
            # The active chunks once more, last: retention writes the tombstones of a
            # chunk it retires into the active chunk *before* marking it retired, so a
            # copy that shows a chunk retired must read the active chunk after it.
            for name, slots in _unsealed(heads).items():
                self._container(src_dir / name, dst_dir / name, g, slots, heads)
            todo = _moved(src_dir, g, heads)
            if not todo:
                return
        raise Overloaded("chunks kept changing state while the backup copied them; retry")

    def _container(
        self,
        src: Path,
        dst: Path,
        g: Geometry,
        slots: list[int],
        heads: dict[tuple[str, int], bytes],
    ) -> None:
        fresh = not dst.exists()
        with _open_pair(src, dst, truncate=fresh) as (s, d):
            if fresh:
                os.ftruncate(d, g.file_size)  # sparse: slots never written stay holes
                self._range(s, d, 0, g.chunk_base(0))  # the container header
            for slot in slots:
                self._check_stop()
                base = g.chunk_base(slot)
                meta = os.pread(s, g.meta_bytes, base)  # one read: see step 5
                heads[src.name, slot] = meta[:DIR_OFFSET]
                if not meta.strip(b"\0"):
                    continue  # never allocated
                os.pwrite(d, meta, base)
                self.bytes += len(meta)
                self._range(s, d, base + g.meta_bytes, base + _data_end(meta, g))

    def rest(self, src: Path, dest: Path) -> list[str]:
        """Every other file of the data directory (the tag catalog, ...); what was not copied.

        The catalog is not in the WAL: copied last, it names every tag whose data
        is in the copy. A name created during the backup may be missing; its
        points are then in the copy under the tag's id.
        """
        skipped = []
        for entry in sorted(src.iterdir()):
            name = entry.name
            if name in _COPIED or name.endswith(_NOT_COPIED):
                continue
            if name.endswith(".sqlite3"):
                self.sqlite(entry, dest / name)
            elif entry.is_file():
                self.file(entry, dest / name)
            else:
                skipped.append(name)
        return skipped

    def wal(self, dst_dir: Path) -> int:
        """Copy the held segments until none rotated during the copy; how many."""
        hold = self.hold
        complete: set[int] = set()
        for _ in range(WAL_COPY_ATTEMPTS):
            self._check_stop()
            hold.refresh()
            firsts = sorted(hold.fds)
            for first in firsts:
                if first in complete:
                    continue
                with _open_out(dst_dir / f"wal-{first:020d}.log", truncate=True) as d:
                    self._range(hold.fds[first], d, 0, -1)
                if first != firsts[-1]:
                    complete.add(first)  # a successor existed before we read it: it was closed
            hold.refresh()
            if sorted(hold.fds) == firsts:
                return len(firsts)
        raise Overloaded("the WAL rotated during every attempt to copy it; retry the backup")


def _data_end(meta: bytes, g: Geometry) -> int:
    """End of the last body named by a valid directory entry in ``meta`` (chunk-relative)."""
    end = g.meta_bytes
    for i in range(g.dir_capacity):
        off = DIR_OFFSET + i * ENTRY_SIZE
        raw = meta[off : off + ENTRY_SIZE]
        if not raw.strip(b"\0"):
            break  # entries are written in order: the rest of the directory is empty
        entry = BlockEntry.unpack(raw, 0, i)
        if entry is not None:
            end = max(end, min(entry.body_off + entry.body_len, g.chunk_size))
    return end


def _containers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if _CONTAINER.match(p.name))


def _unsealed(heads: dict[tuple[str, int], bytes]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for (name, slot), head in sorted(heads.items()):
        flags = state_words(head)  # a damaged word counts as allocated and unsealed
        if head[:4].strip(b"\0") and flags[FLAG_ALLOCATED] != UNSET and flags[FLAG_SEALED] != SET:
            out.setdefault(name, []).append(slot)
    return out


def _moved(src_dir: Path, g: Geometry, heads: dict[tuple[str, int], bytes]) -> dict[str, list[int]]:
    """The slots whose chunk state changed since they were copied: to copy again.

    Sealing, rolling over, retiring or reusing a chunk changes its header, flags
    or seal record, the first bytes of its meta region. Blocks added to the
    active chunk do not, and need no second copy: their points are in the WAL.
    """
    moved: dict[str, list[int]] = {}
    for name in _containers(src_dir):  # including containers created meanwhile
        fd = os.open(src_dir / name, os.O_RDONLY)
        try:
            for slot in range(g.n_chunks):
                head = os.pread(fd, DIR_OFFSET, g.chunk_base(slot))
                if head != heads.get((name, slot)):  # None: a container created meanwhile
                    moved.setdefault(name, []).append(slot)
        finally:
            os.close(fd)
    return moved


@contextlib.contextmanager
def _open_pair(src: Path, dst: Path, *, truncate: bool = True) -> Any:
    s = os.open(src, os.O_RDONLY)
    try:
        with _open_out(dst, truncate=truncate) as d:
            yield s, d
    finally:
        os.close(s)


@contextlib.contextmanager
def _open_out(path: Path, *, truncate: bool) -> Any:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
    fd = os.open(path, flags, 0o644)
    try:
        yield fd
        os.fsync(fd)  # a backup that reports success is on disk
    finally:
        os.close(fd)
