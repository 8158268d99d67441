"""How far this node has applied each shard of the write log, kept next to its data.

``<data_dir>/cluster-applied`` holds two slots; each is a header (magic,
generation, shard count, CRC-32 of the rest) and one little-endian uint64 per
shard: the stream sequence of the last frame of that shard the engine has
committed. A save writes the slot the previous save did not (so a torn write
leaves the other, older slot whole) and fdatasyncs it; a load takes the valid
slot of the highest generation.

The file may be behind the engine, never ahead: sequences are recorded only
once the engine's commit of those frames returned (fsynced in its WAL), and
saved later. Behind is harmless: on restart the frames after it are applied
again, and applying a suffix of the log again in order changes nothing
(:mod:`.logframes`). A file with no valid slot starts every shard at 0 with a
warning, for the same reason.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np

log = logging.getLogger("xtsdb.cluster")

FILE_NAME = "cluster-applied"
_MAGIC = b"XTAP"
_HEADER = struct.Struct("<4sQII")  # magic, generation, shards, crc of generation+shards+seqs


def _slot_size(shards: int) -> int:
    return _HEADER.size + 8 * shards


def _parse(raw: bytes) -> tuple[int, np.ndarray] | None:
    if len(raw) < _HEADER.size:
        return None
    magic, gen, shards, crc = _HEADER.unpack_from(raw, 0)
    body = raw[_HEADER.size : _HEADER.size + 8 * shards]
    if magic != _MAGIC or len(body) != 8 * shards:
        return None
    if zlib.crc32(body, zlib.crc32(struct.pack("<QI", gen, shards))) != crc:
        return None
    return gen, np.frombuffer(body, "<u8").astype(np.int64)


def read_applied(data_dir: Path | str) -> dict[int, int]:
    """Shard -> last stream sequence applied, as saved in ``data_dir`` ({} if none)."""
    path = Path(data_dir) / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    best: tuple[int, np.ndarray] | None = None
    for off in (0, len(raw) // 2):
        got = _parse(raw[off:])
        if got is not None and (best is None or got[0] > best[0]):
            best = got
    return {} if best is None else {i: int(s) for i, s in enumerate(best[1].tolist())}


class AppliedSeqs:
    """In memory: what the engine has committed (``committed``); on disk: the last save."""

    def __init__(self, data_dir: Path, shards: int) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self.shards = shards
        self._lock = threading.Lock()
        self.committed = np.zeros(shards, np.int64)
        self._gen = 0
        saved = read_applied(data_dir)
        if saved and len(saved) != shards:
            raise ValueError(
                f"{self.path} records {len(saved)} shards, the cluster has {shards}: this "
                "data directory belongs to another cluster"
            )
        if saved:
            self.committed[:] = [saved[i] for i in range(shards)]
            self._gen = self._generation()
        elif self.path.exists() and self.path.stat().st_size:
            log.warning(
                "%s has no valid slot: every shard is applied again from the log", self.path
            )
        self._saved = self.committed.copy()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def _generation(self) -> int:
        raw = self.path.read_bytes()
        gens = [g[0] for off in (0, len(raw) // 2) if (g := _parse(raw[off:])) is not None]
        return max(gens, default=0)

    def get(self, shard: int) -> int:
        return int(self.committed[shard])

    def record(self, shard: int, seq: int) -> None:
        """``seq`` of ``shard`` is committed in the engine (saved by the next :meth:`save`)."""
        with self._lock:
            if seq > self.committed[shard]:
                self.committed[shard] = seq

    def rewind(self, shard: int, seq: int) -> None:
        """Record ``shard`` as applied only up to ``seq`` (its frames after it come again)."""
        with self._lock:
            self.committed[shard] = min(int(self.committed[shard]), seq)

    @property
    def dirty(self) -> bool:
        return bool((self.committed != self._saved).any())

    def save(self) -> None:
        """Write what is recorded to the older slot and fdatasync (blocking: off the loop)."""
        with self._lock:
            seqs = self.committed.copy()
            self._gen += 1
            gen = self._gen
        body = seqs.astype("<u8").tobytes()
        crc = zlib.crc32(body, zlib.crc32(struct.pack("<QI", gen, self.shards)))
        slot = _HEADER.pack(_MAGIC, gen, self.shards, crc) + body
        os.pwrite(self._fd, slot, (gen % 2) * _slot_size(self.shards))
        os.fdatasync(self._fd)
        self._saved = seqs

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
