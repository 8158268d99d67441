"""Conditions on fields (``WHERE usage_idle > 50``), evaluated per row as InfluxDB does.

A row is one series at one timestamp; a field it lacks is null, and any
comparison with null is false. Comparisons (``= != < <= > >=``) take
fields, numbers and arithmetic on them; ``AND``/``OR`` may mix them with
tag conditions (:func:`influxql_names.matches`), which hold or fail for a
whole series. A boolean field is compared only with ``true``/``false`` (``=``,
``!=``); with a number it keeps no row, as in InfluxDB. Choosing the series first
treats every field comparison as true (there is no NOT, so that only keeps
too many), then the rows are filtered here, columnar.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from xtsdb.protocol.influxql import ast, unsupported
from xtsdb.server import influxql_names as names
from xtsdb.server.influxql_funcs import Bools, Floats, Ints
from xtsdb.server.influxql_rows import apply

_COMPARE = {
    "=": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}


def field_refs(cond: ast.Expr | None, series: names.Series, fields: set[str]) -> set[str]:
    """The fields of ``series`` the condition compares (names that are not its tags)."""
    if isinstance(cond, ast.Binary):
        return field_refs(cond.lhs, series, fields) | field_refs(cond.rhs, series, fields)
    if isinstance(cond, ast.VarRef) and cond.name in fields:
        return set() if any(k == cond.name for k, _ in series.tags) else {cond.name}
    return set()


def row_mask(
    cond: ast.Expr, series: names.Series, fields: set[str], values: dict[str, Floats], n: int
) -> Bools:
    """Which of ``n`` rows (field columns ``values``, NaN for null) the condition keeps."""
    if isinstance(cond, ast.Binary) and cond.op in ("and", "or"):
        lhs = row_mask(cond.lhs, series, fields, values, n)
        rhs = row_mask(cond.rhs, series, fields, values, n)
        return lhs & rhs if cond.op == "and" else lhs | rhs
    if not field_refs(cond, series, fields):
        return np.full(n, names.matches(cond, series, fields, rows=True))
    if not isinstance(cond, ast.Binary) or cond.op not in _COMPARE:
        raise unsupported(f"the condition {names.describe(cond)} on a field")
    if isinstance(cond.lhs, ast.Boolean) or isinstance(cond.rhs, ast.Boolean):
        return _boolean(cond, series, values, n)
    # A boolean field is no number: InfluxDB's comparisons with it (up = 1, up + 1 > 1)
    # keep no row, so its column is null here.
    values = {
        f: (np.full(n, np.nan) if series.types.get(f) == "boolean" else v)
        for f, v in values.items()
    }
    with np.errstate(invalid="ignore"):
        left, right = _number(cond.lhs, values, n), _number(cond.rhs, values, n)
        ok = np.asarray(_COMPARE[cond.op](left, right), dtype=bool)
    return ok & ~np.isnan(left) & ~np.isnan(right)


def _boolean(cond: ast.Binary, series: names.Series, values: dict[str, Floats], n: int) -> Bools:
    """``field = true``, ``false != field``: rows of a boolean field; anything else none."""
    lit, ref = (cond.rhs, cond.lhs) if isinstance(cond.rhs, ast.Boolean) else (cond.lhs, cond.rhs)
    if not (
        isinstance(lit, ast.Boolean)
        and isinstance(ref, ast.VarRef)
        and not ref.cast
        and ref.name in values
        and cond.op in ("=", "!=")
        and series.types.get(ref.name) == "boolean"
    ):
        return np.zeros(n, bool)
    col = values[ref.name]
    same: Bools = (col != 0) == lit.value
    have: Bools = ~np.isnan(col)
    return have & (same if cond.op == "=" else ~same)


def _number(e: ast.Expr, values: dict[str, Floats], n: int) -> Floats:
    if isinstance(e, ast.VarRef) and e.name in values:  # (a boolean field is all null here)
        return np.trunc(values[e.name]) if e.cast == "integer" else values[e.name]
    if isinstance(e, ast.Number):
        return np.full(n, float(e.value))
    if isinstance(e, ast.Binary) and e.op in "+-*/%":
        return apply(e.op, _number(e.lhs, values, n), _number(e.rhs, values, n))
    raise unsupported(f"comparing a field with {names.describe(e)}")


def keep_rows(
    cond: ast.Expr | None,
    series: names.Series,
    fields: set[str],
    times: Ints,
    columns: dict[str, Floats],
    fetch: Callable[[str], tuple[Ints, Floats]],
) -> Bools | None:
    """The rows at ``times`` of ``series`` the condition keeps (None: all of them).

    ``columns`` are field values already at ``times``; other fields the
    condition compares are fetched (``fetch(field)``) and aligned.
    """
    need = field_refs(cond, series, fields)
    if cond is None or not need:
        return None
    values = dict(columns)
    for f in need - set(columns):
        col = np.full(times.shape[0], np.nan)
        if f in series.fields:
            t, v = fetch(f)
            at = np.minimum(np.searchsorted(t, times), max(t.shape[0] - 1, 0))
            hit = (t[at] == times) if t.shape[0] else np.zeros(times.shape[0], bool)
            col[hit] = v[at[hit]]
        values[f] = col
    return row_mask(cond, series, fields, values, times.shape[0])
