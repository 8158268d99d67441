"""InfluxQL ``/query``: a query string's statements run against the engine, as InfluxDB answers.

:func:`execute` is what the HTTP ``/query`` route calls, in a worker thread
(it blocks: catalog and engine reads). It takes the request's parameters
(``q``, ``epoch``; ``db``, ``rp``, ``chunked`` and the rest are accepted and
ignored: one server holds one database and answers in one body) and returns
``(HTTP status, JSON body)``:

- a query that does not parse, or uses what xtsdb does not support, is
  ``400 {"error": "..."}``, naming what is wrong;
- otherwise ``200 {"results": [...]}``, one result per statement; a statement
  that fails (a bound exceeded, an unknown function) carries its ``error``,
  and, as in InfluxDB, the statements after it are not executed.

SHOW answers are computed from the catalog alone (docs/influxql.md):
one database (``SHOW DATABASES`` lists ``database``), one retention policy
``autogen``, each field with the type its tag's ``value_type`` gives
(:func:`influxql_names.field_types`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from xtsdb.protocol.errors import InvalidInput
from xtsdb.protocol.influxql import ast, parse, unsupported
from xtsdb.protocol.influxql.answer import (
    Series,
    chunked_lines,
    dumps,
    epoch_divisor,
    error_body,
    statement_error,
    statement_json,
)
from xtsdb.server import influxql_names as names
from xtsdb.server import influxql_select
from xtsdb.server.influxql_rows import has_time as _has_time
from xtsdb.server.influxql_rows import split_time
from xtsdb.server.influxql_select import MAX_VALUES, Engine

DATABASE = "xtsdb"
_RP_COLUMNS = ["name", "duration", "shardGroupDuration", "replicaN", "default"]
_NO_TIME = np.empty(0, np.int64)


def execute(
    engine: Engine,
    params: Mapping[str, str],
    *,
    may_write: bool = True,
    now_ns: int | None = None,
) -> tuple[int, bytes]:
    """Run ``params["q"]``: ``(status, body)``; see the module docstring.

    ``may_write``: the caller holds the ``write`` role. Without it a query with
    ``CREATE DATABASE`` (the one statement that stands for a change) is 403,
    as ``/write`` is for a ``read`` token; everything else only reads.
    """
    try:
        divisor = epoch_divisor(params.get("epoch", ""))
        chunk = _chunk_size(params)
        q = params.get("q", "")
        if not q.strip():
            raise InvalidInput('missing required parameter "q"')
        statements = parse(q)
        if not may_write and any(isinstance(s, ast.CreateDatabase) for s in statements):
            return 403, error_body("CREATE DATABASE needs a token with the write role")
    except InvalidInput as exc:
        return 400, error_body(str(exc))
    now = time.time_ns() if now_ns is None else now_ns
    results: list[dict[str, Any]] = []
    lines: list[bytes] = []
    failed = False
    for i, stmt in enumerate(statements):
        if failed:
            results.append(statement_error(i, "not executed"))
            lines.append(dumps(results[-1:]))
            continue
        try:
            series = run_statement(engine, stmt, now)
        except InvalidInput as exc:
            results.append(statement_error(i, str(exc)))
            lines.append(dumps(results[-1:]))
            failed = True
            continue
        if chunk:
            lines += chunked_lines(i, series, divisor, chunk, isinstance(stmt, ast.Select))
        else:
            results.append(statement_json(i, series, divisor))
    if chunk:
        return 200, b"".join(line + b"\n" for line in lines)
    return 200, dumps(results)


def _chunk_size(params: Mapping[str, str]) -> int:
    """Rows per line with ``chunked=true`` (``chunk_size``, 10,000 by default); 0: not chunked."""
    if params.get("chunked", "").lower() not in ("true", "1"):
        return 0
    text = params.get("chunk_size", "") or "10000"
    if not text.isdigit() or not 0 < int(text) <= 1_000_000:
        raise InvalidInput(f"invalid chunk_size {text!r}: an integer from 1 to 1000000")
    return int(text)


def run_statement(engine: Engine, stmt: ast.Statement, now_ns: int) -> list[Series]:
    if isinstance(stmt, ast.Select):
        return influxql_select.run(engine, stmt, now_ns)
    if isinstance(stmt, ast.CreateDatabase):
        return []  # one server, one database: a no-op, so Telegraf starts cleanly
    if stmt.what == "databases":
        return [_series("databases", ["name"], [[DATABASE]])]
    if stmt.what == "retention_policies":
        cols: list[list[Any]] = [["autogen"], ["0s"], ["168h0m0s"], [1], [True]]
        return [_series(None, _RP_COLUMNS, cols)]
    if stmt.what == "measurements" and _has_time(stmt.condition):
        raise InvalidInput("SHOW MEASUREMENTS doesn't support time in WHERE clause")
    # As InfluxDB 1.x: a time range in the WHERE of other SHOWs is ignored (all time).
    cond = split_time(stmt.condition, now_ns)[2]
    by_measurement = names.load(engine.catalog, stmt.sources)
    out: list[Series] = []
    kept = {
        m: [s for s in by_tags.values() if names.matches(cond, s, _fields(by_tags))]
        for m, by_tags in sorted(by_measurement.items())
    }
    kept = {m: series for m, series in kept.items() if series}
    if stmt.what == "measurements":
        found = [m for m in kept if _measurement_wanted(stmt, m)]
        rows = _page(found, stmt)
        return [_series("measurements", ["name"], [rows])] if rows else []
    if stmt.what == "series":
        keys = sorted(s.key for series in kept.values() for s in series)
        rows = _page(keys, stmt)
        return [_series(None, ["key"], [rows])] if rows else []
    budget = MAX_VALUES
    for m, series in kept.items():
        if stmt.what == "tag_keys":
            rows_kv: list[tuple[Any, ...]] = [
                (k,) for k in sorted({k for s in series for k, _ in s.tags})
            ]
            columns = ["tagKey"]
        elif stmt.what == "field_keys":
            rows_kv = sorted(names.field_types(series).items())
            columns = ["fieldKey", "fieldType"]
        else:
            pairs = {(k, v) for s in series for k, v in s.tags if _key_wanted(stmt, k)}
            rows_kv = sorted(pairs)
            columns = ["key", "value"]
        rows_kv = _page(rows_kv, stmt)
        budget -= len(rows_kv) * len(columns)
        if budget < 0:
            raise InvalidInput(f"the answer would hold more than {MAX_VALUES:,} values")
        if rows_kv:
            out.append(_series(m, columns, [list(c) for c in zip(*rows_kv, strict=True)]))
    return out


def _fields(by_tags: dict[names.Tags, names.Series]) -> set[str]:
    return {f for s in by_tags.values() for f in s.fields}


def _measurement_wanted(stmt: ast.Show, m: str) -> bool:
    if stmt.regex:
        return names.regex(stmt.regex).search(m) is not None
    return not stmt.name or m == stmt.name


def _key_wanted(stmt: ast.Show, key: str) -> bool:
    if stmt.key_op in ("=", "in"):
        return key in stmt.keys
    if stmt.key_op == "!=":
        return key not in stmt.keys
    if stmt.key_op in ("=~", "!~"):
        return (names.regex(stmt.key_regex).search(key) is not None) == (stmt.key_op == "=~")
    raise unsupported(f"WITH KEY {stmt.key_op}")


def _page(rows: list[Any], stmt: ast.Show) -> list[Any]:
    return rows[stmt.offset : stmt.offset + stmt.limit if stmt.limit else None]


def _series(name: str | None, columns: list[str], cols: list[list[Any]]) -> Series:
    return Series(name, columns, _NO_TIME, cols)
