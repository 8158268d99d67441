"""Block summaries: per-cell count, min, max, sum, first and last of a sealed block.

A summary lets an aggregate whose buckets cover parts of a block answer
without decoding it. The values are those the aggregates see: a NaN value is
missing (left out of every field), quality is ignored (``all_good`` says
whether every point of the block is Good, so ``good_only`` can use the
summary only when it would drop nothing).

Cells
    A block's valid points are cut at the multiples of a grid ``G`` (epoch
    aligned, floor division, so pre-1970 times are right): one cell per
    non-empty ``[k * G, (k + 1) * G)``. ``G`` is the smallest step of
    ``GRIDS`` that gives at most ``MAX_CELLS`` cells, so a block of 8,192 one-second
    points (2.3 hours) has 3 or 4 one-hour cells and buckets of whole hours or
    days answer from cells alone. Each cell holds its first and last valid
    point (time and value), count, min, max and sum; ``sum`` is
    ``np.add.reduceat`` over the cell's values, the summation the aggregate
    uses for a cell when it decodes the block (``summary_agg``), so both give
    the same bits.

Where they live
    Beside the block rows of the SQLite index (a cache; see
    docs/storage-format.md), one row per block written in the same transaction
    as the block's row, with a CRC32 over the row. In memory, a
    :class:`SummaryTable` holds them by ``(chunk_id, index)``; a summary is
    used for an entry only when its ``seq`` and body CRC match the entry.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .container import BlockEntry, crc32
from .points import GOOD_QUALITY, Float64Array, Int64Array, UInt8Array

SEC = 1_000_000
# Grid steps in microseconds (seconds up to 52 weeks), each a divisor of the next;
# the last one gives one cell per block.
_STEPS = (1, 10, 60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400, 364 * 86_400)
GRIDS = (*(s * SEC for s in _STEPS), 1 << 62)
MAX_CELLS = 8

CELL = np.dtype(
    [
        ("first_t", "<i8"),
        ("last_t", "<i8"),
        ("count", "<i8"),
        ("min", "<f8"),
        ("max", "<f8"),
        ("sum", "<f8"),
        ("first", "<f8"),
        ("last", "<f8"),
        # Plot mode (summary_plot) draws each cell's first, last, min and max *points*:
        # the times and stored values of its first min and first max (``v == min``,
        # so which of -0.0 and 0.0 was stored), and the qualities of the four.
        ("min_t", "<i8"),
        ("max_t", "<i8"),
        ("min_v", "<f8"),
        ("max_v", "<f8"),
        ("q_first", "u1"),
        ("q_last", "u1"),
        ("q_min", "u1"),
        ("q_max", "u1"),
        ("pad", "V4"),
    ]
)
# The cells of format 1 (before the plot fields): rows in that layout are outdated,
# not damaged, and recomputed at open like missing ones.
_OLD_ITEMSIZE = 64
FORMAT = 2
CellArray = npt.NDArray[np.void]
_HEAD = struct.Struct("<qqqqqqq")  # chunk_id, index, seq, body_crc, grid, all_good, n_cells
_VERSION = struct.pack("<q", FORMAT)  # in the row CRC, so no older row passes as current


class SummaryDamaged(Exception):
    """A stored summary row fails its CRC or is malformed: recompute it, never use it."""


class SummaryOutdated(SummaryDamaged):
    """A sound row of an older cell layout: recomputed (a cache upgrade, not damage)."""

    def __init__(self, chunk_id: int, index: int) -> None:
        super().__init__(f"summary of chunk {chunk_id} entry {index} has an older cell format")
        self.key = (chunk_id, index)


@dataclass(frozen=True)
class Summary:
    seq: int
    body_crc: int
    grid: int
    all_good: bool
    cells: CellArray  # only cells with at least one valid point, in time order
    # The cells as plain int64 words: concatenating structured arrays makes numpy
    # promote their dtypes field by field, which costs more than a whole query.
    words: Int64Array = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "words", self.cells.view(np.int64))

    def matches(self, e: BlockEntry) -> bool:
        return self.seq == e.seq and self.body_crc == e.body_crc


def _grid(ts: Int64Array) -> int:
    for g in GRIDS:
        k = ts // g
        if int(np.count_nonzero(k[1:] != k[:-1])) < MAX_CELLS:
            return g
    return GRIDS[-1]


def summarise(
    ts: Int64Array, v: Float64Array, q: UInt8Array, seq: int = 0, body_crc: int = 0
) -> Summary:
    """The summary of one block's points (``ts`` strictly increasing)."""
    all_good = bool(q.shape[0] == 0 or int(q.min()) >= GOOD_QUALITY)
    keep = ~np.isnan(v)
    if not keep.all():
        ts, v, q = ts[keep], v[keep], q[keep]
    n = ts.shape[0]
    if n == 0:
        return Summary(seq, body_crc, GRIDS[-1], all_good, np.zeros(0, CELL))
    g = _grid(ts)
    k = ts // g
    starts = np.concatenate(([0], np.flatnonzero(k[1:] != k[:-1]) + 1))
    ends = np.append(starts[1:], n) - 1
    cells = np.zeros(starts.shape[0], CELL)
    cells["first_t"], cells["last_t"] = ts[starts], ts[ends]
    cells["count"] = ends - starts + 1
    with np.errstate(invalid="ignore", over="ignore"):  # inf values: IEEE results
        cells["min"] = np.minimum.reduceat(v, starts)
        cells["max"] = np.maximum.reduceat(v, starts)
        cells["sum"] = np.add.reduceat(v, starts)
    cells["first"], cells["last"] = v[starts], v[ends]
    cells["q_first"], cells["q_last"] = q[starts], q[ends]
    counts = ends - starts + 1
    for name, at in (
        ("min", _first_equal(v, cells["min"], starts, counts)),
        ("max", _first_equal(v, cells["max"], starts, counts)),
    ):
        cells[f"{name}_t"], cells[f"{name}_v"], cells[f"q_{name}"] = ts[at], v[at], q[at]
    return Summary(seq, body_crc, g, all_good, cells)


def _first_equal(
    v: Float64Array, ext: Float64Array, starts: Int64Array, counts: Int64Array
) -> Int64Array:
    """Index of the first point of each cell equal to the cell's ``ext`` (no NaN in ``v``)."""
    hit = np.flatnonzero(v == np.repeat(ext, counts))
    return hit[np.searchsorted(hit, starts)]


def for_entry(s: Summary, e: BlockEntry) -> Summary:
    """``s`` bound to the block it summarises (its seq and body CRC)."""
    return Summary(e.seq, e.body_crc, s.grid, s.all_good, s.cells)


# -- rows of the index ---------------------------------------------------------

# chunk_id, index, seq, body_crc, grid, all_good, cells, crc of the row
Row = tuple[int, int, int, int, int, int, bytes, int]


def pack(chunk_id: int, index: int, s: Summary) -> Row:
    cells = s.cells.astype(CELL, copy=False).tobytes()
    head = _HEAD.pack(chunk_id, index, s.seq, s.body_crc, s.grid, int(s.all_good), len(s.cells))
    row_crc = crc32(_VERSION + head + cells)
    return (chunk_id, index, s.seq, s.body_crc, s.grid, int(s.all_good), cells, row_crc)


def unpack(row: tuple[object, ...]) -> tuple[int, int, Summary]:
    """``(chunk_id, index, summary)`` from an index row; :class:`SummaryDamaged` if bad."""
    # A flipped type byte in an SQLite record can make any column text, a float or a blob.
    ints = [x for x in (*row[:6], *row[7:]) if type(x) is int]
    cells = row[6] if len(row) == 8 else None
    if len(ints) != 7 or not isinstance(cells, bytes):
        raise SummaryDamaged("malformed summary row")
    chunk_id, index, seq, body_crc, grid, good, crc = ints
    try:
        old = _HEAD.pack(chunk_id, index, seq, body_crc, grid, good, len(cells) // _OLD_ITEMSIZE)
        head = _HEAD.pack(chunk_id, index, seq, body_crc, grid, good, len(cells) // CELL.itemsize)
    except struct.error as exc:
        raise SummaryDamaged(f"summary row out of range ({exc})") from None
    if len(cells) % _OLD_ITEMSIZE == 0 and crc32(old + cells) == crc and grid in GRIDS:
        raise SummaryOutdated(chunk_id, index)
    if len(cells) % CELL.itemsize:
        raise SummaryDamaged("malformed summary row")
    if crc32(_VERSION + head + cells) != crc or grid not in GRIDS:
        raise SummaryDamaged(f"summary of chunk {chunk_id} entry {index} fails its CRC")
    arr = np.frombuffer(cells, CELL).copy()
    return chunk_id, index, Summary(seq, body_crc, grid, bool(good), arr)


# -- in memory -----------------------------------------------------------------


class SummaryTable:
    """Summaries by ``(chunk_id, index)``, and the rows still to write to the index.

    Thread-safe: the sealer adds (under the seal lock), queries read and heal
    (a summary recomputed by decoding is added here and written with the next
    index transaction).
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[int, int], Summary] = {}
        self._unwritten: dict[tuple[int, int], Summary] = {}
        self._lock = threading.Lock()
        self.healed = 0  # summaries recomputed by decoding after the index failed them

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, e: BlockEntry) -> Summary | None:
        s = self._by_key.get((e.chunk_id, e.index))
        return s if s is not None and s.matches(e) else None

    def get_many(self, entries: list[BlockEntry]) -> list[Summary | None]:
        """:meth:`get` of each entry (the per-block step of a query: kept lean)."""
        by_key = self._by_key
        return [
            s
            if (s := by_key.get((e.chunk_id, e.index))) is not None
            and s.seq == e.seq
            and s.body_crc == e.body_crc
            else None
            for e in entries
        ]

    def put(self, e: BlockEntry, s: Summary, write: bool = True) -> None:
        """Hold ``s`` for ``e``; ``write``: also write it with the next index transaction."""
        s = for_entry(s, e)
        key = (e.chunk_id, e.index)
        with self._lock:
            self._by_key[key] = s
            if write:
                self._unwritten[key] = s

    def take_unwritten(self) -> list[Row]:
        """The rows to write now (:meth:`keep_unwritten` gives them back on failure)."""
        with self._lock:
            out = [pack(c, i, s) for (c, i), s in self._unwritten.items()]
            self._unwritten.clear()
        return out

    def keep_unwritten(self, rows: list[Row]) -> None:
        with self._lock:
            for c, i, *_ in rows:
                s = self._by_key.get((c, i))
                if s is not None:
                    self._unwritten.setdefault((c, i), s)

    def rows(self) -> list[Row]:
        """Every summary held, as index rows (to re-mirror a recreated index)."""
        with self._lock:
            return [pack(c, i, s) for (c, i), s in self._by_key.items()]

    def drop_chunk(self, chunk_id: int) -> None:
        with self._lock:
            for key in [k for k in self._by_key if k[0] == chunk_id]:
                del self._by_key[key]
                self._unwritten.pop(key, None)
