"""Shared-memory arenas: anonymous memory files mapped once, pre-faulted, reused.

Handing a job's columns to another process through a fresh shared-memory
file costs more than the job: the kernel zeroes every new page on first
touch (the old process pool lost to inline decoding at every query size for
that reason). An :class:`Arena` is a ``memfd`` created once per worker and
direction, touched page by page when it is made, and reused for every job;
it is re-created (bigger) only when a job does not fit, never beyond ``cap``.

A memfd has no name in ``/dev/shm``: the worker gets its descriptor over the
control socket, and the memory is freed when both processes have let it go,
so a server killed with -9 leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import mmap
import os

import numpy as np

PAGE = mmap.PAGESIZE
POINT_BYTES = 17  # int64 timestamp + float64 value + uint8 quality


def prefault(buf: mmap.mmap) -> None:
    """Write one byte per page so later jobs find every page mapped and zeroed."""
    np.frombuffer(buf, np.uint8)[::PAGE] = 0


def map_fd(fd: int, size: int) -> mmap.mmap:
    """Map ``size`` bytes of ``fd`` shared and writable, pre-faulted."""
    buf = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    prefault(buf)
    return buf


class Arena:
    """One memfd and its mapping in this process; :meth:`fit` re-creates it to grow."""

    def __init__(self, label: str, size: int, cap: int) -> None:
        self.label = label
        self.cap = cap
        self.size = 0
        self.fd = -1
        self.buf: mmap.mmap | None = None
        self._create(min(_round(size), cap))

    def _create(self, size: int) -> None:
        self.close()
        fd = os.memfd_create(f"xtsdb-{self.label}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            self.buf = map_fd(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.fd, self.size = fd, size

    def fit(self, need: int) -> bool | None:
        """Make room for ``need`` bytes: None if it exceeds the cap, True if re-created."""
        if need > self.cap:
            return None
        if need <= self.size:
            return False
        # Doubling: a workload that grows pays a few re-creations, not one per job.
        self._create(min(max(_round(need), 2 * self.size), self.cap))
        return True

    def view(self) -> memoryview:
        assert self.buf is not None
        return memoryview(self.buf)

    def close(self) -> None:
        if self.buf is not None:
            with contextlib.suppress(BufferError):  # a view is left: the GC unmaps it later
                self.buf.close()
            self.buf = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _round(n: int) -> int:
    return max(PAGE, -(-n // PAGE) * PAGE)
