"""The single-point write path: points staged in array.array columns until a commit.

One Python call per point is the whole cost budget of this path (about a
microsecond: the README's ``write_point`` row, from bench/engine.py), so a
point is four ``array.append`` calls and nothing else. The typecodes validate
for free: an out-of-range tag id or quality raises ``OverflowError``, a float
timestamp ``TypeError``. A commit turns the columns into one columnar batch
(zero-copy views) and group-commits it like any other write.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable

import numpy as np

from xtsdb.protocol.errors import InvalidInput

from .points import TS_LIMIT
from .wal_records import WriteBatch

AUTO_COMMIT_POINTS = 65_536


class PointStager:
    """Thread-safe staging area in front of ``write_batches``."""

    def __init__(
        self, write_batches: Callable[[list[WriteBatch]], int], applied_lsn: Callable[[], int]
    ) -> None:
        self._write_batches = write_batches
        self._applied_lsn = applied_lsn
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        # array typecodes I/q/d/B are uint32/int64/float64/uint8 on every platform
        # xtsdb runs on, so commit can view them as numpy arrays without copying.
        self._tag, self._ts, self._val, self._q = array("I"), array("q"), array("d"), array("B")
        self._add = (self._tag.append, self._ts.append, self._val.append, self._q.append)
        self._n = 0

    def add(self, tag_id: int, ts_us: int, value: float, quality: int) -> None:
        with self._lock:
            add_tag, add_ts, add_val, add_q = self._add
            try:
                if not -TS_LIMIT < ts_us < TS_LIMIT:
                    raise OverflowError("timestamp out of range")
                add_tag(tag_id)
                add_ts(ts_us)
                add_val(value)
                add_q(quality)
            except (TypeError, OverflowError) as exc:
                n = self._n  # undo the appends that went through: nothing half-staged
                for col in (self._tag, self._ts, self._val, self._q):
                    del col[n:]
                raise InvalidInput(
                    f"bad point ({tag_id!r}, {ts_us!r}, {value!r}, {quality!r}): {exc}"
                ) from None
            self._n += 1
            if self._n >= AUTO_COMMIT_POINTS:
                self._commit()

    def commit(self) -> int:
        with self._lock:
            return self._commit()

    def _commit(self) -> int:
        if not self._n:
            return self._applied_lsn()
        batch = WriteBatch.build(
            np.frombuffer(self._tag, np.uint32),
            np.frombuffer(self._ts, np.int64),
            np.frombuffer(self._val, np.float64),
            np.frombuffer(self._q, np.uint8),
        )
        self._reset()
        return self._write_batches([batch])
