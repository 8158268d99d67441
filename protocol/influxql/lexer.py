"""InfluxQL tokens: identifiers, keywords, literals, durations, regexes, operators.

A ``/`` starts a regex literal only where InfluxQL allows one (after ``=~``,
``!~`` and in a ``FROM`` or ``WITH MEASUREMENT`` list); elsewhere it divides.
Errors read as InfluxDB's: ``found X, expected Y at line L, char C``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xtsdb.protocol.errors import InvalidInput

MAX_QUERY = 1 << 20  # characters of one query string
MAX_REGEX = 4096
_MAX_NS = (1 << 63) - 1  # characters of one regex literal (Grafana multi-value variables are long)

UNITS_NS = {
    "ns": 1,
    "u": 1_000,
    "µ": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
    "w": 604_800_000_000_000,
}
_DURATION = re.compile(r"(?:\d+(?:ns|u|µ|ms|s|m|h|d|w))+(?![\w])")
_DURATION_PART = re.compile(r"(\d+)(ns|u|µ|ms|s|m|h|d|w)")
_NUMBER = re.compile(r"\d+(\.\d*)?([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = ("::", "=~", "!~", "!=", "<>", "<=", ">=", "=", "<", ">", "+", "-", "*", "/", "%")
_PUNCT = {"(": "(", ")": ")", ",": ",", ";": ";", ".": "."}
_REGEX_AFTER_KEYWORD = {"FROM", "MEASUREMENT", "MEASUREMENTS", "BY"}


@dataclass(frozen=True)
class Token:
    kind: str  # ident, qident, string, number, integer, duration, regex, op, punct, eof
    text: str  # what to show in errors; the identifier or literal text
    value: object  # str for names/strings/regexes, int/float for numbers, ns for durations
    pos: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "ident" else ""


def error(query: str, pos: int, found: str, expected: str) -> InvalidInput:
    line = query.count("\n", 0, pos) + 1
    char = pos - (query.rfind("\n", 0, pos) + 1) + 1
    where = f"at line {line}, char {char}"
    return InvalidInput(f"error parsing query: found {found}, expected {expected} {where}")


def tokenize(query: str) -> list[Token]:
    if len(query) > MAX_QUERY:
        raise InvalidInput(f"error parsing query: a query is at most {MAX_QUERY} characters")
    out: list[Token] = []
    i, n = 0, len(query)
    in_from = False  # inside a FROM list: a '/' after ',' is a regex
    while True:
        while i < n and query[i].isspace():
            i += 1
        if query.startswith("--", i):  # comment to the end of the line
            j = query.find("\n", i)
            i = n if j < 0 else j
            continue
        if i >= n:
            out.append(Token("eof", "EOF", None, i))
            return out
        c = query[i]
        prev = out[-1] if out else None
        if c == "/" and _regex_allowed(prev, in_from):
            tok, i = _regex(query, i)
        elif c == '"':
            text, i2 = _quoted(query, i, '"')
            tok, i = Token("qident", text, text, i), i2
        elif c == "'":
            text, i2 = _quoted(query, i, "'")
            tok, i = Token("string", text, text, i), i2
        elif c.isdigit() or (c == "." and i + 1 < n and query[i + 1].isdigit()):
            tok, i = _numeric(query, i)
        elif c.isalpha() or c == "_":
            m = _IDENT.match(query, i)
            if m is None:  # a letter outside ASCII: not an InfluxQL identifier
                raise error(query, i, repr(c), "identifier")
            tok, i = Token("ident", m.group(), m.group(), i), m.end()
            if tok.upper in ("FROM", "WITH"):
                in_from = tok.upper == "FROM"
            elif tok.upper in ("WHERE", "GROUP", "ORDER", "LIMIT", "OFFSET", "SLIMIT", "SOFFSET"):
                in_from = False
        elif c in _PUNCT:
            tok, i = Token("punct", c, c, i), i + 1
        else:
            op = next((o for o in _OPS if query.startswith(o, i)), None)
            if op is None:
                raise error(query, i, repr(c), "identifier, string, number, bool")
            tok, i = Token("op", op, "!=" if op == "<>" else op, i), i + len(op)
        out.append(tok)


def _regex_allowed(prev: Token | None, in_from: bool) -> bool:
    if prev is None:
        return False
    if prev.kind == "op" and prev.value in ("=~", "!~"):
        return True
    if prev.upper in _REGEX_AFTER_KEYWORD:
        return True
    return in_from and prev.kind == "punct" and prev.value == ","


def _quoted(query: str, start: int, quote: str) -> tuple[str, int]:
    """A quoted identifier or string: backslash escapes the quote and a backslash."""
    parts: list[str] = []
    i = start + 1
    while i < len(query):
        c = query[i]
        if c == "\\" and i + 1 < len(query):
            nxt = query[i + 1]
            if nxt in (quote, "\\"):
                parts.append(nxt)
            elif nxt == "n":
                parts.append("\n")
            else:
                raise error(query, i, f"bad escape \\{nxt}", "a valid escape")
            i += 2
            continue
        if c == quote:
            return "".join(parts), i + 1
        if c == "\n":
            break
        parts.append(c)
        i += 1
    raise error(query, start, "unterminated quote", quote)


def _regex(query: str, start: int) -> tuple[Token, int]:
    parts: list[str] = []
    i = start + 1
    while i < len(query):
        c = query[i]
        if c == "\\" and query.startswith("/", i + 1):
            parts.append("/")
            i += 2
            continue
        if c == "\\" and i + 1 < len(query):
            parts.append(query[i : i + 2])
            i += 2
            continue
        if c == "/":
            pattern = "".join(parts)
            if len(pattern) > MAX_REGEX:
                raise InvalidInput(
                    f"error parsing query: a regex is at most {MAX_REGEX} characters"
                )
            return Token("regex", "/" + pattern + "/", pattern, start), i + 1
        if c == "\n":
            break
        parts.append(c)
        i += 1
    raise error(query, start, "unterminated regex", "/")


def _numeric(query: str, i: int) -> tuple[Token, int]:
    m = _DURATION.match(query, i)
    if m is not None:
        ns = sum(int(k) * UNITS_NS[u] for k, u in _DURATION_PART.findall(m.group()))
        if ns > _MAX_NS:
            raise error(query, i, m.group(), "a duration within int64 nanoseconds (292 years)")
        return Token("duration", m.group(), ns, i), m.end()
    m = _NUMBER.match(query, i)
    assert m is not None  # the caller saw a digit, or a dot and a digit
    text = m.group()
    if m.group(1) is None and m.group(2) is None and text[0] != ".":
        return Token("integer", text, int(text), i), m.end()
    return Token("number", text, float(text), i), m.end()


def duration_text(ns: int) -> str:
    """A duration as InfluxDB prints one (``168h0m0s``, ``0s``)."""
    if ns == 0:
        return "0s"
    h, rest = divmod(ns, 3_600_000_000_000)
    m, rest = divmod(rest, 60_000_000_000)
    s = rest / 1e9
    sec = f"{s:.9f}".rstrip("0").rstrip(".")
    return f"{h}h{m}m{sec}s" if h else f"{m}m{sec}s" if m else f"{sec}s"
