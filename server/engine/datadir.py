"""The data directory: its lock file and its format file (``xtsdb.meta``).

Layout::

    <data_dir>/LOCK            flock()ed by the one process that has it open
    <data_dir>/xtsdb.meta      format version, instance id, geometry (JSON + CRC)
    <data_dir>/wal/            WAL segments and the checkpoint file
    <data_dir>/containers/     preallocated container files
    <data_dir>/index.sqlite3   metadata index (a cache, rebuilt by scan when needed)
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

from xtsdb.protocol.errors import CorruptionError, DataDirLocked, FormatVersionError

from .config import EngineConfig
from .container import FORMAT_VERSION, Geometry
from .fsync import fsync_path, make_dirs

META_NAME = "xtsdb.meta"


class DirLock:
    """An exclusive flock on ``LOCK``; released by :meth:`release` or process death."""

    def __init__(self, directory: Path) -> None:
        make_dirs(directory)
        self.path = directory / "LOCK"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip()
            os.close(self.fd)
            raise DataDirLocked(
                f"data directory {directory} is in use by another process (pid {holder or '?'})"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True)
class DataDirMeta:
    instance_id: bytes
    geometry: Geometry


def load_or_create_meta(directory: Path, config: EngineConfig) -> DataDirMeta:
    path = directory / META_NAME
    if path.exists():
        raw = path.read_bytes()
        body, _, crc = raw.rpartition(b"\n")
        try:
            if int(crc) != zlib.crc32(body):
                raise CorruptionError(f"{path}: CRC mismatch")
            doc = json.loads(body)
        except ValueError as exc:
            raise CorruptionError(f"{path}: unreadable ({exc})") from exc
        if doc.get("format") != "xtsdb" or doc.get("version") != FORMAT_VERSION:
            raise FormatVersionError(
                f"{directory} holds format {doc.get('format')!r} version {doc.get('version')!r};"
                f" this xtsdb reads version {FORMAT_VERSION}"
            )
        g = doc["geometry"]
        return DataDirMeta(
            bytes.fromhex(doc["instance_id"]),
            Geometry(g["chunk_size"], g["chunks_per_container"], g["meta_extents"]),
        )
    if any(p.name in ("wal", "containers") for p in directory.iterdir()):
        raise CorruptionError(f"{directory} has data files but no {META_NAME}")
    meta = DataDirMeta(
        uuid.uuid4().bytes,
        Geometry(config.chunk_size, config.chunks_per_container, config.meta_extents),
    )
    doc = {
        "format": "xtsdb",
        "version": FORMAT_VERSION,
        "instance_id": meta.instance_id.hex(),
        "geometry": {
            "chunk_size": config.chunk_size,
            "chunks_per_container": config.chunks_per_container,
            "meta_extents": config.meta_extents,
        },
    }
    body = json.dumps(doc, indent=1).encode()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(body + b"\n" + str(zlib.crc32(body)).encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(directory)
    return meta
