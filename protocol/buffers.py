"""Large byte buffers reused once nothing refers to them any more.

Fresh memory is not free: the kernel zeroes every page the first time it is
touched, and for a 17 MB query answer that costs more than decoding or
copying it. The allocator hands big blocks back to the kernel when they are
freed (and often when they are freed by another thread), so the next answer
faults them all in again. :class:`ReusableBuffers` keeps a few of them.

A buffer is handed out again only when nothing outside the pool refers to
it. Whoever takes one makes numpy views of it (their ``base`` is the buffer)
and ``memoryview`` s of those, and each holds a reference: so the buffer's
reference count says whether some result, message or frame in a transport
still uses it. Results can be kept for as long as their owner likes; they are
never overwritten. No release call exists to forget.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import numpy.typing as npt

Bytes = npt.NDArray[np.uint8]

# References to an idle buffer while _take looks at it: the pool's list, the local
# variable and getrefcount's own argument. A view alive anywhere adds one more.
_IDLE_REFS = 3


def rounded(n: int) -> int:
    """``n`` rounded up to 1/8 of its power of two: at most 12.5 % spare, and sizes recur."""
    step = 1 << max(n.bit_length() - 4, 0)
    return -(-n // step) * step


class ReusableBuffers:
    """A few uint8 buffers of at least ``min_bytes``, at most ``max_bytes`` kept (thread-safe)."""

    def __init__(self, max_bytes: int, min_bytes: int = 0) -> None:
        self.max_bytes = max_bytes
        self.min_bytes = min_bytes
        self._bufs: list[Bytes] = []  # least recently used first
        self._lock = threading.Lock()
        self.reused = 0  # counters, for tests and benchmarks
        self.allocated = 0

    @property
    def held_bytes(self) -> int:
        return sum(b.nbytes for b in self._bufs)

    def take(self, nbytes: int) -> Bytes:
        """An uninitialised buffer of at least ``nbytes``; make views of it and let it go.

        The caller's own reference marks it busy until its views take over.
        """
        if nbytes < self.min_bytes:
            return np.empty(nbytes, np.uint8)
        with self._lock:
            return self._take(nbytes)

    def _take(self, nbytes: int) -> Bytes:
        best = -1
        for i in range(len(self._bufs)):  # no enumerate: its reused tuple holds a reference
            buf = self._bufs[i]
            idle = buf.shape[0] >= nbytes and sys.getrefcount(buf) <= _IDLE_REFS
            if idle and (best < 0 or buf.shape[0] < self._bufs[best].shape[0]):
                best = i
        if best >= 0:
            buf = self._bufs.pop(best)
            self._bufs.append(buf)  # most recently used last
            self.reused += 1
            return buf
        buf = np.empty(rounded(nbytes), np.uint8)
        self.allocated += 1
        if buf.nbytes <= self.max_bytes:
            self._make_room(buf.nbytes)
            if self.held_bytes + buf.nbytes <= self.max_bytes:
                self._bufs.append(buf)
        return buf  # not kept when busy buffers fill the pool: freed with its views

    def _make_room(self, nbytes: int) -> None:
        """Forget idle buffers, least recently used first, until ``nbytes`` more fit."""
        i = 0
        while i < len(self._bufs) and self.held_bytes + nbytes > self.max_bytes:
            if sys.getrefcount(self._bufs[i]) <= _IDLE_REFS - 1:  # the list and the argument
                del self._bufs[i]
            else:
                i += 1

    def clear(self) -> None:
        with self._lock:
            self._bufs.clear()
