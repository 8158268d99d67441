"""The CSV format of ``xtsdb import``/``export``: lines in, columns out, and back (no I/O).

Two layouts:

- **long**: ``tag,timestamp,value[,quality]``, one point per line. ``tag`` is a
  tag name, or a tag id when it is all digits.
- **wide**: ``timestamp,TAG1,TAG2,...``, a header naming the tags (names, or
  all-digit ids) and one line per timestamp; an empty cell is "no point".

A timestamp is integer microseconds since the Unix epoch or ISO 8601 with a
zone (``2024-05-01T00:00:00Z``, ``...+02:00``); a naive time is refused, as
everywhere in xtsdb. Blank lines and lines starting with ``#`` are skipped.
A value is what ``float()`` reads, or ``nan(0x<16 hex digits>)``: the bits of
a NaN other than the canonical one (``nan``), so that an export imports back
bit for bit (:func:`value_cells` writes it).

Each chunk is parsed by ``numpy.loadtxt`` (C since numpy 1.23; the parse rate
is in docs/ingest.md, measured by bench/ingest.py) with the tag column split
off in Python (a dict lookup per row). When
numpy refuses a chunk, the slow path re-reads it row by row with :mod:`csv`
(quoted fields, ISO times that numpy cannot take, a bad line) and stops at
the first bad line: the :class:`Chunk` then holds exactly the rows above it
and names the line, so an import can commit those and report precisely.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from xtsdb.protocol.errors import InvalidInput

from .results import Float64Array, Int64Array, UInt8Array, UInt32Array

LAYOUTS = ("long", "wide")
TS_HEADERS = frozenset({"timestamp", "time", "ts", "timestamp_us", "time_us", "datetime"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_CELL = 40  # bytes per text cell in the fast path; a longer cell takes the slow path
_DIGITS = re.compile(r"\d+\Z")
_NAN_CELL = re.compile(r"nan\(0x([0-9a-f]{16})\)\Z", re.IGNORECASE)
_CANONICAL_NAN = int(np.array(np.nan).view(np.uint64))  # what float("nan") and 'nan' read as
_EXPONENT = 0x7FF0000000000000


class CsvError(InvalidInput):
    """The file's layout cannot be worked out; the message says what to change."""


@dataclass(frozen=True)
class Layout:
    kind: str  # "long" or "wide"
    header: bool  # the first data-ish line was a header (consumed)
    quality: bool = False  # long: a fourth column of qualities
    columns: tuple[str, ...] = ()  # wide: the tag keys of columns 1..k


@dataclass
class Chunk:
    """Rows of one chunk: ``keys[key_index[i]]`` is row i's tag (as written in the file)."""

    keys: list[str]
    key_index: UInt32Array
    ts: Int64Array
    values: Float64Array
    qualities: UInt8Array | None
    error: tuple[int, str] | None = None  # (line, why): rows from this line on are not here

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def from_rows(
        cls,
        keys: list[str],
        key_index: list[int],
        ts: list[int],
        values: list[float],
        qualities: list[int] | None,
        error: tuple[int, str] | None,
    ) -> Chunk:
        """A chunk from the slow path's per-row lists."""
        q = None if qualities is None else np.asarray(qualities, dtype=np.uint8)
        kidx = np.asarray(key_index, dtype=np.uint32)
        floats = np.asarray(values, dtype=np.float64)
        return cls(keys, kidx, np.asarray(ts, dtype=np.int64), floats, q, error)

    @classmethod
    def wide(cls, keys: list[str], parts: list[tuple[Int64Array, Float64Array]]) -> Chunk:
        """A wide chunk from each tag column's timestamps and values of its filled cells."""
        index = [np.full(ts.shape[0], j, dtype=np.uint32) for j, (ts, _v) in enumerate(parts)]
        ts, values = (np.concatenate(col) for col in zip(*parts, strict=True))
        return cls(keys, np.concatenate(index), ts, values, None)


def detect(first: list[str], layout: str | None, name: str) -> Layout:
    """The layout from the first non-blank, non-comment line (given as ``first``'s fields)."""
    cells = [c.strip().lower() for c in first]
    if layout not in (None, *LAYOUTS):
        raise CsvError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    long_header = len(cells) in (3, 4) and cells[0] == "tag" and cells[1] in TS_HEADERS
    if layout in (None, "long") and long_header:
        return Layout("long", True, quality=len(cells) == 4)
    if layout in (None, "wide") and cells and cells[0] in TS_HEADERS and not long_header:
        if len(cells) < 2:
            raise CsvError(f"{name}: a wide header needs at least one tag column")
        return Layout("wide", True, columns=tuple(c.strip() for c in first[1:]))
    if layout == "wide":
        raise CsvError(f"{name}: the wide layout needs a header 'timestamp,TAG1,TAG2,...'")
    if len(cells) not in (3, 4):
        raise CsvError(
            f"{name}: expected 'tag,timestamp,value[,quality]' (long) or a header "
            f"'timestamp,TAG1,...' (wide); the first line has {len(cells)} columns"
        )
    return Layout("long", False, quality=len(cells) == 4)


def quote(cell: str) -> str:
    """A CSV cell: quoted when it holds a comma, a quote or a line break (tag names may)."""
    if any(c in cell for c in ',"\n\r') or cell != cell.strip():
        return '"' + cell.replace('"', '""') + '"'
    return cell


def iso_us(text: str) -> int:
    """ISO 8601 with a zone -> microseconds; ``ValueError`` for anything else."""
    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"time {text.strip()!r} has no zone: add Z or +hh:mm")
    return (dt - _EPOCH) // _ONE_US


def parse_time_cell(text: str) -> int:
    text = text.strip()
    if _DIGITS.match(text.lstrip("+-")):
        return int(text)
    try:
        return iso_us(text)
    except ValueError as exc:
        if "no zone" in str(exc):
            raise
        why = f"timestamp {text!r} is neither integer microseconds nor ISO 8601"
        raise ValueError(why) from None


def value_cells(values: Float64Array) -> list[str]:
    """CSV cells of values: ``repr`` (the shortest text that reads back as the same
    float), but ``nan(0x...)`` with the bits for a NaN other than the canonical one."""
    cells = [repr(v) for v in values.tolist()]
    bits = values.view(np.uint64)
    for i in np.flatnonzero(np.isnan(values) & (bits != _CANONICAL_NAN)).tolist():
        cells[i] = f"nan(0x{int(bits[i]):016x})"
    return cells


def _nan_bits(text: str) -> float:
    """``nan(0x...)`` -> that NaN; ``ValueError`` if the bits are not a NaN's."""
    m = _NAN_CELL.match(text.strip())
    bits = int(m.group(1), 16) if m else 0
    if bits & _EXPONENT != _EXPONENT or not bits & ~(_EXPONENT | 1 << 63):
        raise ValueError(f"{text.strip()!r} is not nan(0x<the 16 hex digits of a NaN>)")
    return float(np.array(bits, dtype=np.uint64).view(np.float64))


def float_column(col: np.ndarray) -> Float64Array:
    """A bytes column of values (numpy's C parse; ``nan(0x...)`` cells one by one);
    ``ValueError`` if a cell is neither."""
    try:
        out: Float64Array = col.astype(np.float64)
        return out
    except ValueError:
        odd = np.char.startswith(np.char.lower(col), b"nan(")
        out = np.empty(col.shape[0], dtype=np.float64)
        out[~odd] = col[~odd].astype(np.float64)
        out[odd] = [_nan_bits(c.decode()) for c in col[odd].tolist()]
        return out


def _ts_column(col: np.ndarray) -> Int64Array:
    """A bytes column of timestamps: integers (numpy) or ISO 8601 (Python, C-level parse)."""
    try:
        out: Int64Array = col.astype(np.int64)
        return out
    except ValueError:
        return np.fromiter((iso_us(c.decode()) for c in col.tolist()), np.int64, col.shape[0])


def _split_keys(lines: list[bytes]) -> tuple[list[str], UInt32Array]:
    """The first column of each line as (distinct keys, index per line)."""
    firsts = [line.partition(b",")[0].strip() for line in lines]
    index = {k: i for i, k in enumerate(dict.fromkeys(firsts))}  # C-level, first-seen order
    key_index = np.fromiter(map(index.__getitem__, firsts), np.uint32, len(firsts))
    return [k.decode() for k in index], key_index


def _plain(lines: list[bytes]) -> bool:
    """Whether the fast path may split these lines itself: no quotes, comments or blanks."""
    blob = b"".join(lines)
    return not (b'"' in blob or b"#" in blob or b"\n\n" in blob or blob[:1] in (b"\n", b"\r"))


def parse_long(lines: list[bytes], first_line: int, quality: bool) -> Chunk:
    """Long-layout lines (bytes, newline included) numbered from ``first_line``."""
    if lines and _plain(lines):
        try:
            return _long_fast(lines, quality)
        except (ValueError, UnicodeDecodeError):
            pass  # a bad or unusual line: the slow path finds it
        if any(b"nan(" in line.lower() for line in lines):
            try:  # NaN payloads: the value column as text, then converted
                return _long_fast(lines, quality, text_values=True)
            except (ValueError, UnicodeDecodeError):
                pass
    return _long_slow(lines, first_line, quality)


def _loadtxt(lines: list[bytes], cols: tuple[int, ...], dtype: list[tuple[str, str]]) -> Any:
    rows = np.loadtxt(lines, delimiter=",", usecols=cols, dtype=dtype, ndmin=1, encoding=None)
    if rows.shape[0] != len(lines):
        raise ValueError("a line numpy skipped: the slow path counts lines")
    return rows


def _long_fast(lines: list[bytes], quality: bool, text_values: bool = False) -> Chunk:
    tail = [("v", f"S{_CELL}" if text_values else "f8"), ("q", "i8")][: 2 if quality else 1]
    cols = (1, 2, 3)[: len(tail) + 1]
    try:  # tag ids and integer times: every column in C
        rows = _loadtxt(lines, (0, *cols), [("k", "i8"), ("ts", "i8"), *tail])
        if rows.shape[0] and rows["k"].min() < 0:
            raise ValueError("a negative tag is a name")
        uniq, inverse = np.unique(rows["k"], return_inverse=True)
        keys, key_index = [str(k) for k in uniq.tolist()], inverse.astype(np.uint32)
        ts: Int64Array = rows["ts"]
    except ValueError:  # names, or ISO times: the tag column in Python, times maybe too
        keys, key_index = _split_keys(lines)
        if not all(keys):
            raise ValueError("an empty tag") from None
        try:
            rows = _loadtxt(lines, cols, [("ts", "i8"), *tail])
            ts = rows["ts"]
        except ValueError:
            rows = _loadtxt(lines, cols, [("ts", f"S{_CELL}"), *tail])
            if _full(rows["ts"]):
                raise ValueError("a cell may have been cut") from None
            ts = _ts_column(rows["ts"])
    q = None
    if quality:
        q_raw = rows["q"]
        if q_raw.size and (q_raw.min() < 0 or q_raw.max() > 255):
            raise ValueError("quality out of range")
        q = q_raw.astype(np.uint8)
    values = rows["v"]
    if text_values:
        if _full(values):
            raise ValueError("a cell may have been cut")
        values = float_column(values)
    return Chunk(keys, key_index, ts.copy(), values.copy(), q)


def _full(col: np.ndarray) -> bool:
    """Whether some cell may have been cut at the fixed width."""
    return bool(col.size) and int(np.char.str_len(col).max()) >= _CELL


class _BadLine(Exception):
    def __init__(self, line: int, why: str) -> None:
        super().__init__(why)
        self.line = line


def _rows(lines: list[bytes], first_line: int) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of the data lines, parsed by :mod:`csv` (quotes and all)."""
    for i, line in enumerate(lines):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise _BadLine(first_line + i, "not UTF-8") from None
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        for fields in csv.reader(io.StringIO(text)):
            yield first_line + i, fields


def read_value(text: str) -> float:
    """A value cell: what ``float()`` reads, or ``nan(0x...)``; ``ValueError`` otherwise."""
    try:
        return float(text)
    except ValueError:
        if text.strip()[:4].lower() != "nan(":
            raise
        return _nan_bits(text)


def _number(text: str, what: str) -> float:
    try:
        return read_value(text)
    except ValueError:
        raise ValueError(f"{what} {text.strip()!r} is not a number") from None


def _long_slow(lines: list[bytes], first_line: int, quality: bool) -> Chunk:
    index: dict[str, int] = {}
    kidx: list[int] = []
    ts: list[int] = []
    vals: list[float] = []
    qs: list[int] = []
    ncols = 4 if quality else 3
    error = None
    try:
        for no, fields in _rows(lines, first_line):
            try:
                if len(fields) != ncols:
                    raise ValueError(f"expected {ncols} columns, got {len(fields)}")
                key = fields[0].strip()
                if not key:
                    raise ValueError("empty tag")
                t = parse_time_cell(fields[1])
                v = _number(fields[2], "value")
                qv = int(q) if quality and _DIGITS.match(q := fields[3].strip()) else -1
                if quality and not 0 <= qv <= 255:
                    raise ValueError(f"quality {fields[3].strip()!r} is not an integer 0..255")
            except ValueError as exc:
                raise _BadLine(no, f"{exc}: {','.join(fields)!r}") from None
            kidx.append(index.setdefault(key, len(index)))
            ts.append(t)
            vals.append(v)
            qs.append(qv)
    except _BadLine as bad:
        error = (bad.line, str(bad))
    return Chunk.from_rows(list(index), kidx, ts, vals, qs if quality else None, error)


def parse_wide(lines: list[bytes], first_line: int, columns: tuple[str, ...]) -> Chunk:
    """Wide-layout lines: column j+1 holds tag ``columns[j]``; empty cells are skipped."""
    if lines and _plain(lines):
        try:
            return _wide_fast(lines, columns)
        except (ValueError, UnicodeDecodeError):
            pass
    return _wide_slow(lines, first_line, columns)


def _wide_fast(lines: list[bytes], columns: tuple[str, ...]) -> Chunk:
    k = len(columns)
    dtype = [(f"c{j}", f"S{_CELL}") for j in range(k + 1)]
    rows = np.loadtxt(lines, delimiter=",", dtype=dtype, ndmin=1, encoding=None)
    if rows.shape[0] != len(lines) or any(_full(rows[f"c{j}"]) for j in range(k + 1)):
        raise ValueError("row count or cells need the slow path")
    ts_all = _ts_column(rows["c0"])
    parts = []
    for j in range(k):
        col = rows[f"c{j + 1}"]
        have = col != b""
        parts.append((ts_all[have], float_column(col[have])))
    return Chunk.wide(list(columns), parts)


def _wide_slow(lines: list[bytes], first_line: int, columns: tuple[str, ...]) -> Chunk:
    kidx: list[int] = []
    ts: list[int] = []
    vals: list[float] = []
    error = None
    try:
        for no, fields in _rows(lines, first_line):
            try:
                if len(fields) != len(columns) + 1:
                    raise ValueError(f"expected {len(columns) + 1} columns, got {len(fields)}")
                t = parse_time_cell(fields[0])
                row = [(j, _number(c, columns[j])) for j, c in enumerate(fields[1:]) if c.strip()]
            except ValueError as exc:
                raise _BadLine(no, f"{exc}: {','.join(fields)!r}") from None
            for j, v in row:
                kidx.append(j)
                ts.append(t)
                vals.append(v)
    except _BadLine as bad:
        error = (bad.line, str(bad))
    return Chunk.from_rows(list(columns), kidx, ts, vals, None, error)


Columns = list[tuple[Any, Any, Any]]  # per tag: (timestamps, values, qualities)
