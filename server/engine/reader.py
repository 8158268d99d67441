"""Reading and decoding blocks: inline for small queries, a process pool for large ones.

Large queries decode in a bounded pool of worker processes (each with its own
file descriptors), straight into one shared-memory result buffer: a file in
``/dev/shm`` that the parent maps and the workers write through. Nothing big
crosses a pipe (pickling arrays is slow next to decoding them), and the result
arrays the caller gets are views of that mapping, so decoded columns are
never copied on their way back. The file is unlinked as soon as the workers
are done; the memory lives as long as the arrays do.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import tempfile
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from xtsdb.protocol.errors import CorruptionError, StorageError

from .block_codec import decode_block
from .container import crc32
from .membuffer import Columns
from .multiblock import MIN_BLOCKS, decode_blocks
from .result_pool import ResultPool


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


def _columns_over(buf: mmap.mmap | bytearray, total: int) -> Columns:
    return (
        np.frombuffer(buf, np.int64, total, 0),
        np.frombuffer(buf, np.float64, total, 8 * total),
        np.frombuffer(buf, np.uint8, total, 16 * total),
    )


# -- worker side -------------------------------------------------------------

_worker_fds: dict[str, int] = {}


def _worker_fd(path: str) -> int:
    fd = _worker_fds.get(path)
    if fd is None:
        fd = _worker_fds[path] = os.open(path, os.O_RDONLY)
    return fd


def _worker_decode(shm_path: str, total: int, jobs: list[tuple[BlockRef, int]]) -> int:
    fd = os.open(shm_path, os.O_RDWR)
    try:
        with mmap.mmap(fd, 17 * total) as buf:
            out = _columns_over(buf, total)
            for ref, at in jobs:
                _decode_into(_worker_fd(ref.path), ref, out, at)
            del out  # release the buffer exports before the mmap closes
    finally:
        os.close(fd)
    return len(jobs)


# -- parent side ---------------------------------------------------------------


class BlockReader:
    """Decodes lists of blocks into contiguous columns, in the order given."""

    def __init__(self, workers: int, parallel_min_points: int) -> None:
        self.workers = workers
        self.parallel_min_points = parallel_min_points
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}
        self.pool = ResultPool()  # inline reads decode into buffers reused across queries
        self.shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()

    def read(
        self, refs: list[BlockRef], *, parallel: bool | None = None, extra: int = 0
    ) -> Columns:
        """Decode ``refs`` back to back; ``extra`` leaves that many slots free at the end."""
        total = sum(r.count for r in refs)
        if parallel is None:
            parallel = self.workers > 0 and total >= self.parallel_min_points and len(refs) > 1
        if parallel:
            return self._read_parallel(refs, total, extra)
        out = self.pool.columns(total + extra)
        if len(refs) >= MIN_BLOCKS:
            bodies = [_read_checked(self._fd(r.path), r) for r in refs]
            counts = [r.count for r in refs]
            decode_blocks(bodies, counts, [r.codec for r in refs], _head(out, total))
            return out
        at = 0
        for ref in refs:
            _decode_into(self._fd(ref.path), ref, out, at)
            at += ref.count
        return out

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            with self._lock:
                fd = self._fds.get(path)
                if fd is None:
                    fd = self._fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # forkserver: the server process has threads (event loop, flush
                # task), and forking a threaded process is unsafe.
                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload([__name__])
                self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
            return self._pool

    def warm_up(self) -> None:
        """Start the worker processes now rather than on the first large query."""
        pool = self._executor()
        for f in [pool.submit(os.getpid) for _ in range(self.workers)]:
            f.result()

    def _read_parallel(self, refs: list[BlockRef], total: int, extra: int) -> Columns:
        # A worker that dies (killed, out of memory) breaks the whole executor, and
        # it stays broken: every later query would fail. Reads change nothing, so
        # the query is tried once more on a fresh pool.
        for attempt in (1, 2):
            pool = self._executor()
            try:
                return self._read_in(pool, refs, total, extra)
            except BrokenProcessPool as exc:
                self._drop_pool(pool)
                if attempt == 2:
                    raise StorageError(f"block reader processes keep dying: {exc}") from exc
        raise AssertionError("unreachable")

    def _drop_pool(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:  # another thread may have replaced it already
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def _read_in(
        self, pool: ProcessPoolExecutor, refs: list[BlockRef], total: int, extra: int
    ) -> Columns:
        size = total + extra
        fd, shm_path = tempfile.mkstemp(prefix="xtsdb-read-", dir=self.shm_dir)
        try:
            os.ftruncate(fd, max(17 * size, 1))
            buf = mmap.mmap(fd, max(17 * size, 1))
        finally:
            os.close(fd)
        try:
            futures: list[Future[int]] = []
            for jobs in _split(refs, self.workers * 2):
                futures.append(pool.submit(_worker_decode, shm_path, size, jobs))
            for f in futures:
                f.result()
        finally:
            os.unlink(shm_path)
        return _columns_over(buf, size)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
        self.pool.clear()


def _split(refs: list[BlockRef], parts: int) -> list[list[tuple[BlockRef, int]]]:
    """Contiguous groups of blocks with about equal point counts, with output offsets."""
    total = sum(r.count for r in refs)
    target = max(1, -(-total // parts))
    groups: list[list[tuple[BlockRef, int]]] = [[]]
    at = filled = 0
    for ref in refs:
        if filled >= target:
            groups.append([])
            filled = 0
        groups[-1].append((ref, at))
        at += ref.count
        filled += ref.count
    return [g for g in groups if g]
