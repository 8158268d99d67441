"""InfluxQL's view of the catalog: measurements, series, tag sets and fields.

A tag named as ``/write`` names one (docs/ingest.md: ``measurement[,k=v
...].field``, escaped as line protocol escapes) is read back as that
measurement, tag set and field; a name is taken that way only if writing the
parts again gives the same name, so the mapping inverts ``series_name``
exactly. Any other name is a measurement of its own, with no tags and one
field, ``value``. A field's type is its tag's ``value_type`` (what ``/write``
recorded): ``float``, ``integer`` (``int64``, ``enum``) or ``boolean``; a
field whose series disagree is ``float``.

Conditions on tags (``=``, ``!=``, ``=~``, ``!~``, ``AND``, ``OR``) are
evaluated per series, not per point. Regexes are Python ``re``, which has no
timeout: their cost is bounded by their length (the lexer's cap), by refusing
a quantified group holding a quantifier or an alternation (``(a+)+``,
``(a|aa)*``, the shapes of catastrophic backtracking), and
by the name lengths the catalog allows (256 characters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from xtsdb.protocol.errors import InvalidInput
from xtsdb.protocol.influxql import ast, unsupported
from xtsdb.protocol.line_protocol import series_name
from xtsdb.protocol.lp_grammar import esc

if TYPE_CHECKING:  # the engine package is not imported by this module's users
    from xtsdb.server.engine.catalog import Catalog

MAX_SERIES = 100_000  # catalog names one statement may look at
FOREIGN_FIELD = "value"
Tags = tuple[tuple[str, str], ...]
FIELD_TYPES = {"float64": "float", "int64": "integer", "enum": "integer", "bool": "boolean"}


@dataclass
class Series:
    measurement: str
    tags: Tags
    fields: dict[str, int] = field(default_factory=dict)  # field -> tag id
    types: dict[str, str] = field(default_factory=dict)  # field -> float, integer, boolean

    def tag(self, key: str) -> str:
        return next((v for k, v in self.tags if k == key), "")

    @property
    def key(self) -> str:
        """The series key as SHOW SERIES prints it (line protocol escapes)."""
        return series_name(self.measurement, list(self.tags), "x")[:-2]


@lru_cache(maxsize=1 << 16)
def split_name(name: str) -> tuple[str, Tags, str]:
    """(measurement, sorted tags, field) of a tag name; see the module docstring."""
    seps: list[int] = []  # unescaped commas
    dot = -1
    i = 0
    while i < len(name):
        c = name[i]
        if c == "\\":
            i += 2
            continue
        if c == ",":
            seps.append(i)
        elif c == ".":
            dot = i
        i += 1
    if dot <= 0:
        return name, (), FOREIGN_FIELD
    key, fld = name[:dot], _unescape(name[dot + 1 :], ",= .")
    cuts = [c for c in seps if c < dot]
    parts = [key[a + 1 : b] for a, b in zip([-1, *cuts], [*cuts, len(key)], strict=True)]
    measurement = _unescape(parts[0], ", ")
    tags: list[tuple[str, str]] = []
    for part in parts[1:]:
        eq = _unescaped_eq(part)
        if eq <= 0 or eq == len(part) - 1:
            return name, (), FOREIGN_FIELD
        tags.append((_unescape(part[:eq], ",= "), _unescape(part[eq + 1 :], ",= ")))
    if not measurement or not fld or len({k for k, _ in tags}) != len(tags):
        return name, (), FOREIGN_FIELD
    if series_name(measurement, tags, fld) != name or tags != sorted(tags):
        return name, (), FOREIGN_FIELD
    return measurement, tuple(tags), fld


def _unescaped_eq(part: str) -> int:
    i = 0
    while i < len(part):
        if part[i] == "\\":
            i += 2
            continue
        if part[i] == "=":
            return i
        i += 1
    return -1


def _unescape(text: str, chars: str) -> str:
    for c in chars:
        text = text.replace("\\" + c, c)
    return text


def _glob(text: str) -> str:
    """``text`` as a literal inside an SQLite GLOB pattern."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def load(catalog: Catalog, sources: list[ast.Source]) -> dict[str, dict[Tags, Series]]:
    """The series of the measurements ``sources`` names (every one without sources)."""
    names: Iterable[str]
    if sources and all(s.name for s in sources):
        found: set[str] = set()
        for s in sources:
            prefix = _glob(esc(s.name, ", "))
            found.update(i.name for i in catalog.find(prefix + "[,.]*", limit=MAX_SERIES + 1))
            if catalog.get(s.name) is not None:
                found.add(s.name)
        names = found
    else:
        names = [i.name for i in catalog.all()]
    wanted = {s.name for s in sources if s.name}
    patterns = [regex(s.regex) for s in sources if s.regex]
    out: dict[str, dict[Tags, Series]] = {}
    count = 0
    for name in names:
        count += 1
        if count > MAX_SERIES:
            raise InvalidInput(f"the statement would read more than {MAX_SERIES:,} series")
        info = catalog.get(name)
        if info is None:  # removed meanwhile
            continue
        m, tags, fld = split_name(name)
        if sources and m not in wanted and not any(p.search(m) for p in patterns):
            continue
        series = out.setdefault(m, {}).setdefault(tags, Series(m, tags))
        series.fields[fld] = info.id
        series.types[fld] = FIELD_TYPES.get(info.value_type, "float")
    return out


def field_types(series: Iterable[Series]) -> dict[str, str]:
    """Each field's type over ``series`` (a measurement's): ``float`` where they disagree."""
    out: dict[str, str] = {}
    for s in series:
        for f, t in s.types.items():
            out[f] = t if out.get(f, t) == t else "float"
    return out


def _risky(pattern: str) -> bool:
    """Whether a group holding a quantifier or ``|`` is itself repeated (``*``, ``+``, ``{``)."""
    stack: list[bool] = []  # per open group: holds a quantifier or an alternation
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":  # a class: its characters are literals (']' first is one too)
            j = i + 2 if pattern.startswith("]", i + 1) else i + 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            continue
        if c == "(":
            stack.append(False)
            if pattern.startswith("?", i + 1):  # (?:, (?P<name>: not a quantifier
                i += 1
        elif c == ")" and stack:
            inner = stack.pop()
            if inner and i + 1 < n and pattern[i + 1] in "*+{":
                return True
            if stack:
                stack[-1] = stack[-1] or inner
        elif c in "*+?{|" and stack:
            stack[-1] = True
        i += 1
    return False


@lru_cache(maxsize=256)
def regex(pattern: str) -> re.Pattern[str]:
    if _risky(pattern):
        raise InvalidInput(
            f"regex /{pattern}/ repeats a group holding a quantifier or '|' "
            "(slow to match): not supported"
        )
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidInput(f"invalid regex /{pattern}/: {exc}") from None


def matches(cond: ast.Expr | None, series: Series, fields: set[str], rows: bool = False) -> bool:
    """Whether a tag condition holds for ``series`` (``None``: no condition).

    With ``rows`` a comparison of fields counts as true: influxql_where filters
    the rows (a SHOW, without ``rows``, refuses it).
    """
    if cond is None:
        return True
    if isinstance(cond, ast.Binary) and cond.op in ("and", "or"):
        lhs = matches(cond.lhs, series, fields, rows)
        if cond.op == "and":
            return lhs and matches(cond.rhs, series, fields, rows)
        return lhs or matches(cond.rhs, series, fields, rows)
    if rows and _on_fields(cond, series, fields):
        return True
    if not isinstance(cond, ast.Binary) or not isinstance(cond.lhs, ast.VarRef):
        raise unsupported(f"the condition {describe(cond)}")
    key = cond.lhs.name
    if key in fields and not any(k == key for k, _ in series.tags):
        raise unsupported(f"a condition on the field {key!r} in SHOW")
    value = series.tag(key)
    rhs = cond.rhs
    if isinstance(rhs, ast.Boolean):  # a tag is a string: no row of a SELECT, as InfluxDB
        if not rows:  # (whose SHOWs ignore such a condition)
            raise unsupported("a tag compared with a boolean in SHOW")
        return False
    if cond.op in ("=~", "!~") and isinstance(rhs, ast.Regex):
        return (regex(rhs.pattern).search(value) is not None) == (cond.op == "=~")
    if cond.op in ("=", "!=") and isinstance(rhs, ast.String | ast.VarRef):
        text = rhs.value if isinstance(rhs, ast.String) else rhs.name
        return (value == text) == (cond.op == "=")
    raise unsupported(f"the condition {describe(cond)}")


def _on_fields(e: ast.Expr, series: Series, fields: set[str]) -> bool:
    if isinstance(e, ast.Binary):
        return _on_fields(e.lhs, series, fields) or _on_fields(e.rhs, series, fields)
    tags = {k for k, _ in series.tags}
    return isinstance(e, ast.VarRef) and e.name in fields and e.name not in tags


def describe(expr: ast.Expr) -> str:
    if isinstance(expr, ast.Binary):
        return f"{describe(expr.lhs)} {expr.op.upper()} {describe(expr.rhs)}"
    if isinstance(expr, ast.VarRef):
        return f'"{expr.name}"'
    if isinstance(expr, ast.String):
        return f"'{expr.value}'"
    if isinstance(expr, ast.Regex):
        return f"/{expr.pattern}/"
    if isinstance(expr, ast.Call):
        return f"{expr.name}({', '.join(describe(a) for a in expr.args)})"
    if isinstance(expr, ast.Now):
        return "now()"
    if isinstance(expr, ast.Duration):
        return f"{expr.ns}ns"
    return str(expr.value)
