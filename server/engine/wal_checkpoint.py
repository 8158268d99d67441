"""The WAL checkpoint file: the LSN up to which every write is in durable blocks.

The ``checkpoint`` file is 22 bytes: magic b"XTSCKP01", version u16, lsn u64, crc32 of the
first 18 bytes. It is replaced atomically (temp file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from xtsdb.protocol.errors import CorruptionError, FormatVersionError

from .fsync import fsync_path
from .wal_segment import CRC, FORMAT_VERSION, write_all

CHECKPOINT_FILE = "checkpoint"
_CKP_MAGIC = b"XTSCKP01"
_CKP = struct.Struct("<8sHQ")


def read_checkpoint(directory: str | os.PathLike[str]) -> int:
    """The checkpointed LSN, 0 if there is no checkpoint file yet."""
    path = Path(directory) / CHECKPOINT_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    if (
        len(data) != _CKP.size + 4
        or zlib.crc32(data[: _CKP.size]) != CRC.unpack_from(data, _CKP.size)[0]
    ):
        raise CorruptionError(f"{path}: checkpoint file is damaged (size or CRC)")
    magic, version, lsn = _CKP.unpack_from(data)
    if magic != _CKP_MAGIC:
        raise CorruptionError(f"{path}: not a checkpoint file")
    if version != FORMAT_VERSION:
        raise FormatVersionError(f"{path}: checkpoint version {version}")
    return int(lsn)


def write_checkpoint(directory: str | os.PathLike[str], lsn: int) -> None:
    """Atomically record ``lsn``: a crash leaves either the old or the new checkpoint."""
    dirpath = Path(directory)
    body = _CKP.pack(_CKP_MAGIC, FORMAT_VERSION, lsn)
    tmp = dirpath / (CHECKPOINT_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, [body + CRC.pack(zlib.crc32(body))], 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, dirpath / CHECKPOINT_FILE)
    fsync_path(dirpath)
