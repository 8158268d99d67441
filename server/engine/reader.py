"""Reading and decoding blocks: inline for small queries, the worker processes for large ones.

A large query is cut into parts of about equal point counts: the calling
thread decodes the first straight into the result columns while the worker
processes (:mod:`.workers`) decode the others into their pre-faulted output
arenas, from which each part is copied once into the result. Only block
addresses cross the control sockets, never arrays. Result columns come from
:class:`ResultPool` buffers reused across queries, so neither side touches
fresh pages. A worker that dies costs its part an inline decode (reads
change nothing), never a failed or wrong answer.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
from dataclasses import dataclass

import numpy as np

from xtsdb.protocol.errors import CorruptionError

from .block_codec import decode_block
from .container import crc32
from .membuffer import Columns
from .multiblock import MIN_BLOCKS, decode_blocks
from .result_pool import ResultPool
from .workers import WorkerDied, WorkerPool, split_even

log = logging.getLogger("xtsdb.engine")


@dataclass(frozen=True)
class BlockRef:
    """Everything a worker process needs to read one block without the index."""

    path: str
    offset: int  # absolute offset of the body in the container file
    length: int
    crc: int
    codec: int
    count: int
    label: str  # for error messages: which block


def _read_checked(fd: int, ref: BlockRef) -> bytes:
    body = os.pread(fd, ref.length, ref.offset)
    if len(body) != ref.length or crc32(body) != ref.crc:
        raise CorruptionError(f"block CRC mismatch: {ref.label}")
    return body


def _decode_into(fd: int, ref: BlockRef, out: Columns, at: int) -> None:
    end = at + ref.count
    decode_block(
        _read_checked(fd, ref),
        ref.count,
        ref.codec,
        out=(out[0][at:end], out[1][at:end], out[2][at:end]),
    )


def _head(out: Columns, n: int, at: int = 0) -> Columns:
    return out[0][at : at + n], out[1][at : at + n], out[2][at : at + n]


def columns_over(buf: mmap.mmap | bytearray, total: int) -> Columns:
    """``total`` points' columns over ``buf``: timestamps, then values, then qualities."""
    return (
        np.frombuffer(buf, np.int64, total, 0),
        np.frombuffer(buf, np.float64, total, 8 * total),
        np.frombuffer(buf, np.uint8, total, 16 * total),
    )


# -- parent side ---------------------------------------------------------------


class BlockReader:
    """Decodes lists of blocks into contiguous columns, in the order given.

    ``workers`` = 0 keeps every read inline (the deprecated ``read_workers``
    setting); otherwise large reads use the pool given to :meth:`attach`.
    """

    def __init__(self, workers: int, parallel_min_points: int) -> None:
        self.workers = workers
        self.parallel_min_points = parallel_min_points
        self.procs: WorkerPool | None = None
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}
        self.pool = ResultPool()  # decoded columns go into buffers reused across queries

    def attach(self, procs: WorkerPool | None) -> None:
        """Decode large reads in ``procs`` from now on (None: inline only)."""
        self.procs = procs

    def read(
        self, refs: list[BlockRef], *, parallel: bool | None = None, extra: int = 0
    ) -> Columns:
        """Decode ``refs`` back to back; ``extra`` leaves that many slots free at the end."""
        total = sum(r.count for r in refs)
        if parallel is None:
            parallel = self.workers > 0 and total >= self.parallel_min_points and len(refs) > 1
        out = self.pool.columns(total + extra)
        if parallel and self.procs is not None and len(refs) > 1:
            try:
                self._read_parallel(self.procs, refs, out)
                return out
            except WorkerDied as exc:  # no worker could be started: inline
                log.warning("%s; decoding inline", exc)
        self._read_inline(refs, out)
        return out

    def _read_inline(self, refs: list[BlockRef], out: Columns, at: int = 0) -> None:
        if len(refs) >= MIN_BLOCKS:
            bodies = [_read_checked(self._fd(r.path), r) for r in refs]
            counts = [r.count for r in refs]
            decode_blocks(bodies, counts, [r.codec for r in refs], _head(out, sum(counts), at))
            return
        for ref in refs:
            _decode_into(self._fd(ref.path), ref, out, at)
            at += ref.count

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            with self._lock:
                fd = self._fds.get(path)
                if fd is None:
                    fd = self._fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def warm_up(self) -> None:
        """Start the worker processes now rather than on the first large query."""
        if self.procs is not None:
            self.procs.start_all()

    def _read_parallel(self, procs: WorkerPool, refs: list[BlockRef], out: Columns) -> None:
        counts = [r.count for r in refs]
        starts = np.concatenate(([0], np.cumsum(counts))).tolist()
        with procs.take(procs.size) as ws:
            # This thread decodes the first part itself: it would only wait otherwise.
            parts = split_even(counts, len(ws) + 1)
            sent, inline = [], [parts[0]]
            for w, part in zip(ws, parts[1:], strict=False):
                n = starts[part.stop] - starts[part.start]
                try:
                    if w.fit("out", 17 * n):
                        w.send(("decode", refs[part.start : part.stop], n))
                        sent.append((w, part, n))
                        continue
                except WorkerDied as exc:
                    log.warning("%s; decoding inline", exc)
                inline.append(part)
            failure: Exception | None = None
            for part in inline:
                self._read_inline(refs[part.start : part.stop], out, starts[part.start])
            for w, part, n in sent:
                try:
                    w.answer()
                except WorkerDied as exc:  # a retry inline: reads change nothing
                    log.warning("%s; decoding inline", exc)
                    self._read_inline(refs[part.start : part.stop], out, starts[part.start])
                    continue
                except Exception as exc:  # a damaged block: the error inline would raise
                    failure = failure or exc
                    continue
                buf = w.arenas["out"].buf
                assert buf is not None
                dst, src = _head(out, n, starts[part.start]), columns_over(buf, n)
                np.copyto(dst[0], src[0])
                np.copyto(dst[1], src[1])
                np.copyto(dst[2], src[2])
            if failure is not None:
                raise failure

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
        self.pool.clear()
