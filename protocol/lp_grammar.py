"""Line-protocol grammar as InfluxDB 1.x reads it, one piece at a time (sans I/O).

InfluxDB's reader (``influxd``, the reference: ``tests/test_influx_differential.py``
sends the same bytes to both) does not apply one escaping rule everywhere, and
xtsdb follows it piece by piece, because its tag names must name exactly the
series InfluxDB would store:

- **series key** (measurement, tag keys and values): a character preceded by a
  backslash is escaped, whatever precedes that backslash. So none of these can
  end in a backslash: ``m\\ v=1`` has the measurement ``m\\ v=1`` and no field.
  The measurement ends at the first unescaped comma or space, a tag key at its
  first unescaped ``=``; a tag value may start with ``=`` but holds no other
  unescaped one. Unescaping drops the backslash before ``,``, space and ``=``
  (and ``"`` in the measurement).
- **field set**: a backslash takes the next character with it while scanning;
  a number or boolean value ends at the next comma or space, a string value at
  its closing quote. A field key is unescaped like the measurement.
- **lines** end at a newline, except one inside a quoted string value or
  escaped by a backslash: such a line goes on after it.
- **whitespace**: any run of spaces, tabs and NULs may precede the line, the
  field set and the timestamp; only spaces may follow the timestamp.
- **values**: ``-?digits[.digits][e[+-]digits]`` (``.5`` and ``1.`` too),
  ``-?digits i``, ``digits u`` (below 2**63 in xtsdb), ``t``/``true``/``True``/``TRUE`` and their
  ``f`` forms, or a quoted string. A bad value refuses its whole line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

__all__ = [
    "FieldSkipped",
    "LineError",
    "esc",
    "joined",
    "key_end",
    "lines",
    "prefix",
    "split_line",
    "timestamp",
    "unescape",
    "value",
]

_I64 = 1 << 63
_INF = float("inf")
_TRUE = frozenset({b"t", b"T", b"true", b"True", b"TRUE"})
_FALSE = frozenset({b"f", b"F", b"false", b"False", b"FALSE"})
_NUMBER_START = frozenset(b"0123456789.-Nn")  # InfluxDB scans these as numbers
_FLOAT = re.compile(rb"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_WS = frozenset(b" \t\x00")
_KEY_END = re.compile(rb"(?<!\\) ")  # the first space not preceded by a backslash
_EQ = re.compile(rb"(?<!\\)=")
_TOKEN_END = re.compile(rb"[, ]")
MEASUREMENT_ESCAPES = b',"= '
TAG_ESCAPES = b", ="
FIELD_ESCAPES = b',"= '


class LineError(ValueError):
    """The line is refused as a whole."""


class FieldSkipped(ValueError):
    """A valid field xtsdb does not store (a string, or the key ``time``); the line's others are."""


def esc(text: str, chars: str) -> str:
    for c in chars:
        if c in text:
            text = text.replace(c, "\\" + c)
    return text


def unescape(s: bytes, chars: bytes) -> bytes:
    """Drop the backslash before each of ``chars``; other backslashes are literal.

    One left-to-right pass, as InfluxDB does (``\\\\,`` is a backslash and a comma):
    a replacement never forms a new pair for a later character, so replacing one
    character at a time is the same pass.
    """
    if 92 not in s:
        return s
    for c in chars:
        s = s.replace(b"\\" + bytes((c,)), bytes((c,)))
    return s


def lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(number of its first line, line)`` of a body, cut as InfluxDB cuts it.

    For a body with a double quote or a backslash (others are just split at
    each newline); only pieces holding a quote are scanned byte by byte.
    """
    pieces = data.split(b"\n")
    i = 0
    while i < len(pieces):
        no = i + 1
        line, i = joined(pieces.__getitem__, i, len(pieces))
        yield no, line


def joined(piece: Callable[[int], bytes], i: int, count: int) -> tuple[bytes, int]:
    """The line that starts at piece ``i`` of ``count`` (a body cut at each newline), and
    the index of the piece after it: pieces are joined while the newline is part of the line."""
    line, last = piece(i), count - 1
    i += 1
    # ... a newline that is the body's last byte ends the line whatever precedes it
    while (i < last or (i == last and piece(i))) and _continues(line):
        line += b"\n" + piece(i)
        i += 1
    return line, i


def _continues(line: bytes) -> bool:
    """Whether the newline after ``line`` is inside a quoted value or escaped."""
    if 34 not in line:  # then only a backslash pair count matters
        run = len(line) - len(line.rstrip(b"\\"))
        return run % 2 == 1
    n, i = len(line), 0
    fields = quoted = False
    equals = commas = 0
    while i < n:
        c = line[i]
        if c == 92:
            if i + 1 == n:
                return True
            i += 2
            continue
        if c == 32:
            fields = True
        if fields:  # quotes count after the first space, in a value (InfluxDB's rule)
            if c == 61 and not quoted:
                equals += 1
            elif c == 44 and not quoted:
                commas += 1
            elif c == 34 and equals > commas:
                quoted = not quoted
        i += 1
    return quoted


def _split_key(s: bytes, sep: int) -> list[bytes]:
    """``s`` split at every ``sep`` not preceded by a backslash (the series-key rule)."""
    if 92 not in s:
        return s.split(bytes((sep,)))
    out, start = [], 0
    i = s.find(sep, 1)
    while i >= 0:
        if s[i - 1] != 92:
            out.append(s[start:i])
            start = i + 1
        i = s.find(sep, i + 1)
    out.append(s[start:])
    return out


def prefix(key: bytes) -> str:
    """A series key as written -> its canonical name prefix: escaped, tags sorted by key."""
    if not key or key[0] == 44:
        raise LineError("missing measurement")
    parts = _split_key(key, 44)  # ','
    measurement = unescape(parts[0], MEASUREMENT_ESCAPES).decode()
    tags: dict[str, str] = {}
    for part in parts[1:]:
        if not part or part[0] == 61:
            raise LineError("missing tag key")
        m = _EQ.search(part, 1)
        if m is None:
            raise LineError(f"missing tag value in {_text(part)!r}")
        k, v = part[: m.start()], part[m.end() :]
        if not v:
            raise LineError(f"missing tag value in {_text(part)!r}")
        if _EQ.search(v, 1):
            raise LineError(f"invalid tag {_text(part)!r}: an unescaped '=' in its value")
        name = unescape(k, TAG_ESCAPES).decode()
        if name in tags:
            raise LineError(f"duplicate tag key {name!r}")
        if name == "time":
            raise LineError("invalid tag key 'time' (InfluxDB refuses it too)")
        tags[name] = unescape(v, TAG_ESCAPES).decode()
    out = [esc(measurement, ", ")]
    out += [f"{esc(k, ',= ')}={esc(v, ',= ')}" for k, v in sorted(tags.items())]
    return ",".join(out)


def key_end(line: bytes) -> int:
    """The index of the space ending the series key, or -1 if there is none."""
    m = _KEY_END.search(line, 1)
    return -1 if m is None else m.start()


def split_line(line: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes | None]:
    """The general path: (series key as written, [(field key, value)], timestamp or None).

    ``line`` has no leading whitespace. Validates the field set as InfluxDB does
    (a bad number refuses the line), then cuts it into fields.
    """
    m = _KEY_END.search(line, 1)
    if m is None:
        raise LineError("missing fields")
    key = line[: m.start()]
    start, n = m.end(), len(line)
    while start < n and line[start] in _WS:
        start += 1
    end = _scan_fields(line, start)
    return key, _cut_fields(line[start:end]), _scan_time(line, end)


def _scan_fields(line: bytes, i: int) -> int:
    """Validate the field set starting at ``i``; the index where it ends."""
    n, start = len(line), i
    quoted = False
    equals = commas = 0
    while i < n:
        c = line[i]
        if c == 92 and i + 1 < n:  # a backslash takes the next byte with it
            i += 2
            continue
        if c == 34 and equals > commas:  # quotes count only in a value
            quoted = not quoted
            i += 1
            continue
        if c == 61 and not quoted:
            equals += 1
            if i == start or (line[i - 1] == 44 and line[i - 2] != 92):
                raise LineError("missing field key")
            nxt = line[i + 1] if i + 1 < n else 32
            if nxt == 44 or nxt == 32:
                raise LineError("missing field value")
            if nxt != 34:  # a number or a boolean: up to the next comma or space
                t = _TOKEN_END.search(line, i + 1)
                j = n if t is None else t.start()
                value(line[i + 1 : j])
                i = j
                continue
        if not quoted:
            if c == 44:
                commas += 1
            elif c == 32:
                break
        i += 1
    if quoted:
        raise LineError("unbalanced quotes")
    if equals == 0 or commas != equals - 1:
        raise LineError("invalid field format: expected key=value[,key=value...]")
    return i


def _cut_fields(buf: bytes) -> list[tuple[bytes, bytes]]:
    """A validated field set cut into (key, value) pairs."""
    out = []
    while buf:
        m = _EQ.search(buf)
        i = len(buf) if m is None else m.start()
        if i > len(buf) - 2:
            raise LineError(f"invalid field {_text(buf)!r}")
        key, buf = buf[:i], buf[i + 1 :]
        j = _value_end(buf)
        out.append((key, buf[:j]))
        buf = buf[j + 1 :]
    return out


def _value_end(buf: bytes) -> int:
    if buf[:1] != b'"':  # a number or a boolean holds no quote, backslash or comma
        j = buf.find(b",")
        return len(buf) if j < 0 else j
    i, n, quoted = 0, len(buf), False
    while i < n:
        c = buf[i]
        if c == 92 and i + 1 < n and buf[i + 1] in b'"\\':
            i += 2
            continue
        if c == 34:
            quoted = not quoted
        elif c == 44 and not quoted:
            break
        i += 1
    return i


def _scan_time(line: bytes, i: int) -> bytes | None:
    n = len(line)
    while i < n and line[i] in _WS:
        i += 1
    if i >= n:
        return None
    j = line.find(b" ", i)
    if j < 0:
        return line[i:]
    if line[j:].strip(b" "):
        raise LineError("unexpected text after the timestamp")
    return line[i:j]


def timestamp(raw: bytes) -> int:
    """An integer timestamp as written: ``-?digits``, within int64."""
    if not raw.isdigit() and not (raw[:1] == b"-" and raw[1:].isdigit()):
        raise LineError(f"invalid timestamp {_text(raw)!r}")
    t = int(raw)
    if not -_I64 <= t < _I64:
        raise LineError("timestamp out of the int64 range")
    return t


def value(v: bytes) -> float:
    """One field value as a float.

    :class:`LineError` if malformed; :class:`FieldSkipped` for a (valid) string.
    """
    if not v:
        raise LineError("missing field value")
    c = v[0]
    if c == 34:  # '"'
        raise FieldSkipped("string values are not stored (a historian keeps numbers)")
    if c in _NUMBER_START:
        last = v[-1]
        if last == 105 or last == 117:  # 'i', 'u': integers
            digits = v[:-1]
            if not digits.isdigit() and not (
                last == 105 and digits[:1] == b"-" and digits[1:].isdigit()
            ):
                raise LineError(f"invalid integer {_text(v)!r}")
            n = int(digits)
            if last == 105 and not -_I64 <= n < _I64:
                raise LineError("integer out of the int64 range")
            if last == 117 and n >= _I64:  # stored as int64 (InfluxDB 1.6 refuses every 'u')
                raise LineError("unsigned integer out of the int64 range")
            return float(n)
        if _FLOAT.fullmatch(v) is None:
            raise LineError(f"invalid number {_text(v)!r}")
        x = float(v)
        if not -_INF < x < _INF:
            raise LineError("number out of the float64 range")
        return x
    if v in _TRUE:
        return 1.0
    if v in _FALSE:
        return 0.0
    raise LineError(f"invalid boolean {_text(v)!r}")


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")
