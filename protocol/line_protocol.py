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

Parsing is per line in Python, which the text format makes inherent. Lines
without a backslash, a double quote, a tab or a NUL (nearly all that Telegraf
sends) take a fast path built on ``bytes.split``; only the others go through
the scanner of :mod:`.lp_grammar`.
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

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

__all__ = ["KINDS", "PRECISIONS", "ParsedBatch", "parse", "series_name"]

KINDS = ("float", "integer", "unsigned", "boolean")
"""Field types by code (``ParsedBatch.kinds``), as InfluxDB names them."""
# A valid number or boolean's type from its last byte: 'i', 'u', a digit or '.'
# (a float), anything else a boolean (t, true, F, ...).
_KIND_OF_LAST = bytes(
    1 if c == 105 else 2 if c == 117 else 0 if c == 46 or 48 <= c <= 57 else 3 for c in range(256)
)

PRECISIONS: dict[str, tuple[int, int]] = {
    # name -> (multiply, divide) from the unit to microseconds
    "ns": (1, 1000),
    "n": (1, 1000),
    "us": (1, 1),
    "u": (1, 1),
    "µs": (1, 1),
    "ms": (1000, 1),
    "s": (1_000_000, 1),
    "m": (60_000_000, 1),
    "h": (3_600_000_000, 1),
}
"""Timestamp units of ``precision`` (InfluxDB 1.x's ``n``/``u``/``m``/``h`` too)."""

NS_LIMIT = (1 << 63) - 2
"""InfluxDB's bound on |time| in nanoseconds (inside the engine's +-2**60 us)."""
_INF = float("inf")
_WS = b" \t\x00"  # what InfluxDB skips before a line, its fields and its timestamp
_partition_eq = operator.methodcaller("partition", b"=")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # as the tag catalog's rule for names
_MAX_SHOWN = 80  # characters of a bad line quoted in its error


@dataclass
class ParsedBatch:
    """The points of a body of lines, columnar; ``names[series[i]]`` is point i's tag name."""

    names: list[str]
    series: npt.NDArray[np.uint32]
    ts: npt.NDArray[np.int64]  # microseconds since the Unix epoch
    values: npt.NDArray[np.float64]
    point_lines: npt.NDArray[np.int64]  # the line number of each point
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, message)
    lines: int = 0  # data lines seen (not blank, not a comment), good or bad
    kinds: npt.NDArray[np.uint8] = field(default_factory=lambda: np.zeros(0, np.uint8))
    """Each point's field type, an index into :data:`KINDS`."""

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def series_kinds(self) -> npt.NDArray[np.uint8]:
        """Each series' field type: that of its first point (a later point may differ)."""
        first = np.unique(self.series, return_index=True)[1]
        out = np.zeros(len(self.names), np.uint8)
        out[self.series[first]] = self.kinds[first]
        return out


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
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
    if now_us is None:
        now_us = time.time_ns() // 1000
    p = _Parser()
    p.run(bytes(data))
    return p.finish(precision, now_us)


class _Parser:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}  # name -> series index
        # raw series key bytes (as written, tag order included) -> field key -> series
        self.keys: dict[bytes, dict[bytes, int]] = {}
        self.prefixes: dict[bytes, str] = {}  # raw series key -> escaped canonical prefix
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

    def run(self, data: bytes) -> None:
        series, values, errors = self.series, self.values, self.errors
        line_ts, line_counts, line_nos = self.line_ts, self.line_counts, self.line_nos
        keys, missing = self.keys, self.missing
        odd, first_kind = self.odd, self.first_kind
        lines = 0
        # With a quote or a backslash, a newline may be inside a string or escaped.
        special = 34 in data or 92 in data
        numbered = lines_of(data) if special else enumerate(data.split(b"\n"), 1)
        for no, line in numbered:
            if line[-1:] == b"\r":  # CRLF line ends (InfluxDB refuses them)
                line = line[:-1]
            line = line.lstrip(_WS)
            if not line or line[0] == 35:  # '#': a comment
                continue
            lines += 1
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
        self.lines = lines

    def _series(self, key: bytes, fk: bytes) -> int:
        """The series index of (raw series key, field key); new names are added."""
        prefix = self.prefixes.get(key)
        if prefix is None:
            prefix = self.prefixes[key] = _prefix(key)
        fld = unescape(fk, FIELD_ESCAPES).decode()
        if fld == "time":
            raise FieldSkipped("a field named 'time' is not stored (InfluxDB drops it too)")
        name = prefix + "." + esc(fld, ",= .")
        idx = self.index.get(name)
        if idx is None:
            if _CONTROL.search(name):  # the catalog refuses them: refuse the line whole
                raise LineError("a name may not hold control characters (tab, NUL, ...)")
            idx = self.index[name] = len(self.names)
            self.names.append(name)
            self.first_kind.append(-1)
        return idx

    def finish(self, precision: str, now_us: int) -> ParsedBatch:
        mul, div = PRECISIONS[precision]
        counts = np.asarray(self.line_counts, dtype=np.int64)
        line_us = np.asarray(self.line_ts, dtype=np.int64)
        # InfluxDB's range: |t| <= 2**63 - 2 ns once converted (checked before
        # converting, which then cannot overflow).
        limit = NS_LIMIT // (mul * 1000 // div)
        bad = (line_us < -limit) | (line_us > limit)
        if div > 1:
            line_us //= div  # floor, as for negative (pre-1970) stamps too
        if mul > 1:
            line_us *= mul
        if self.missing:
            line_us[self.missing] = now_us
            bad[self.missing] = False
        line_nos = np.asarray(self.line_nos, dtype=np.int64)
        series = np.asarray(self.series, dtype=np.uint32)
        values = np.asarray(self.values, dtype=np.float64)
        kinds = np.asarray(self.first_kind, dtype=np.int64).astype(np.uint8)[series]
        odd = np.asarray(self.odd, dtype=np.int64)
        kinds[odd >> 2] = odd & 3
        if bad.any():
            for no in line_nos[bad].tolist():
                self.errors.append((no, "timestamp out of range (|t| must be < 2**63 ns)"))
            keep = np.repeat(~bad, counts)
            series, values, kinds = series[keep], values[keep], kinds[keep]
            line_us, counts, line_nos = line_us[~bad], counts[~bad], line_nos[~bad]
        self.errors.sort()
        # Only series with a stored point are named: a field that was always a
        # string (or malformed) must not make the server create a tag.
        names = self.names
        present = np.bincount(series, minlength=len(names)) > 0
        if not present.all():
            names = [name for name, p in zip(names, present.tolist(), strict=True) if p]
            series = (np.cumsum(present) - 1).astype(np.uint32)[series]
        return ParsedBatch(
            names,
            series,
            np.repeat(line_us, counts),
            values,
            np.repeat(line_nos, counts),
            self.errors,
            self.lines,
            kinds,
        )


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _shown(line: bytes) -> str:
    text = _text(line)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."
