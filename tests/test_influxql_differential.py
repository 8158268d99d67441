"""InfluxQL against a real InfluxDB 1.x: the same data and queries to ``influxd`` and to xtsdb.

The line protocol of ``tests/influxql_corpus.py`` goes to ``influxd``'s
``/write`` and, through the code behind xtsdb's ``/write``
(``influx_write.prepare``), into an xtsdb engine; every query of the corpus
is then asked of ``influxd``'s ``/query`` and of :func:`influxql_exec.execute`
with the same parameters. The answers must be equal: the same HTTP status,
the same JSON (statement ids, series names, tags, columns, times, values),
floats within 1e-9 relative; where InfluxDB answers an error, xtsdb must too
(the wording may differ).
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import require_program
from influxd import Influxd, start
from influxql_corpus import data, queries, typed_queries

from xtsdb.server.engine import Engine
from xtsdb.server.influx_write import prepare
from xtsdb.server.influxql_exec import execute

QUERIES = queries(0)  # their number and features; the fixture sets the times


@dataclass
class Servers:
    influx: Influxd
    engine: Engine
    t0: int  # the data's base time (s): about 4 h before now, so now() - 5h covers it


EPOCHS = ["ns", "", "ms", "s", "h", "u"]  # every query with ns; a few with the others
FEATURES = """SHOW DATABASES|SHOW MEASUREMENTS|WITH MEASUREMENT =~|SHOW TAG KEYS|WITH KEY IN|
WITH KEY =~|SHOW FIELD KEYS|SHOW RETENTION POLICIES|SHOW SERIES|SELECT *|GROUP BY *|FILL(LINEAR)|
FILL(PREVIOUS)|FILL(NONE)|FILL(0)|FILL(NULL)|ORDER BY TIME DESC|SLIMIT|SOFFSET|OFFSET|NOW() -|
 AS |!~|=~| OR |PERCENTILE(|INTEGRAL(|STDDEV(|SPREAD(|MEDIAN(|; SELECT|MS AND|FROM /|
NON_NEGATIVE_DERIVATIVE(|NON_NEGATIVE_DIFFERENCE(| DERIVATIVE(| DIFFERENCE(|::FIELD|
WHERE USAGE_IDLE > 50""".replace("\n", "").split("|")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    program = require_program("influxd", "influxdb")
    influx = start(program, tmp_path_factory.mktemp("influxd"))
    engine = Engine.open(tmp_path_factory.mktemp("xtsdb"))
    try:
        influx.query("CREATE DATABASE xtsdb")
        t0 = (int(time.time()) // 60 - 240) * 60
        body = data(t0)
        status, error = influx.write("xtsdb", body)
        assert status == 204, error
        prepared = prepare(engine, body, "ns", 0, 1)
        assert not prepared.errors
        engine.write_batches([q.batch for q in prepared.batches])
        yield Servers(influx, engine, t0)
    finally:
        engine.close()
        influx.stop()


def _tie_order(answer: Any) -> Any:
    """Rows of one timestamp from several series in one order: influxd merges series by time
    only, so their order among themselves is its heap's (xtsdb: series-key order)."""
    for result in answer.get("results", []) if isinstance(answer, dict) else []:
        for series in result.get("series", []):
            if series["columns"][:1] == ["time"]:
                series["values"].sort(key=lambda row: (row[0], [_key(x) for x in row[1:]]))
    return answer


def _key(x: Any) -> tuple[int, float, str]:
    """A cell's sort key: numbers by value (influxd writes 48.0 as 48), then the rest."""
    if isinstance(x, int | float) and not isinstance(x, bool):
        return (0, float(x), "")
    return (1, 0.0, json.dumps(x))


def _same(a: Any, b: Any, path: str = "", typed: bool = False) -> str:
    """'' if equal (floats within 1e-9 relative), else where they differ.

    ``typed``: a JSON integer must be one in both (influxd writes a float with no
    fraction as an integer, so this holds only of answers without float columns).
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return "" if a is b else f"{path}: {a!r} != {b!r}"
    if isinstance(a, int | float) and isinstance(b, int | float):
        ok = math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        ok = ok and not (typed and isinstance(a, int) != isinstance(b, int))
        return "" if ok else f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(a)} != {sorted(b)}"
        if "error" in a:  # both errors: the wording may differ
            return ""
        return next((d for k in a if (d := _same(a[k], b[k], f"{path}.{k}", typed))), "")
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}: {a[:3]!r}... {b[:3]!r}..."
        pairs = enumerate(zip(a, b, strict=True))
        return next((d for i, (x, y) in pairs if (d := _same(x, y, f"{path}[{i}]", typed))), "")
    return "" if a == b else f"{path}: {a!r} != {b!r}"


def _ask_both(servers: Servers, q: str, epoch: str) -> tuple[str, Any, Any]:
    params = {"db": "xtsdb", "q": q}
    if epoch:
        params["epoch"] = epoch
    status, body = servers.influx.request("POST", "/query?" + urllib.parse.urlencode(params))
    mine_status, mine = execute(servers.engine, params)
    theirs = _tie_order(json.loads(body))
    ours = _tie_order(json.loads(mine))
    diff = "" if status == mine_status else f"status {mine_status} != influxd's {status}"
    typed = q in typed_queries(servers.t0)
    return diff or _same(ours, theirs, typed=typed), ours, theirs


@pytest.mark.parametrize("index", range(len(QUERIES)))
def test_query_answers_as_influxd(servers: Servers, index: int) -> None:
    q = queries(servers.t0)[index]
    for epoch in EPOCHS if index % 9 == 0 else EPOCHS[:1]:
        diff, ours, theirs = _ask_both(servers, q, epoch)
        shown = f"\nxtsdb: {json.dumps(ours)[:1500]}\ninfluxd: {json.dumps(theirs)[:1500]}"
        assert not diff, f"{q} (epoch={epoch!r}): {diff}{shown}"


CHUNKED = [
    "SELECT usage_idle FROM cpu WHERE host = 'a' LIMIT 7",
    "SELECT last(usage_idle) FROM cpu GROUP BY host; SHOW MEASUREMENTS",
    "SELECT count(usage_idle) FROM cpu WHERE time >= {t}s AND time < {t}s + 1h "
    "GROUP BY time(10m), *",
    "SHOW TAG KEYS; SHOW FIELD KEYS FROM cpu",
    "SELECT nothing FROM cpu; SHOW SERIES FROM mem",
]


@pytest.mark.parametrize("q", CHUNKED)
def test_chunked_answers_as_influxd(servers: Servers, q: str) -> None:
    params = {"db": "xtsdb", "q": q.format(t=servers.t0), "chunked": "true", "chunk_size": "3"}
    params["epoch"] = "u"
    status, body = servers.influx.request("POST", "/query?" + urllib.parse.urlencode(params))
    mine_status, mine = execute(servers.engine, params)
    assert mine_status == status == 200
    ours = [json.loads(line) for line in mine.splitlines()]
    theirs = [json.loads(line) for line in body.splitlines()]
    diff = _same(ours, theirs)
    assert not diff, f"{diff}\nxtsdb: {mine[:1500]!r}\ninfluxd: {body[:1500]!r}"


def test_corpus_covers_every_feature() -> None:
    text = "\n".join(QUERIES).upper()
    for feature in FEATURES:
        assert feature in text, feature
