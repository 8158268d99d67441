"""The ``write_point`` buffer: four ``array.array`` columns, drained as numpy views.

A point costs four C-level appends and no allocation beyond amortised array
growth: no numpy scalar, no tuple, no msgpack per point. The arrays also do
the type and range checks for free (``array('I')`` refuses a tag of -1 or
2**32, ``array('q')`` refuses a float timestamp), so the common path has no
Python-level validation at all; only a refused append takes the slow path.

The buffer knows nothing of time, sockets or threads: the transports decide
when to drain it and hold whatever lock their concurrency model needs.
"""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np

from xtsdb.protocol.errors import InvalidInput

from ._convert import to_us
from .results import Float64Array, Int64Array, UInt8Array, UInt32Array

Columns = tuple[UInt32Array, Int64Array, Float64Array, UInt8Array]

# array's C types have platform sizes; pick the 4-byte unsigned one for tag ids.
_U32 = "I" if array("I").itemsize == 4 else "L"


class PointBuffer:
    """Points appended one at a time, taken out as one columnar batch.

    The columns live as long as the buffer, so a transport may cache their
    bound ``append`` methods (:attr:`appenders`) and inline the four calls in
    its ``write_point``: a method call per point is a visible share of its
    cost (``bench/server.py`` measures ``write_point``). Inlined, it must
    follow the protocol of :meth:`append`: on ``TypeError``, ``OverflowError``
    or ``ValueError`` call :meth:`append_slow` instead.
    """

    __slots__ = ("_q", "_tags", "_ts", "_values", "appenders")

    def __init__(self) -> None:
        self._tags = array(_U32)
        self._ts = array("q")
        self._values = array("d")
        self._q = array("B")
        self.appenders = (self._tags.append, self._ts.append, self._values.append, self._q.append)

    def __len__(self) -> int:
        return len(self._ts)

    @property
    def timestamps(self) -> array[int]:
        """The timestamp column; ``len()`` of it is the cheapest point count."""
        return self._ts

    def append(self, tag: int, ts: Any, value: float, quality: int) -> int:
        """Add one point; the number of points now buffered.

        :class:`InvalidInput` (and nothing buffered) for a bad tag, timestamp,
        value or quality.
        """
        try:
            self._tags.append(tag)
            self._ts.append(ts)
            self._values.append(value)
            self._q.append(quality)
        except (TypeError, OverflowError, ValueError):
            self.append_slow(tag, ts, value, quality)
        return len(self._ts)

    def append_slow(self, tag: Any, ts: Any, value: Any, quality: Any) -> None:
        """After a refused fast append: undo its partial effect, then convert and check."""
        n = min(len(self._tags), len(self._ts), len(self._values), len(self._q))
        for col in (self._tags, self._ts, self._values, self._q):
            del col[n:]
        if isinstance(tag, bool) or not isinstance(tag, int | np.integer):
            raise InvalidInput(f"tag must be an int, got {type(tag).__name__}")
        if not 0 <= int(tag) < 1 << 32:
            raise InvalidInput(f"tag id {int(tag)} is out of range 0..{(1 << 32) - 1}")
        ts_us = to_us(ts)
        if not -(1 << 63) <= ts_us < 1 << 63:
            raise InvalidInput(f"timestamp {ts_us} does not fit int64 microseconds")
        if isinstance(quality, bool) or not isinstance(quality, int | np.integer):
            raise InvalidInput(f"quality must be an int 0..255, got {type(quality).__name__}")
        if not 0 <= int(quality) <= 255:
            raise InvalidInput(f"quality {int(quality)} is out of range 0..255")
        if isinstance(value, str | bytes):
            raise InvalidInput(f"value must be a number, got {type(value).__name__}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"value must be a number, got {type(value).__name__}") from None
        self._tags.append(int(tag))
        self._ts.append(ts_us)
        self._values.append(v)
        self._q.append(int(quality))

    def take(self) -> Columns | None:
        """All buffered points as ``(tags, ts, values, q)`` numpy arrays; the buffer empties.

        Copies (one memcpy per batch, small next to encoding it) so the columns,
        and the cached ``append`` methods bound to them, stay valid.
        """
        if not self._ts:
            return None
        cols = (
            np.frombuffer(self._tags, dtype=np.uint32).copy(),
            np.frombuffer(self._ts, dtype=np.int64).copy(),
            np.frombuffer(self._values, dtype=np.float64).copy(),
            np.frombuffer(self._q, dtype=np.uint8).copy(),
        )
        for col in (self._tags, self._ts, self._values, self._q):
            del col[:]
        return cols
