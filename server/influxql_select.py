"""``SELECT`` over the engine: time range, series groups, raw rows or buckets.

InfluxDB's semantics, which the differential test checks against a real
``influxd``: the WHERE time range is inclusive at both ends in nanoseconds
(``time > t`` starts at ``t + 1``); ``GROUP BY time(i, o)`` buckets start at
``o + k * i`` (epoch-aligned), the first and last bucket are clipped by the
range but reported at their aligned start, and ``fill(null)`` emits every
bucket up to the one holding the range's end (``now()`` when the query gives
no end); ``count`` fills empty buckets with 0. Without ``GROUP BY time`` an
aggregate row is at the range start (0 without one), or at the chosen
point's time when the statement is one selector (``first``, ``max``, ...).
Raw rows of several series are merged by time, a timestamp's rows in
series-key order; ``SELECT *`` gives the fields and the tags not grouped by,
sorted by name. ``ORDER BY time DESC`` reverses the series' order too (after
``SLIMIT``), as InfluxDB does.

Bounds: at most ``MAX_POINTS`` points read and ``MAX_VALUES`` values
answered per statement, ``MAX_BUCKETS`` buckets per series; over them the
statement is refused with an error, before anything big is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np

from xtsdb.protocol.errors import InvalidInput
from xtsdb.protocol.influxql import ast, unsupported
from xtsdb.protocol.influxql.answer import MAX_TIME, MIN_TIME, Series, parse_time
from xtsdb.server import influxql_names as names
from xtsdb.server.influxql_funcs import FUNCTIONS, OTHER_FUNCTIONS, SELECTORS, Floats, Ints, reduce
from xtsdb.server.influxql_rows import (
    apply,
    assemble,
    call_type,
    cast,
    cells,
    column_names,
    expr_type,
    fill,
    ref_type,
    split_time,
)
from xtsdb.server.influxql_transform import rate_type, run_group, transform_call
from xtsdb.server.influxql_where import keep_rows

MAX_POINTS = 5_000_000
MAX_VALUES = 2_000_000
MAX_BUCKETS = 100_000
_NS_PER_US = 1000
_T = TypeVar("_T", ast.Call, ast.VarRef)


class Engine(Protocol):
    catalog: Any

    def query(self, tag_id: int, start_us: int, end_us: int, limit: int | None = None) -> Any: ...


@dataclass
class _Budget:
    points: int
    values: int

    def take_values(self, n: int) -> None:
        self.values -= n
        if self.values < 0:
            raise InvalidInput(
                "the answer would hold too many values: narrow the time "
                "range, use a larger GROUP BY time() interval, or add a LIMIT"
            )


def run(engine: Engine, stmt: ast.Select, now_ns: int) -> list[Series]:
    tmin, tmax, cond = split_time(stmt.condition, now_ns)
    rate = transform_call(stmt)
    calls = [c for f in stmt.fields for c in _find(f.expr, ast.Call)]
    if rate is not None:  # the call inside it is the statement's aggregate, if any
        calls = [rate.args[0]] if isinstance(rate.args[0], ast.Call) else []
    if calls and any(_find(f.expr, ast.VarRef) for f in stmt.fields):
        raise InvalidInput("mixing aggregate and non-aggregate queries is not supported")
    if stmt.interval_ns and not calls:
        raise InvalidInput("GROUP BY requires at least one aggregate function")
    for c in calls:
        _check_call(c)
    if stmt.interval_ns and tmax == MAX_TIME:
        tmax = now_ns
    budget = _Budget(MAX_POINTS, MAX_VALUES)
    out: list[Series] = []
    for m, by_tags in sorted(names.load(engine.catalog, stmt.sources).items()):
        fields = {f for s in by_tags.values() for f in s.fields}
        types = names.field_types(by_tags.values())
        tag_keys = sorted({k for s in by_tags.values() for k, _ in s.tags})
        group = tag_keys if stmt.group_all else sorted(set(stmt.group_tags))
        groups: dict[tuple[str, ...], list[names.Series]] = {}
        for series_tags in sorted(by_tags):
            s = by_tags[series_tags]
            if names.matches(cond, s, fields, rows=True):
                groups.setdefault(tuple(s.tag(k) for k in group), []).append(s)
        for key in sorted(groups):
            members = groups[key]
            group_tags = dict(zip(group, key, strict=True)) if group else None
            where = _Where(cond, fields, types)
            if rate is not None:
                buckets = partial(
                    _aggregate, engine, m=m, members=members, tmax=tmax, budget=budget, where=where
                )
                to = rate.args[0].cast if isinstance(rate.args[0], ast.VarRef) else ""
                points = partial(
                    _merged,
                    engine,
                    members,
                    tmin=tmin,
                    tmax=tmax,
                    budget=budget,
                    where=where,
                    to=to,
                )
                kind = rate_type(rate, types)
                series = run_group(stmt, rate, m, (tmin, tmax), buckets, points, kind)
            elif calls:
                series = _aggregate(engine, stmt, m, members, tmin, tmax, budget, where)
            else:
                span = (tmin, tmax)
                series = _raw(engine, stmt, m, members, tag_keys, group, span, budget, where)
            if series is not None:
                series.tags = group_tags
                out.append(series)
    if stmt.soffset or stmt.slimit:
        out = out[stmt.soffset : stmt.soffset + stmt.slimit if stmt.slimit else None]
    return out[::-1] if stmt.descending else out  # InfluxDB: series newest-first too


def _find(expr: ast.Expr, kind: type[_T]) -> list[_T]:
    """The calls (or field references) of an expression, left to right."""
    if isinstance(expr, kind):
        return [expr]
    if isinstance(expr, ast.Binary):
        return _find(expr.lhs, kind) + _find(expr.rhs, kind)
    return []


def _check_call(c: ast.Call) -> None:
    if c.name in OTHER_FUNCTIONS:
        raise unsupported(f"the function {c.name}()")
    if c.name not in FUNCTIONS:
        raise InvalidInput(f"undefined function {c.name}()")
    want = {"percentile": (2, 2), "integral": (1, 2)}.get(c.name, (1, 1))
    if not want[0] <= len(c.args) <= want[1]:
        raise InvalidInput(f"invalid number of arguments for {c.name}, expected {want[0]}")
    if not isinstance(c.args[0], ast.VarRef) or c.args[0].name == "*":
        raise unsupported(f"{c.name}() of anything but one field")
    extra = c.args[1] if len(c.args) > 1 else None
    if c.name == "percentile" and not (isinstance(extra, ast.Number) and 0 <= extra.value <= 100):
        raise InvalidInput("percentile: the second argument must be a number from 0 to 100")
    if c.name == "integral" and extra is not None and not _positive_duration(extra):
        raise InvalidInput("integral: the second argument must be a positive duration")


def _positive_duration(e: ast.Expr) -> bool:
    return isinstance(e, ast.Duration) and e.ns > 0


def _arg(c: ast.Call) -> float:
    """percentile's N, integral's unit in ns (1s by default)."""
    extra = c.args[1] if len(c.args) > 1 else None
    if isinstance(extra, ast.Number):
        return extra.value
    if isinstance(extra, ast.Duration):
        return float(extra.ns)
    return 1e9


def _fetch(
    engine: Engine, tag_id: int, tmin: int, tmax: int, budget: _Budget
) -> tuple[Ints, Floats]:
    """Points of one tag in [tmin, tmax] (ns, inclusive): (times in ns, values)."""
    start_us = -((-tmin) // _NS_PER_US)
    end_us = tmax // _NS_PER_US + 1
    pts = engine.query(tag_id, start_us, end_us, limit=budget.points + 1)
    budget.points -= len(pts)
    if budget.points < 0:
        raise InvalidInput(
            f"the statement would read more than {MAX_POINTS:,} points: narrow the time range "
            "or use a larger GROUP BY time() interval"
        )
    ok = ~np.isnan(pts.values)  # InfluxDB stores no NaN: such a point is no point
    return pts.timestamps[ok] * _NS_PER_US, pts.values[ok]


@dataclass
class _Where:
    """The WHERE left once time is taken out (tags, fields), and the measurement's fields."""

    cond: ast.Expr | None
    fields: set[str]
    types: dict[str, str]  # field -> float, integer, boolean


def _merged(
    engine: Engine,
    members: list[names.Series],
    fld: str,
    tmin: int,
    tmax: int,
    budget: _Budget,
    where: _Where,
    to: str = "",
) -> tuple[Ints, Floats]:
    """A field's points over a group's series, by time (a timestamp's in series order);
    only those of the rows a condition on fields keeps; cast ``to`` float or integer."""
    parts = []
    for s in members:
        if fld not in s.fields:
            continue
        ts, v = _fetch(engine, s.fields[fld], tmin, tmax, budget)
        fetch = partial(_fetch_field, engine, s, tmin=tmin, tmax=tmax, budget=budget)
        keep = keep_rows(where.cond, s, where.fields, ts, {fld: v}, fetch)
        parts.append((ts, v) if keep is None else (ts[keep], v[keep]))
    if not parts:
        return np.empty(0, np.int64), np.empty(0)
    ts = np.concatenate([p[0] for p in parts])
    v = np.concatenate([p[1] for p in parts])
    order = np.argsort(ts, kind="stable")
    return cast(ts[order], v[order], where.types.get(fld, "float"), to)


def _fetch_field(
    engine: Engine, s: names.Series, fld: str, *, tmin: int, tmax: int, budget: _Budget
) -> tuple[Ints, Floats]:
    return _fetch(engine, s.fields[fld], tmin, tmax, budget)


def _aggregate(
    engine: Engine,
    stmt: ast.Select,
    m: str,
    members: list[names.Series],
    tmin: int,
    tmax: int,
    budget: _Budget,
    where: _Where,
) -> Series | None:
    calls = [c for f in stmt.fields for c in _find(f.expr, ast.Call)]
    refs = {c: c.args[0] for c in calls if isinstance(c.args[0], ast.VarRef)}  # checked
    types = {c: call_type(c.name, ref_type(refs[c], where.types)) for c in calls}
    fetched = {}
    for ref in refs.values():
        if ref not in fetched:
            fetched[ref] = _merged(engine, members, ref.name, tmin, tmax, budget, where, ref.cast)
    if not any(ts.shape[0] for ts, _ in fetched.values()):
        return None
    if stmt.interval_ns:
        lo = tmin
        if lo == MIN_TIME:  # no lower bound: from the earliest point
            lo = min(int(ts[0]) for ts, _ in fetched.values() if ts.shape[0])
        step, off = stmt.interval_ns, stmt.offset_ns % stmt.interval_ns
        first = (lo - off) // step * step + off
        n = (tmax - first) // step + 1
        if n > MAX_BUCKETS:
            raise InvalidInput(
                f"the statement would make {n:,} buckets per series (at most {MAX_BUCKETS:,}): "
                "narrow the time range or use a larger GROUP BY time() interval"
            )
        if first < MIN_TIME:
            raise InvalidInput("the first GROUP BY time() bucket would start before year 1677")
        starts = first + step * np.arange(n, dtype=np.int64)
        # the last bucket's end may lie past int64: it is then the end of time
        ends = np.where(starts > MAX_TIME - step, MAX_TIME, starts + step)
    else:  # integral reports 0 here whatever the range, as InfluxDB does
        t = 0 if tmin == MIN_TIME or any(c.name == "integral" for c in calls) else tmin
        starts = np.array([t], np.int64)
        ends = np.array([MAX_TIME], np.int64)
        n = 1
    reduced = {}
    for c in calls:
        ts, v = fetched[refs[c]]
        b = (ts - starts[0]) // stmt.interval_ns if stmt.interval_ns else np.zeros_like(ts)
        ints = ref_type(refs[c], where.types) == "integer"
        r = reduce(c.name, ts, v, b, n, ends, _arg(c), ints)
        r.integer = types[c] == "integer"
        reduced[c] = fill(r, stmt, c.name == "integral", types[c] == "boolean")
    rows_times = starts
    if not stmt.interval_ns and len(calls) == 1 and calls[0].name in SELECTORS:
        chosen = reduced[calls[0]].times
        if chosen is not None:
            rows_times = chosen
    return assemble(m, stmt, calls, reduced, rows_times, budget.take_values, types)


def _raw(
    engine: Engine,
    stmt: ast.Select,
    m: str,
    members: list[names.Series],
    tag_keys: list[str],
    group: list[str],
    span: tuple[int, int],
    budget: _Budget,
    where: _Where,
) -> Series | None:
    tmin, tmax = span
    fields = where.fields
    exprs: list[tuple[ast.Expr, str]] = []
    for f in stmt.fields:
        if isinstance(f.expr, ast.VarRef) and f.expr.name == "*":
            shown = sorted(fields | (set(tag_keys) - set(group)))
            exprs += [(ast.VarRef(k), "") for k in shown]
        else:
            exprs.append((f.expr, f.alias))
    # (a boolean field under a numeric cast is no field: only fetched if also read as itself)
    refs = [r for e, _a in exprs for r in _find(e, ast.VarRef) if r.name in fields]
    used = sorted({r.name for r in refs if not (r.cast and where.types[r.name] == "boolean")})
    if not used:
        return None
    t_parts: list[Ints] = []
    rank_parts: list[Ints] = []
    cols: dict[str, list[Floats]] = {f: [] for f in used}
    for k, s in enumerate(members):
        got = {f: _fetch(engine, s.fields[f], tmin, tmax, budget) for f in used if f in s.fields}
        if not got:
            continue
        times = np.unique(np.concatenate([t for t, _v in got.values()]))
        row: dict[str, Floats] = {}
        for fld in used:
            row[fld] = np.full(times.shape[0], np.nan)
            if fld in got:
                row[fld][np.searchsorted(times, got[fld][0])] = got[fld][1]
        fetch = partial(_fetch_field, engine, s, tmin=tmin, tmax=tmax, budget=budget)
        keep = keep_rows(where.cond, s, fields, times, row, fetch)
        if keep is not None:
            times, row = times[keep], {f: col[keep] for f, col in row.items()}
        t_parts.append(times)
        rank_parts.append(np.full(times.shape[0], k, np.int64))
        for fld in used:
            cols[fld].append(row[fld])
    if not t_parts:
        return None
    ts = np.concatenate(t_parts)
    rank = np.concatenate(rank_parts)
    order = np.lexsort((rank, ts))
    if stmt.descending:
        order = order[::-1]
    window = order[stmt.offset : stmt.offset + stmt.limit if stmt.limit else None]
    if not window.shape[0]:
        return None
    budget.take_values(window.shape[0] * (len(exprs) + 1))
    values = {f: np.concatenate(cols[f])[window] for f in used}
    tag_cols = {k: np.array([s.tag(k) or None for s in members], dtype=object) for k in tag_keys}
    out_cols: list[list[Any]] = []
    for e, _alias in exprs:
        if isinstance(e, ast.VarRef) and e.name not in fields and e.name in tag_cols:
            out_cols.append(tag_cols[e.name][rank[window]].tolist())
            continue
        arr = _arith(e, values, window.shape[0], where.types)
        out_cols.append(cells(arr, expr_type(e, partial(_field_type, where.types))))
    columns = ["time", *column_names([(e, a) for e, a in exprs])]
    return Series(m, columns, ts[window], out_cols)


def _field_type(types: dict[str, str], e: ast.Expr) -> str:
    return ref_type(e, types) if isinstance(e, ast.VarRef) else "float"


def _arith(e: ast.Expr, values: dict[str, Floats], n: int, types: dict[str, str]) -> Floats:
    """A raw row expression, columnar; a missing field is NaN (null), as is null arithmetic;
    casts as :func:`influxql_rows.cast`."""
    if isinstance(e, ast.VarRef):
        v = values.get(e.name)
        if v is None or (e.cast and types.get(e.name) == "boolean"):
            return np.full(n, np.nan)
        return np.trunc(v) if e.cast == "integer" else v
    if isinstance(e, ast.Number):
        return np.full(n, e.value)
    if isinstance(e, ast.Binary) and e.op in "+-*/%":
        return apply(e.op, _arith(e.lhs, values, n, types), _arith(e.rhs, values, n, types))
    raise unsupported(f"the expression {names.describe(e)} in SELECT")


__all__ = ["parse_time", "run"]
