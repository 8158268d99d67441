"""InfluxQL's rate functions: ``derivative``, ``non_negative_derivative``, ``difference``,
``non_negative_difference`` (Grafana's counter panels), as InfluxDB 1.x computes them.

Over a field they run on the raw points of the group, merged by time; over an
aggregate (``derivative(mean(v), 1s) ... GROUP BY time(i)``) on its buckets:
InfluxDB reads one interval more before the range so that the first bucket
has a predecessor, fills as ``fill()`` says, skips null buckets, and reports
from the range's first bucket on. Each value is at the later of its two
points: ``(v1 - v0) / ((t1 - t0) / unit)`` (``unit``: 1 s over a field, the
interval over buckets, unless given), or ``v1 - v0``; the ``non_negative``
forms drop negative values. With ``ORDER BY time DESC`` the points are taken
newest first, so each value is at the older point (``difference`` changes sign).
Only one such call per SELECT, alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from xtsdb.protocol.errors import InvalidInput
from xtsdb.protocol.influxql import ast, unsupported
from xtsdb.protocol.influxql.answer import MAX_TIME, MIN_TIME, Series
from xtsdb.server.influxql_funcs import Floats, Ints
from xtsdb.server.influxql_rows import call_type, cells, column_names, ref_type

TRANSFORMS = frozenset(
    {"derivative", "non_negative_derivative", "difference", "non_negative_difference"}
)
Aggregate = Callable[..., Series | None]  # (stmt=, tmin=[, tmax=]) -> the inner buckets
Merged = Callable[[str], tuple[Ints, Floats]]  # field -> the group's points


def transform_call(stmt: ast.Select) -> ast.Call | None:
    """The statement's rate call, if it has one (checked: alone, well-formed)."""
    found = [f for f in stmt.fields if isinstance(f.expr, ast.Call) and f.expr.name in TRANSFORMS]
    if not found:
        return None
    if len(stmt.fields) > 1:
        raise unsupported(f"{found[0].expr.name}() with other fields in one SELECT")  # type: ignore[union-attr]
    call = found[0].expr
    assert isinstance(call, ast.Call)
    rate = "derivative" in call.name
    if not 1 <= len(call.args) <= (2 if rate else 1):
        raise InvalidInput(f"invalid number of arguments for {call.name}")
    inner = call.args[0]
    unit = call.args[1] if len(call.args) > 1 else None
    if unit is not None and not (isinstance(unit, ast.Duration) and unit.ns > 0):
        raise InvalidInput(f"{call.name}: the second argument must be a positive duration")
    if isinstance(inner, ast.Call):
        if not stmt.interval_ns:
            raise InvalidInput(f"{call.name} aggregate requires a GROUP BY interval")
    elif isinstance(inner, ast.VarRef) and inner.name != "*":
        if stmt.interval_ns:
            raise InvalidInput(f"aggregate function required inside the call to {call.name}")
    else:
        raise unsupported(f"{call.name}() of this argument")
    return call


def rate_type(rate: ast.Call, types: dict[str, str]) -> str:
    """The type of a rate function's values (InfluxDB refuses one over booleans)."""
    inner = rate.args[0]
    if isinstance(inner, ast.Call):
        of = call_type(inner.name, ref_type(inner.args[0], types))  # type: ignore[arg-type]
    else:
        of = ref_type(inner, types)  # type: ignore[arg-type]
    if of == "boolean":
        call_type(rate.name, of)  # raises
    return call_type(rate.name.removeprefix("non_negative_"), of)


def run_group(
    stmt: ast.Select,
    call: ast.Call,
    m: str,
    span: tuple[int, int],
    aggregate: Aggregate,
    merged: Merged,
    kind: str = "float",
) -> Series | None:
    """The call's rows for one group over the time range ``span`` (ns, inclusive);
    ``kind``: the type of its values (``difference`` of integers is an integer)."""
    tmin, tmax = span
    inner = call.args[0]
    unit = call.args[1].ns if len(call.args) > 1 else 0  # type: ignore[union-attr]
    if isinstance(inner, ast.Call):
        step = stmt.interval_ns
        plain = dataclasses.replace(
            stmt, fields=[ast.Field(inner)], limit=0, offset=0, descending=False
        )
        # One interval more, before the range (after it, newest first), so that the
        # range's first bucket has a predecessor; its own value is not reported.
        off = stmt.offset_ns % step
        if stmt.descending:
            buckets = aggregate(stmt=plain, tmin=tmin, tmax=min(tmax + step, MAX_TIME))
            first, last = MIN_TIME, (tmax - off) // step * step + off
        else:
            buckets = aggregate(
                stmt=plain, tmin=max(tmin - step, MIN_TIME) if tmin != MIN_TIME else tmin
            )
            first = (tmin - off) // step * step + off if tmin != MIN_TIME else MIN_TIME
            last = MAX_TIME
        if buckets is None:
            return None
        values = np.array([np.nan if x is None else x for x in buckets.cols[0]], np.float64)
        keep = ~np.isnan(values)
        t, v = buckets.times[keep], values[keep]
        unit = unit or step
    else:
        t, v = merged(inner.name)  # type: ignore[union-attr]
        first, last = MIN_TIME, MAX_TIME
        unit = unit or 1_000_000_000
    if stmt.descending:  # InfluxDB takes the points newest first: each value at the older one
        t, v = t[::-1], v[::-1]
    dt = np.abs(t[1:] - t[:-1]).astype(np.float64)
    dv = v[1:] - v[:-1]
    out_t = t[1:]
    if "derivative" in call.name:
        moved = dt != 0  # two points of one timestamp (several series) make no rate
        out_t, out_v = out_t[moved], dv[moved] / (dt[moved] / unit)
    else:
        out_v = dv
    ok = (out_t >= first) & (out_t <= last)
    if call.name.startswith("non_negative"):
        ok &= out_v >= 0
    rows = np.flatnonzero(ok)
    rows = rows[stmt.offset : stmt.offset + stmt.limit if stmt.limit else None]
    if not rows.shape[0]:
        return None
    columns = ["time", *column_names([(call, stmt.fields[0].alias)])]
    return Series(m, columns, out_t[rows], [cells(out_v[rows], kind)])
