"""Result columns in buffers reused from one query to the next.

A large query's columns (17 bytes a point) used to be fresh memory every
time, and the kernel zeroes each fresh page when it is first touched: in a
1 M-point query from disk that was ~40 % of the server's time (``perf``:
``clear_page_erms`` under the decoder's first writes). The columns now live in
buffers of :class:`~xtsdb.protocol.buffers.ReusableBuffers`, which hands a
buffer out again only once no view of it is left anywhere (the caller's
arrays, a frame still in the transport): results are never overwritten.
"""

from __future__ import annotations

import numpy as np

from xtsdb.protocol.buffers import Bytes, ReusableBuffers

from .membuffer import Columns

POOL_MIN_POINTS = 32_768
"""Smaller results use ordinary arrays (the allocator keeps such sizes resident)."""
POOL_MAX_BYTES = 96 * 1024 * 1024
"""Memory kept for reuse: a few 1 M-point results (17 MiB each)."""
POINT_BYTES = 17  # int64 timestamp + float64 value + uint8 quality


def columns_in(buf: Bytes, n: int) -> Columns:
    """``n`` points' columns in ``buf``, laid out for ``len(buf) // 17`` points (aligned)."""
    cap = buf.shape[0] // POINT_BYTES
    return (
        buf[: 8 * n].view(np.int64),
        buf[8 * cap : 8 * cap + 8 * n].view(np.float64),
        buf[16 * cap : 16 * cap + n],
    )


class ResultPool:
    """Writable columns for query results, reused once no result refers to them."""

    def __init__(self, max_bytes: int = POOL_MAX_BYTES, min_points: int = POOL_MIN_POINTS) -> None:
        self.buffers = ReusableBuffers(max_bytes, POINT_BYTES * min_points)

    def columns(self, n: int) -> Columns:
        """Uninitialised columns for ``n`` points."""
        return columns_in(self.buffers.take(POINT_BYTES * n), n)

    def clear(self) -> None:
        self.buffers.clear()
