"""InfluxDB line protocol, sans I/O: bytes in, columns of numbers out.

    measurement[,tag_key=tag_value...] field_key=field_value[,...] [timestamp]

:func:`parse` turns a body of such lines into a :class:`ParsedBatch`: one
xtsdb tag *name* per series (:func:`series_name`), and per point the index of
its series, a timestamp in microseconds and a float64 value. A historian
stores numbers, so integers (``12i``), unsigned integers (``12u``) and
booleans (``t``/``true``/``f``/``false``, any case InfluxDB accepts: 1.0/0.0)
become floats; a string field (``"..."``) is reported as an error for that
field while the line's other fields are kept. A malformed line is reported
with its 1-based line number and the other lines are kept; blank lines and
``#`` comments are skipped.

Parsing is per line in Python, which the text format makes inherent. Lines
without a backslash or a double quote (nearly all that Telegraf sends) take a
fast path built on ``bytes.split``; only the others go through the
character-level scanner that honours escapes and quoted strings.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["PRECISIONS", "ParsedBatch", "parse", "series_name"]

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

TS_LIMIT = 1 << 60  # the engine's bound on |timestamp_us|
_I64 = 1 << 63
_INF = float("inf")
_TRUE = frozenset({b"t", b"T", b"true", b"True", b"TRUE"})
_FALSE = frozenset({b"f", b"F", b"false", b"False", b"FALSE"})
_partition_eq = operator.methodcaller("partition", b"=")
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

    def __len__(self) -> int:
        return int(self.ts.shape[0])


class _LineError(ValueError):
    pass


def _esc(text: str, chars: str) -> str:
    for c in chars:
        if c in text:
            text = text.replace(c, "\\" + c)
    return text


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
    parts = [_esc(measurement, ", ")]
    parts += [f"{_esc(k, ',= ')}={_esc(v, ',= ')}" for k, v in items]
    return ",".join(parts) + "." + _esc(fld, ",= .")


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
        lines = 0
        for no, line in enumerate(data.split(b"\n"), 1):
            line = line.strip()
            if not line or line[0] == 35:  # '#': a comment
                continue
            lines += 1
            mark, emark = len(values), len(errors)
            fields: Iterable[tuple[bytes, bytes, bytes]]
            try:
                if b"\\" in line or b'"' in line:
                    key, fields, ts_raw = _split_escaped(line)
                else:
                    parts = line.split(b" ")
                    if len(parts) == 3:
                        key, fields_raw, ts_raw = parts
                    elif len(parts) == 2:
                        key, fields_raw = parts
                        ts_raw = None
                    else:
                        raise _LineError("expected 'measurement[,tags] fields [timestamp]'")
                    fields = map(_partition_eq, fields_raw.split(b","))
                ts = None if ts_raw is None else _timestamp(ts_raw)
                fmap = keys.get(key)
                if fmap is None:
                    fmap = keys[key] = {}
                n = 0
                for fk, eq, fv in fields:
                    idx = fmap.get(fk)
                    if idx is None or not eq:
                        if not eq or not fk:
                            raise _LineError("a field must be key=value")
                        idx = fmap[fk] = self._series(key, fk)
                    try:
                        # Inlined fast path: a plain decimal number ends in a digit or '.'
                        # (float() alone would also take '1_0', and overflow to inf).
                        if fv and 46 <= fv[-1] <= 57 and 95 not in fv:
                            x = float(fv)
                            if not -_INF < x < _INF:
                                raise _LineError("number out of the float64 range")
                        else:
                            x = _value(fv)
                    except ValueError as exc:
                        why = str(exc) if isinstance(exc, _LineError) else "invalid number"
                        errors.append((no, f"field {_shown(fk + b'=' + fv)!r}: {why}"))
                        continue
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
            except (_LineError, UnicodeDecodeError) as exc:
                # A bad line is all or nothing: drop what its earlier fields added.
                del series[mark:], values[mark:], errors[emark:]
                why = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
                errors.append((no, f"unable to parse {_shown(line)!r}: {why}"))
        self.lines = lines

    def _series(self, key: bytes, fk: bytes) -> int:
        """The series index of (raw series key, field key); new names are added."""
        prefix = self.prefixes.get(key)
        if prefix is None:
            prefix = self.prefixes[key] = _prefix(key)
        name = prefix + "." + _esc(_unescape(fk, b",= ").decode(), ",= .")
        idx = self.index.get(name)
        if idx is None:
            idx = self.index[name] = len(self.names)
            self.names.append(name)
        return idx

    def finish(self, precision: str, now_us: int) -> ParsedBatch:
        mul, div = PRECISIONS[precision]
        counts = np.asarray(self.line_counts, dtype=np.int64)
        line_us = np.asarray(self.line_ts, dtype=np.int64)
        if div > 1:
            line_us //= div  # floor, as for negative (pre-1970) stamps too
        bad = np.zeros(line_us.shape[0], dtype=bool)
        if mul > 1:  # only coarse units can overflow: check before multiplying
            limit = TS_LIMIT // mul
            bad = (line_us <= -limit) | (line_us >= limit)
            line_us *= mul
        if self.missing:
            line_us[self.missing] = now_us
            bad[self.missing] = False
        bad |= (line_us <= -TS_LIMIT) | (line_us >= TS_LIMIT)
        line_nos = np.asarray(self.line_nos, dtype=np.int64)
        series = np.asarray(self.series, dtype=np.uint32)
        values = np.asarray(self.values, dtype=np.float64)
        if bad.any():
            for no in line_nos[bad].tolist():
                self.errors.append((no, "timestamp out of range (|t| must be < 2**60 us)"))
            keep = np.repeat(~bad, counts)
            series, values = series[keep], values[keep]
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
        )


def _timestamp(raw: bytes) -> int:
    if b"_" in raw:  # int() takes '1_000'; line protocol does not
        raise _LineError(f"invalid timestamp {_text(raw)!r}")
    try:
        t = int(raw)
    except ValueError:
        raise _LineError(f"invalid timestamp {_text(raw)!r}") from None
    if not -_I64 <= t < _I64:
        raise _LineError("timestamp out of the int64 range")
    return t


def _value(v: bytes) -> float:
    """One field value as a float; :class:`_LineError` for strings and malformed numbers."""
    if not v:
        raise _LineError("missing value")
    last = v[-1]
    if last == 105 or last == 117:  # 'i', 'u': integers
        digits = v[:-1]
        if not digits or b"_" in digits or digits[:1] == b"+":
            raise _LineError("invalid integer")
        try:
            n = int(digits)
        except ValueError:
            raise _LineError("invalid integer") from None
        if last == 105 and not -_I64 <= n < _I64:
            raise _LineError("integer out of the int64 range")
        if last == 117 and not 0 <= n < 1 << 64:
            raise _LineError("unsigned integer out of the uint64 range")
        return float(n)
    if v[0] == 34:  # '"'
        raise _LineError("string values are not stored (a historian keeps numbers)")
    if v in _TRUE:
        return 1.0
    if v in _FALSE:
        return 0.0
    try:
        x = float(v)
    except ValueError:
        raise _LineError("invalid number") from None
    # float() also takes 'nan', 'inf', '1_0' and overflows to inf: line protocol does not.
    if not -_INF < x < _INF or b"_" in v:
        raise _LineError("invalid number")
    return x


def _prefix(key: bytes) -> str:
    """``measurement[,k=v...]`` as written -> the canonical, escaped, key-sorted prefix."""
    parts = _split_unescaped(key, 44)  # ','
    measurement = _unescape(parts[0], b", ").decode()
    if not measurement:
        raise _LineError("missing measurement")
    tags: list[tuple[str, str]] = []
    for part in parts[1:]:
        kv = _split_unescaped(part, 61)  # '='
        if len(kv) != 2 or not kv[0] or not kv[1]:
            raise _LineError(f"invalid tag {_text(part)!r}: expected key=value")
        tags.append((_unescape(kv[0], b",= ").decode(), _unescape(kv[1], b",= ").decode()))
    tags.sort()
    out = [_esc(measurement, ", ")]
    out += [f"{_esc(k, ',= ')}={_esc(v, ',= ')}" for k, v in tags]
    return ",".join(out)


def _split_unescaped(s: bytes, sep: int) -> list[bytes]:
    """``s`` split at every ``sep`` byte not preceded by a backslash escape."""
    if 92 not in s:  # no backslash: the C-level split is exact
        return s.split(bytes((sep,)))
    out, start, i, n = [], 0, 0, len(s)
    while i < n:
        c = s[i]
        if c == 92:  # '\\' escapes the next byte
            i += 2
            continue
        if c == sep:
            out.append(s[start:i])
            start = i + 1
        i += 1
    out.append(s[start:])
    return out


def _unescape(s: bytes, chars: bytes) -> bytes:
    """Drop the backslash before each of ``chars``; other backslashes are literal."""
    if 92 not in s:
        return s
    for c in chars:
        s = s.replace(b"\\" + bytes((c,)), bytes((c,)))
    return s


def _split_escaped(line: bytes) -> tuple[bytes, list[tuple[bytes, bytes, bytes]], bytes | None]:
    """The slow path: (raw series key, [(field key, '=', value)], timestamp or None).

    Walks the line once, honouring backslash escapes everywhere and double
    quotes in field values (where spaces, commas and equals signs are data).
    """
    n = len(line)
    i = 0
    while i < n and line[i] != 32:  # the series key ends at the first unescaped space
        i += 2 if line[i] == 92 else 1
    key = line[:i]
    if i >= n:
        raise _LineError("missing fields")
    i += 1
    fields: list[tuple[bytes, bytes, bytes]] = []
    start = i
    eq = -1
    quoted = False
    while True:
        c = line[i] if i < n else 32
        if quoted:
            if c == 92:
                i += 2
                continue
            if c == 34:
                quoted = False
        elif c == 92:
            i += 2
            continue
        elif c == 34 and eq >= 0 and i == eq + 1:
            quoted = True
        elif c == 61 and eq < 0:  # '='
            eq = i
        elif c == 44 or c == 32:  # ',' or ' ' ends a field
            if eq < 0:
                raise _LineError("a field must be key=value")
            fields.append((line[start:eq], b"=", line[eq + 1 : i]))
            if c == 32:
                break
            start, eq = i + 1, -1
        i += 1
        if i > n:
            break
    if quoted:
        raise _LineError("unterminated string value")
    rest = line[i + 1 :].strip() if i < n else b""
    if b" " in rest:
        raise _LineError("unexpected text after the timestamp")
    return key, fields, (rest or None)


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _shown(line: bytes) -> str:
    text = _text(line)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."
