"""The parts of a SELECT around the numbers: the time range, fill, rows, column names, types.

Values are float64 in the engine; an answer writes them as the type InfluxDB
gives the column (checked against ``influxd``): a field's own type raw and
through ``first``/``last``/``min``/``max``/``percentile``/``sum``/``spread``
and ``difference``, ``integer`` for ``count``, ``float`` for ``mean``,
``median``, ``stddev``, ``integral`` and ``derivative``; arithmetic on two
integers is an integer but for ``/``; a boolean takes no arithmetic and only
the selectors ``first``/``last``/``min``/``max`` (and ``count``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from xtsdb.protocol.errors import InvalidInput
from xtsdb.protocol.influxql import ast, unsupported
from xtsdb.protocol.influxql.answer import MAX_TIME, MIN_TIME, Series, parse_time
from xtsdb.server.influxql_funcs import Floats, Ints, Reduced
from xtsdb.server.influxql_names import describe

_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "=": "="}
_FLOAT_RESULT = frozenset({"mean", "median", "stddev", "integral", "derivative"})
_BOOLEAN_OK = frozenset({"first", "last", "min", "max", "count"})


def call_type(name: str, field_type: str) -> str:
    """The type of ``name(field)`` (or of a rate function over it) for a field of that type."""
    if name == "count":
        return "integer"
    if field_type == "boolean" and name not in _BOOLEAN_OK:  # InfluxDB's words
        raise InvalidInput(f"unsupported {name} iterator type: *query.booleanInterruptIterator")
    if name in _FLOAT_RESULT or name == "non_negative_derivative":
        return "float"
    return field_type


def expr_type(e: ast.Expr, leaf: Callable[[ast.Expr], str]) -> str:
    """The type of an expression; ``leaf`` gives that of a field or a call."""
    if isinstance(e, ast.Number):
        return "integer" if e.is_int else "float"
    if isinstance(e, ast.Binary):
        a, b = expr_type(e.lhs, leaf), expr_type(e.rhs, leaf)
        if "boolean" in (a, b):
            raise InvalidInput(f"type error: {describe(e)}: incompatible types: {a} and {b}")
        return "integer" if a == b == "integer" and e.op != "/" else "float"
    return leaf(e)


def ref_type(e: ast.VarRef, types: dict[str, str]) -> str:
    """A field reference's type: its cast's (``::float``, ``::integer``), else the field's."""
    return e.cast or types.get(e.name, "float")


def cast(ts: Ints, v: Floats, field_type: str, to: str) -> tuple[Ints, Floats]:
    """A field's points under a cast, as InfluxDB: ``::integer`` truncates a float, and a
    boolean field under a numeric cast is no field (no points)."""
    if to and field_type == "boolean":
        return ts[:0], v[:0]
    return (ts, np.trunc(v)) if to == "integer" else (ts, v)


def cells(arr: Floats, kind: str) -> list[Any]:
    """A column for JSON as ``kind`` (float, integer, boolean); no value is null."""
    if kind == "integer":  # a fraction (a binary client's write to an int64 tag) stays
        return [int(x) if x.is_integer() else _number(x) for x in arr.tolist()]
    if kind == "boolean":
        return [x != 0 if x == x else None for x in arr.tolist()]
    return nullable(arr)


def has_time(e: ast.Expr | None) -> bool:
    if isinstance(e, ast.VarRef):
        return e.name.lower() == "time"
    if isinstance(e, ast.Binary):
        return has_time(e.lhs) or has_time(e.rhs)
    return False


def split_time(cond: ast.Expr | None, now_ns: int) -> tuple[int, int, ast.Expr | None]:
    """``(tmin, tmax, rest)``: the time range (ns, inclusive) and the tag condition."""
    bounds = [MIN_TIME, MAX_TIME]
    rest = _split(cond, now_ns, bounds)
    # Bounds past InfluxDB's range (now() - 10000w, huge integers) mean "from/to the end".
    return max(bounds[0], MIN_TIME), min(bounds[1], MAX_TIME), rest


def _split(cond: ast.Expr | None, now_ns: int, bounds: list[int]) -> ast.Expr | None:
    if cond is None or not has_time(cond):
        return cond
    if not isinstance(cond, ast.Binary):
        raise unsupported("this condition on time")
    if cond.op == "and":
        lhs = _split(cond.lhs, now_ns, bounds)
        rhs = _split(cond.rhs, now_ns, bounds)
        return rhs if lhs is None else lhs if rhs is None else ast.Binary("and", lhs, rhs)
    if cond.op == "or":
        raise unsupported("a time condition inside OR")
    op, other = cond.op, cond.rhs
    if not (isinstance(cond.lhs, ast.VarRef) and cond.lhs.name.lower() == "time"):
        op, other = _FLIP.get(op, op), cond.lhs
        if not (isinstance(cond.rhs, ast.VarRef) and cond.rhs.name.lower() == "time"):
            raise unsupported("arithmetic on time in WHERE")
    if op not in _FLIP:
        raise unsupported(f"the time comparison {op!r}")
    t = time_value(other, now_ns)
    if op in (">", ">="):
        bounds[0] = max(bounds[0], t + (op == ">"))
    if op in ("<", "<="):
        bounds[1] = min(bounds[1], t - (op == "<"))
    if op == "=":
        bounds[0], bounds[1] = max(bounds[0], t), min(bounds[1], t)
    return None


def time_value(e: ast.Expr, now_ns: int) -> int:
    """A time expression: ``now()``, durations, integers (ns), RFC3339 strings, ``+ -``."""
    if isinstance(e, ast.Now):
        return now_ns
    if isinstance(e, ast.Duration):
        return e.ns
    if isinstance(e, ast.Number) and e.is_int:
        return int(e.value)
    if isinstance(e, ast.String):
        return parse_time(e.value)
    if isinstance(e, ast.Binary) and e.op in ("+", "-"):
        lhs, rhs = time_value(e.lhs, now_ns), time_value(e.rhs, now_ns)
        return lhs + rhs if e.op == "+" else lhs - rhs
    raise InvalidInput(
        "invalid time expression in WHERE: use now(), a duration, an integer in ns "
        "or an RFC3339 string"
    )


def fill(r: Reduced, stmt: ast.Select, integral: bool = False, boolean: bool = False) -> Reduced:
    """Empty buckets filled as ``fill(...)`` says (``count`` is 0 there with fill(null)).

    InfluxDB fills no bucket of ``integral``: its buckets are only those with points.
    Of an integer column the fill value is truncated, of a boolean one any number is
    false and ``linear`` leaves it null (InfluxDB casts so).
    """
    empty = ~r.present
    if not empty.any() or stmt.fill in ("null", "none") or integral:
        return r
    v = r.values.copy()
    v[empty] = np.nan  # count's 0 is fill(null)'s only
    if stmt.fill == "value":
        v[empty] = 0.0 if boolean else math.trunc(stmt.fill_value) if r.integer else stmt.fill_value
    elif stmt.fill == "previous":
        last = np.maximum.accumulate(np.where(r.present, np.arange(v.shape[0]), -1))
        ok = empty & (last >= 0)
        v[ok] = r.values[last[ok]]
    elif stmt.fill == "linear" and not boolean:
        idx = np.flatnonzero(r.present)
        inner = np.flatnonzero(empty)
        inner = inner[(inner > idx[0]) & (inner < idx[-1])] if idx.shape[0] else inner[:0]
        v[inner] = np.interp(inner, idx, r.values[idx])
        if r.integer:  # InfluxDB interpolates counts in floats and truncates
            v[inner] = np.trunc(v[inner])
    return Reduced(v, r.present, r.times, r.integer)


def _number(x: float) -> float | None:
    return x if x == x and abs(x) != math.inf else None


def nullable(arr: Floats) -> list[Any]:
    """Values for JSON: NaN (no value) and infinities (an overflow: JSON has none) are null."""
    return [x if x == x and abs(x) != math.inf else None for x in arr.tolist()]


def apply(op: str, a: Floats, b: Floats) -> Floats:
    with np.errstate(all="ignore"):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return np.where(b == 0, 0.0, a / np.where(b == 0, 1.0, b))
        return np.fmod(a, b)


def _leaves(e: ast.Expr) -> list[str]:
    if isinstance(e, ast.VarRef | ast.Call):
        return [e.name]
    if isinstance(e, ast.Binary):
        return _leaves(e.lhs) + _leaves(e.rhs)
    return []


def column_names(exprs: list[tuple[ast.Expr, str]]) -> list[str]:
    """InfluxDB's column names: the alias, else the names in the expression joined by
    ``_``; a repeated name gets ``_1``, ``_2``, ..."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for e, alias in exprs:
        base = alias or "_".join(_leaves(e))
        name = base
        while name in seen:
            seen[base] += 1
            name = f"{base}_{seen[base]}"
        seen.setdefault(name, 0)
        out.append(name)
    return out


def _evaluate(e: ast.Expr, reduced: dict[ast.Call, Reduced], n: int) -> Floats:
    if isinstance(e, ast.Call):
        return reduced[e].values
    if isinstance(e, ast.Number):
        return np.full(n, e.value)
    if isinstance(e, ast.Binary) and e.op in "+-*/%":
        return apply(e.op, _evaluate(e.lhs, reduced, n), _evaluate(e.rhs, reduced, n))
    raise unsupported("this expression in an aggregate SELECT")


def assemble(
    m: str,
    stmt: ast.Select,
    calls: list[ast.Call],
    reduced: dict[ast.Call, Reduced],
    row_times: Ints,
    take_values: Callable[[int], None],
    types: dict[ast.Call, str],
) -> Series | None:
    n = row_times.shape[0]
    rows = np.arange(n)
    if stmt.fill == "none" or all(c.name == "integral" for c in calls):
        rows = rows[np.any([reduced[c].present for c in calls], axis=0)]
    if stmt.descending:
        rows = rows[::-1]
    rows = rows[stmt.offset : stmt.offset + stmt.limit if stmt.limit else None]
    if not rows.shape[0]:
        return None
    take_values(rows.shape[0] * (len(stmt.fields) + 1))
    cols: list[list[Any]] = []
    for f in stmt.fields:
        arr = _evaluate(f.expr, reduced, n)[rows]
        cols.append(cells(arr, expr_type(f.expr, types.__getitem__)))  # type: ignore[arg-type]
    columns = ["time", *column_names([(f.expr, f.alias) for f in stmt.fields])]
    return Series(m, columns, row_times[rows], cols)
