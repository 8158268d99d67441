"""Per-tag in-memory buffers and the merge rule shared by memory and disk reads.

A MemBuffer only ever grows by whole array slices (views into WAL record
bytes), so appending is O(1) per run of points, never per point. Points are
sorted and de-duplicated lazily, when a query or a seal needs them.

The merge rule: sources are listed oldest write first; for equal timestamps the
point from the later source (and, inside a source, the later position) wins.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .points import Float64Array, Int64Array, UInt8Array

Columns = tuple[Int64Array, Float64Array, UInt8Array]


Span = tuple[int, int]  # oldest and newest timestamp of a part (newest < oldest: empty)


class MemBuffer:
    """Unsealed points of one tag, in write order."""

    __slots__ = ("count", "first_lsn", "last_lsn", "parts", "spans")

    def __init__(self) -> None:
        self.parts: list[Columns] = []
        # The time span of each part: a query skips the parts outside its range
        # instead of merging every part (a tag fed 80 points a write has ~100).
        self.spans: list[Span] = []
        self.count = 0
        self.first_lsn = 0  # oldest WAL record with points here: bounds the checkpoint
        self.last_lsn = 0

    def append(
        self,
        ts: Int64Array,
        values: Float64Array,
        qual: UInt8Array,
        lsn: int,
        span: Span | None = None,
    ) -> None:
        """Add one write's points; ``span`` is their (oldest, newest) time if known."""
        if not self.parts:
            self.first_lsn = lsn
        self.parts.append((ts, values, qual))
        self.spans.append(span if span is not None else span_of(ts))
        self.count += int(ts.shape[0])
        self.last_lsn = lsn

    def drop_range(self, start: int, end: int) -> int:
        """Remove points with ``start <= ts < end``; returns how many were removed.

        The part list is replaced, not mutated, so a reader's snapshot stays valid.
        """
        kept: list[Columns] = []
        spans: list[Span] = []
        removed = 0
        for (ts, v, q), span in zip(self.parts, self.spans, strict=True):
            gone = (ts >= start) & (ts < end)
            n = int(np.count_nonzero(gone))
            if n == 0:
                kept.append((ts, v, q))
                spans.append(span)
                continue
            removed += n
            if n < ts.shape[0]:
                keep = ~gone
                kept.append((ts[keep], v[keep], q[keep]))
                spans.append(span_of(kept[-1][0]))
        self.parts, self.spans = kept, spans
        self.count -= removed
        return removed

    def snapshot(self) -> list[Columns]:
        """A copy of the part list: the arrays themselves are never mutated."""
        return list(self.parts)


def span_of(ts: Int64Array) -> Span:
    return (int(ts.min()), int(ts.max())) if ts.shape[0] else (0, -1)


def time_span(bufs: Iterable[MemBuffer]) -> Span | None:
    """Oldest and newest timestamp held by ``bufs``, from their parts' spans; None if empty."""
    spans = [s for b in bufs for s in b.spans if s[1] >= s[0]]
    if not spans:
        return None
    return min(s[0] for s in spans), max(s[1] for s in spans)


def overlapping(parts: list[Columns], spans: list[Span], start: int, end: int) -> list[Columns]:
    """The parts with a point in ``[start, end)`` may hold (the others cannot matter)."""
    return [p for p, (lo, hi) in zip(parts, spans, strict=True) if lo < end and hi >= start]


def sort_unique(
    ts: Int64Array, values: Float64Array, qual: UInt8Array, keep_first: bool = False
) -> Columns:
    """Sort by timestamp; of equal timestamps keep the last one written (or the first)."""
    n = ts.shape[0]
    if n < 2 or bool(np.all(ts[1:] > ts[:-1])):
        return ts, values, qual
    order = np.argsort(ts, kind="stable")
    ts, values, qual = ts[order], values[order], qual[order]
    keep = np.empty(n, dtype=bool)
    if keep_first:
        keep[0] = True
        np.not_equal(ts[1:], ts[:-1], out=keep[1:])
    else:
        keep[-1] = True
        np.not_equal(ts[1:], ts[:-1], out=keep[:-1])
    if keep.all():
        return ts, values, qual
    return ts[keep], values[keep], qual[keep]


def concat(parts: list[Columns]) -> Columns:
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.uint8)
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


def consolidate(parts: list[Columns], keep_first: bool = False) -> Columns:
    """Parts in write order -> sorted, one point per timestamp."""
    return sort_unique(*concat(parts), keep_first=keep_first)


def clip(cols: Columns, start: int, end: int) -> Columns:
    """The points with ``start <= ts < end`` of sorted columns (views, no copy)."""
    ts = cols[0]
    lo = int(np.searchsorted(ts, start, "left"))
    hi = int(np.searchsorted(ts, end, "left"))
    if lo == 0 and hi == ts.shape[0]:
        return cols
    return ts[lo:hi], cols[1][lo:hi], cols[2][lo:hi]
