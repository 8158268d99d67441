"""InfluxDB line protocol, sans I/O: bytes in, columns of numbers out.

    measurement[,tag_key=tag_value...] field_key=field_value[,...] [timestamp]

:func:`parse` turns a body of such lines into a :class:`ParsedBatch`: one
xtsdb tag *name* per series (:func:`series_name`), and per point the index of
its series, a timestamp in microseconds, a float64 value and the field type the
line gave it (:data:`KINDS`). A line is read as
InfluxDB 1.x reads it (:mod:`.lp_grammar`): what InfluxDB refuses is refused,
with its 1-based line number, and the other lines are kept; blank lines and
``#`` comments are skipped. A historian stores numbers, so integers
(``12i``), unsigned integers (``12u``, below 2**63) and booleans become floats,
their type kept beside them (the catalog's ``value_type``, for InfluxQL); a
string field, or one named ``time``, is reported as an error for that field
while the line's other fields are kept.

A body is read in two ways that give the same result. Plain lines (no
quote, backslash, control byte, run of spaces or unusual number: nearly all
that Telegraf sends) are read all at once, as columns, by
:func:`.lp_columnar.scan`; every other line, and any line the scan is not sure
of, goes to the exact parser here, one line at a time: lines without a
backslash, quote, tab or NUL through ``bytes.split``, the others through the
scanner of :mod:`.lp_grammar`. :func:`parse_exact` reads every line the second
way; the tests hold the two to identical results. :func:`parse_by_size`
picks between them by the body's size: the scan costs a fixed half a
millisecond of numpy calls, more than reading a small body line by line.
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from .lp_batch import PRECISIONS, ParsedBatch, Part, assemble
from .lp_columnar import scan
from .lp_grammar import (
    FIELD_ESCAPES,
    FieldSkipped,
    LineError,
    esc,
    key_end,
    split_line,
    timestamp,
    unescape,
    value,
)
from .lp_grammar import lines as lines_of
from .lp_grammar import prefix as _prefix

__all__ = [
    "KINDS",
    "PRECISIONS",
    "ParsedBatch",
    "parse",
    "parse_by_size",
    "parse_exact",
    "series_name",
]

KINDS = ("float", "integer", "unsigned", "boolean")
"""Field types by code (``ParsedBatch.kinds``), as InfluxDB names them."""
# A valid number or boolean's type from its last byte: 'i', 'u', a digit or '.'
# (a float), anything else a boolean (t, true, F, ...).
_KIND_OF_LAST = bytes(
    1 if c == 105 else 2 if c == 117 else 0 if c == 46 or 48 <= c <= 57 else 3 for c in range(256)
)

_INF = float("inf")
_WS = b" \t\x00"  # what InfluxDB skips before a line, its fields and its timestamp
_partition_eq = operator.methodcaller("partition", b"=")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # as the tag catalog's rule for names
_MAX_SHOWN = 80  # characters of a bad line quoted in its error
# Series keys and field keys seen before, by every request of the process: a writer
# sends the same series again and again. Plain dicts (one get or set is atomic under
# the GIL), emptied when full, so they stay bounded.
_PREFIXES: dict[bytes, str] = {}
_FIELDS: dict[bytes, str] = {}
_CACHE_MAX = 1 << 16
SMALL_BODY_BYTES = 8 * 1024
"""Bodies under this size are read line by line (:func:`parse_by_size`). The columnar
scan costs 0.55 to 0.8 ms in numpy calls at any size; the exact parser overtakes it at
about 12 KB of five-field lines and 16 KB of one-field lines (``bench/lp_small.py``)."""


def series_name(measurement: str, tags: dict[str, str] | list[tuple[str, str]], fld: str) -> str:
    """The xtsdb tag name of one line-protocol series and field.

    ``measurement[,key=value ...].field`` with the tags sorted by key; in each
    part the characters line protocol escapes there are written escaped as
    line protocol writes them (measurement: comma and space; tag keys and
    values: comma, equals sign and space) and, in the field key only, a dot
    is escaped too, so the last unescaped dot always separates the field and
    two different series never share a name: ``cpu,host=a,region=eu.usage_idle``.
    """
    items = sorted(tags.items() if isinstance(tags, dict) else tags)
    parts = [esc(measurement, ", ")]
    parts += [f"{esc(k, ',= ')}={esc(v, ',= ')}" for k, v in items]
    return ",".join(parts) + "." + esc(fld, ",= .")


def key_prefix(key: bytes) -> str:
    """A series key as written -> the escaped canonical prefix of its names (cached)."""
    prefix = _PREFIXES.get(key)
    if prefix is None:
        prefix = _prefix(key)  # raises as the line is refused
        if len(_PREFIXES) >= _CACHE_MAX:
            _PREFIXES.clear()
        _PREFIXES[key] = prefix
    return prefix


def field_part(fk: bytes) -> str:
    """A field key as written -> the escaped last part of its names (cached)."""
    part = _FIELDS.get(fk)
    if part is None:
        fld = unescape(fk, FIELD_ESCAPES).decode()
        if fld == "time":
            raise FieldSkipped("a field named 'time' is not stored (InfluxDB drops it too)")
        part = esc(fld, ",= .")
        if len(_FIELDS) >= _CACHE_MAX:
            _FIELDS.clear()
        _FIELDS[fk] = part
    return part


def parse(
    data: bytes | bytearray | memoryview,
    precision: str = "ns",
    now_us: int | None = None,
) -> ParsedBatch:
    """Parse a body of line protocol; never raises for bad input, reports it in ``errors``.

    ``precision`` is the unit of the timestamps (:data:`PRECISIONS`; ``ValueError``
    for another one: that is the caller's bug, not the data's). A line without a
    timestamp gets ``now_us`` (default: the current time), as InfluxDB uses its
    receive time.

    Plain lines are read together by :func:`.lp_columnar.scan`, the others one
    by one by the exact parser; the result is the one :func:`parse_exact` gives.
    """
    now_us = _check(precision, now_us)
    p = _Parser()
    cols = scan(bytes(data), key_prefix, field_part)
    p.run(cols.rest)
    table = dict(zip(p.names, p.name_pos, strict=True))
    for name, pos in zip(cols.names, cols.name_pos, strict=True):
        old = table.get(name)
        if old is None or pos < old:
            table[name] = pos
    # Names in the order of their first appearance, as one reader of every line would
    # have met them.
    names = sorted(table, key=table.__getitem__)
    at = {name: i for i, name in enumerate(names)}
    exact = p.part(np.array([at[n] for n in p.names], np.int64))
    fast = cols.part(np.array([at[n] for n in cols.names], np.int64))
    return assemble(names, [fast, exact], p.errors, p.lines + cols.lines, precision, now_us)


def parse_exact(
    data: bytes | bytearray | memoryview,
    precision: str = "ns",
    now_us: int | None = None,
) -> ParsedBatch:
    """:func:`parse` with every line through the exact parser (the reference it is tested
    against, and the baseline of ``bench/ingest.py``)."""
    now_us = _check(precision, now_us)
    p = _Parser()
    body = bytes(data)
    # With a quote or a backslash, a newline may be inside a string or escaped.
    special = 34 in body or 92 in body
    p.run(lines_of(body) if special else enumerate(body.split(b"\n"), 1))
    names = p.names
    part = p.part(np.arange(len(names), dtype=np.int64))
    return assemble(names, [part], p.errors, p.lines, precision, now_us)


def parse_by_size(
    data: bytes | bytearray | memoryview,
    precision: str = "ns",
    now_us: int | None = None,
) -> ParsedBatch:
    """:func:`parse_exact` for a body under :data:`SMALL_BODY_BYTES`, :func:`parse` for a
    larger one: the same result either way, from whichever is faster at its size."""
    if len(data) < SMALL_BODY_BYTES:
        return parse_exact(data, precision, now_us)
    return parse(data, precision, now_us)


def _check(precision: str, now_us: int | None) -> int:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
    return time.time_ns() // 1000 if now_us is None else now_us


class _Parser:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}  # name -> series index
        # raw series key bytes (as written, tag order included) -> field key -> series
        self.keys: dict[bytes, dict[bytes, int]] = {}
        self.series: list[int] = []
        self.values: list[float] = []
        # Types: a series' first point's (-1: none yet), and as index * 4 + kind each
        # point of another type (rare: a series mostly keeps one type).
        self.first_kind: list[int] = []
        self.odd: list[int] = []
        self.line_ts: list[int] = []  # per line that produced points (0 if it had none)
        self.missing: list[int] = []  # indices into line_ts of lines without a timestamp
        self.line_counts: list[int] = []
        self.line_nos: list[int] = []
        self.errors: list[tuple[int, str]] = []
        self.lines = 0
        self.no = 0  # the line being read
        # where each name was first met: (line number, order within the parser)
        self.name_pos: list[tuple[int, int]] = []

    def run(self, numbered: Iterable[tuple[int, bytes]]) -> None:
        """Read each (line number, line); a line is all or nothing."""
        series, values, errors = self.series, self.values, self.errors
        line_ts, line_counts, line_nos = self.line_ts, self.line_counts, self.line_nos
        keys, missing = self.keys, self.missing
        odd, first_kind = self.odd, self.first_kind
        lines = 0
        for no, line in numbered:
            if line[-1:] == b"\r":  # CRLF line ends (InfluxDB refuses them)
                line = line[:-1]
            line = line.lstrip(_WS)
            if not line or line[0] == 35:  # '#': a comment
                continue
            lines += 1
            self.no = no
            mark, emark, omark = len(values), len(errors), len(odd)
            fields: Iterable[tuple[bytes, bytes, bytes]]
            try:
                # (an int operand makes `in` a plain memchr, where b"\\" searches a substring)
                parts = None
                if 34 in line or 9 in line or 0 in line:
                    pass  # quotes, tabs, NULs: the scanner
                elif 92 not in line:
                    parts = line.split(b" ")
                else:  # backslashes only in the series key (Boiler\ 1): split the rest
                    end = key_end(line)
                    if end > 0 and 92 not in line[end:]:
                        parts = [line[:end], *line[end + 1 :].split(b" ")]
                if parts is None:
                    key, pairs, ts_raw = split_line(line)
                    fields = [(k, b"=", v) for k, v in pairs]
                else:  # the fast path: sections apart at spaces only
                    if len(parts) == 3 and parts[1] and parts[2]:
                        key, fields_raw, ts_raw = parts
                    elif len(parts) == 2 and parts[1]:
                        key, fields_raw = parts
                        ts_raw = None
                    else:  # runs of spaces between (or after) the sections
                        key, rest = parts[0], [p for p in parts[1:] if p]
                        if not 1 <= len(rest) <= 2:
                            raise LineError("expected 'measurement[,tags] fields [timestamp]'")
                        fields_raw, ts_raw = rest[0], (rest[1] if len(rest) == 2 else None)
                    fields = map(_partition_eq, fields_raw.split(b","))
                ts = None if ts_raw is None else timestamp(ts_raw)
                fmap = keys.get(key)
                if fmap is None:
                    fmap = keys[key] = {}
                n = 0
                for fk, eq, fv in fields:
                    try:
                        idx = fmap.get(fk)
                        if idx is None or not eq:
                            if not eq or not fk:
                                raise LineError("a field must be key=value")
                            idx = fmap[fk] = self._series(key, fk)
                        # Inlined fast path: a plain decimal number (not '+1', ' 1', '1_0',
                        # 'inf'; float() would take those, and overflow to inf).
                        if fv and fv[0] > 44 and 46 <= fv[-1] <= 57 and 95 not in fv:
                            try:
                                x = float(fv)
                            except ValueError:
                                raise LineError(f"invalid number {_shown(fv)!r}") from None
                            if not -_INF < x < _INF:
                                raise LineError("number out of the float64 range")
                            kind = 0
                        elif fv[-1:] == b"i" and len(fv) < 20 and fv[:-1].isdigit():
                            x, kind = float(int(fv[:-1])), 1  # 'digits i' (< 10**18): an int64
                        else:
                            x = value(fv)
                            kind = _KIND_OF_LAST[fv[-1]]
                    except FieldSkipped as exc:
                        if fv[:1] != b'"':  # a 'time' field: its value must still be valid
                            value(fv)
                        errors.append((no, f"field {_shown(fk + b'=' + fv)!r}: {exc}"))
                        continue
                    known = first_kind[idx]
                    if kind != known:
                        if known < 0:
                            first_kind[idx] = kind
                        else:
                            odd.append(len(values) << 2 | kind)
                    series.append(idx)
                    values.append(x)
                    n += 1
                if n:
                    if ts is None:
                        missing.append(len(line_ts))
                        ts = 0
                    line_ts.append(ts)
                    line_counts.append(n)
                    line_nos.append(no)
            except (LineError, UnicodeDecodeError) as exc:
                # A bad line is all or nothing: drop what its earlier fields added.
                del series[mark:], values[mark:], errors[emark:]
                del odd[omark:]
                why = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
                errors.append((no, f"unable to parse {_shown(line)!r}: {why}"))
        self.lines += lines

    def name_of(self, key: bytes, fk: bytes) -> str:
        """The tag name of (raw series key, field key); raises as the line is refused."""
        name = key_prefix(key) + "." + field_part(fk)
        if _CONTROL.search(name):  # the catalog refuses them: refuse the line whole
            raise LineError("a name may not hold control characters (tab, NUL, ...)")
        return name

    def _series(self, key: bytes, fk: bytes) -> int:
        """The series index of (raw series key, field key); new names are added."""
        name = self.name_of(key, fk)
        idx = self.index.get(name)
        if idx is None:
            idx = self.index[name] = len(self.names)
            self.names.append(name)
            self.name_pos.append((self.no, idx))
            self.first_kind.append(-1)
        return idx

    def part(self, at: npt.NDArray[np.int64]) -> Part:
        """The points read, with ``at[i]`` the final index of ``self.names[i]``."""
        series = np.asarray(self.series, dtype=np.int64)
        kinds = np.asarray(self.first_kind, dtype=np.int64).astype(np.uint8)[series]
        odd = np.asarray(self.odd, dtype=np.int64)
        kinds[odd >> 2] = odd & 3
        line_ts = np.asarray(self.line_ts, dtype=np.int64)
        stamped = np.ones(line_ts.shape[0], dtype=bool)
        stamped[self.missing] = False
        return Part(
            at[series] if series.shape[0] else series,
            np.asarray(self.values, dtype=np.float64),
            kinds,
            np.asarray(self.line_nos, dtype=np.int64),
            line_ts,
            stamped,
            np.asarray(self.line_counts, dtype=np.int64),
        )


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _shown(line: bytes) -> str:
    text = _text(line)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."
