"""The InfluxQL executor on a real engine: names, bounds and error answers.

(Answers themselves are checked against a real influxd in
test_influxql_differential.py.) Every bound refuses with a clear error
instead of building a huge answer, and no query changes what is stored.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxql_corpus import queries

from xtsdb.protocol.line_protocol import series_name
from xtsdb.server import influxql_select
from xtsdb.server.engine import Engine
from xtsdb.server.influx_write import prepare
from xtsdb.server.influxql_exec import execute
from xtsdb.server.influxql_names import split_name

S = 1_000_000_000
LINES = b"""cpu,host=a,region=eu usage=10 1000000000
cpu,host=b usage=20 2000000000
cpu,host=a,region=eu usage=30 61000000000
"""


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with Engine.open(tmp_path / "data") as eng:
        prepared = prepare(eng, LINES, "ns", 0, 1)
        assert not prepared.errors
        eng.write_batches([q.batch for q in prepared.batches])
        yield eng


def ask(engine: Engine, q: str, **params: str) -> tuple[int, Any]:
    status, body = execute(engine, {"q": q, "epoch": "s", **params}, now_ns=100 * S)
    return status, json.loads(body)


def test_names_outside_the_line_protocol_scheme(engine: Engine) -> None:
    for name in ("TI101", "FIC101.PV", "cpu,host=x"):
        engine.create_tag(name)
    engine.write(engine.catalog.resolve("TI101"), [5_000_000], [1.5])
    engine.write(engine.catalog.resolve("FIC101.PV"), [5_000_000], [2.5])
    _, answer = ask(engine, "SHOW MEASUREMENTS")
    names = [row[0] for row in answer["results"][0]["series"][0]["values"]]
    assert names == ["FIC101", "TI101", "cpu", "cpu,host=x"]  # no field: a name of its own
    _, answer = ask(engine, 'SELECT * FROM "TI101"; SELECT "PV" FROM "FIC101"')
    first, second = answer["results"]
    assert first["series"] == [
        {"name": "TI101", "columns": ["time", "value"], "values": [[5, 1.5]]}
    ]
    assert second["series"][0]["values"] == [[5, 2.5]]


TEXT = st.text(alphabet=st.sampled_from("ab, =.\\\"'é_"), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(TEXT, st.dictionaries(TEXT, TEXT, max_size=3), TEXT)
def test_names_invert_series_name(m: str, tags: dict[str, str], fld: str) -> None:
    name = series_name(m, tags, fld)
    got = split_name(name)
    backslash = any("\\" in x for x in (m, fld, *tags, *tags.values()))
    if got == (name, (), "value"):  # read as a name of its own
        assert backslash, name
        return
    assert series_name(*got) == name
    # Names are ambiguous only through backslashes: series_name(r"m\,t=1", {}, "v") is
    # series_name("m\\", {"t": "1"}, "v"); InfluxQL reads them as a series key is read.
    assert got == (m, tuple(sorted(tags.items())), fld) or backslash, name


def test_statement_errors_and_not_executed(engine: Engine) -> None:
    status, answer = ask(engine, "SHOW DATABASES; SELECT frob(usage) FROM cpu; SHOW SERIES")
    assert status == 200
    results = answer["results"]
    assert results[0]["series"][0]["values"] == [["xtsdb"]]
    assert results[1] == {"statement_id": 1, "error": "undefined function frob()"}
    assert results[2] == {"statement_id": 2, "error": "not executed"}


@pytest.mark.parametrize(
    ("q", "params", "error"),
    [
        ("SELEC 1", {}, "error parsing query"),
        ("SELECT usage FROM cpu", {"epoch": "fortnight"}, "invalid epoch"),
        ("SELECT usage FROM cpu", {"chunked": "true", "chunk_size": "0"}, "invalid chunk_size"),
        ("SELECT usage INTO x FROM cpu", {}, "SELECT ... INTO is not supported"),
        ("   ", {}, 'missing required parameter "q"'),
    ],
)
def test_bad_queries_are_400(engine: Engine, q: str, params: dict[str, str], error: str) -> None:
    status, answer = ask(engine, q, **params)
    assert status == 400 and error in answer["error"]


@pytest.mark.parametrize(
    ("q", "error"),
    [
        ("SHOW TAG KEYS WHERE usage > 5", "a condition on the field 'usage' in SHOW"),
        ("SELECT usage FROM cpu WHERE usage =~ /1/", "on a field is not supported"),
        ("SELECT usage FROM cpu WHERE usage > 'x'", "comparing a field with 'x'"),
        ("SELECT usage FROM cpu WHERE time > 1s OR host = 'a'", "a time condition inside OR"),
        ("SELECT usage FROM cpu WHERE host =~ /(a+)+$/", "slow to match"),
        ("SELECT usage FROM cpu WHERE host =~ /(/", "invalid regex"),
        ("SELECT mean(usage), usage FROM cpu", "mixing aggregate and non-aggregate"),
        ("SELECT percentile(usage) FROM cpu", "invalid number of arguments"),
        ("SELECT mean(*) FROM cpu", "not supported"),
        ("SELECT top(usage, 2) FROM cpu", "the function top() is not supported"),
        ("SELECT derivative(mean(usage)), max(usage) FROM cpu", "with other fields"),
        ("SELECT derivative(mean(usage)) FROM cpu", "requires a GROUP BY interval"),
        ("SELECT difference(usage) FROM cpu GROUP BY time(1m)", "aggregate function required"),
        ("SELECT derivative(usage, 0s) FROM cpu", "a positive duration"),
        ("SELECT usage FROM cpu GROUP BY time(1m)", "requires at least one aggregate"),
        ("SELECT mean(usage) FROM cpu WHERE time > 0s GROUP BY time(1ms)", "buckets per series"),
        ("SELECT integral(usage, 0s) FROM cpu", "must be a positive duration"),
        ("SELECT percentile(usage, 101) FROM cpu", "a number from 0 to 100"),
        (
            "SELECT max(usage) FROM cpu WHERE time >= '1677-09-22' GROUP BY time(5000w)",
            "before year 1677",
        ),
    ],
)
def test_statement_refusals(engine: Engine, q: str, error: str) -> None:
    status, answer = ask(engine, q)
    assert status == 200
    assert error in answer["results"][0]["error"]


def test_point_and_answer_bounds(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(influxql_select, "MAX_POINTS", 2)
    _, answer = ask(engine, "SELECT usage FROM cpu")
    assert "would read more than 2 points" in answer["results"][0]["error"]
    _, answer = ask(engine, "SELECT usage FROM cpu WHERE host = 'a'")
    assert len(answer["results"][0]["series"][0]["values"]) == 2
    monkeypatch.setattr(influxql_select, "MAX_POINTS", 1000)
    monkeypatch.setattr(influxql_select, "MAX_VALUES", 5)
    _, answer = ask(engine, "SELECT usage FROM cpu")  # 3 rows of 2 values
    assert "too many values" in answer["results"][0]["error"]
    _, answer = ask(engine, "SELECT usage FROM cpu LIMIT 2")
    assert len(answer["results"][0]["series"][0]["values"]) == 2


def test_extreme_numbers_are_answered(engine: Engine) -> None:
    _, answer = ask(engine, "SELECT usage * 1e308 * 1e308 FROM cpu WHERE host = 'b'")
    assert answer["results"][0]["series"][0]["values"] == [[2, None]]  # an overflow is null
    q = "SELECT count(usage) FROM cpu WHERE time > 9223372036854775807 GROUP BY time(10000w)"
    assert ask(engine, q)[1] == {"results": [{"statement_id": 0}]}
    _, answer = ask(engine, "SELECT count(usage) FROM cpu WHERE time < now() + 10000w")
    assert answer["results"][0]["series"][0]["values"] == [[0, 3]]
    status, answer = ask(engine, "SELECT count(usage) FROM cpu GROUP BY time(1000000w)")
    assert status == 400 and "292 years" in answer["error"]


PIECES = (
    "time|>|=|now()|-|9223372036854775807|10000w|1e400|'x'|/(a+)+/|(|)|,|AND|OR|GROUP BY|"
    "time(1s)|fill(linear)|LIMIT|-1|mean(usage)|*|host|\"|'|;|::field|FROM|/.*/|\\|"
    "percentile(usage, 50)|integral(usage)|SLIMIT|ORDER BY time DESC"
)


def test_mutated_queries_never_fail_the_server(engine: Engine) -> None:
    """Corpus queries with tokens inserted, replaced and deleted: 200 or 400, valid JSON."""
    base = queries(0)
    pieces = PIECES.split("|")
    rnd = random.Random(12)
    for _ in range(400):
        tokens = rnd.choice(base).replace("usage_idle", "usage").split(" ")
        for _ in range(rnd.randint(1, 3)):
            k = rnd.randrange(len(tokens))
            if rnd.random() < 0.5:
                tokens.insert(k, rnd.choice(pieces))
            else:
                tokens[k] = rnd.choice(pieces)
        status, answer = ask(engine, " ".join(tokens))
        assert status in (200, 400) and isinstance(answer, dict)


def test_queries_change_nothing(engine: Engine) -> None:
    before = engine.stats()["points_written"], len(engine.catalog.all())
    ask(engine, "CREATE DATABASE other; SELECT * FROM cpu; SHOW SERIES; DROP SERIES FROM cpu")
    ask(engine, "SELECT mean(usage) FROM cpu WHERE time > 0s GROUP BY time(1ms)")
    assert (engine.stats()["points_written"], len(engine.catalog.all())) == before
    status, answer = execute(engine, {"q": "CREATE DATABASE x"}, may_write=False)
    assert status == 403 and b"write role" in answer


def test_group_by_time_without_lower_bound_starts_at_the_data(engine: Engine) -> None:
    # The range ends at now() (100 s here); InfluxDB's missing start is the data's first bucket.
    _, answer = ask(engine, "SELECT count(usage) FROM cpu GROUP BY time(30s)")
    rows = answer["results"][0]["series"][0]["values"]
    assert rows == [[0, 2], [30, 0], [60, 1], [90, 0]]


def test_count_fills_like_influxdb(engine: Engine) -> None:
    q = "SELECT count(usage) FROM cpu WHERE time >= -60s AND time < 120s GROUP BY time(30s, 0s)"
    rows = {}
    for mode in ("null", "previous", "linear", "7"):
        _, answer = ask(engine, f"{q} fill({mode})")
        rows[mode] = answer["results"][0]["series"][0]["values"]
    assert rows["null"] == [[-60, 0], [-30, 0], [0, 2], [30, 0], [60, 1], [90, 0]]
    assert rows["previous"] == [[-60, None], [-30, None], [0, 2], [30, 2], [60, 1], [90, 1]]
    assert rows["linear"] == [[-60, None], [-30, None], [0, 2], [30, 1], [60, 1], [90, None]]
    assert rows["7"] == [[-60, 7], [-30, 7], [0, 2], [30, 7], [60, 1], [90, 7]]


def test_wide_buckets_are_columnar() -> None:
    from xtsdb.server.influxql_funcs import reduce

    ts = np.arange(0, 10 * S, S // 10, dtype=np.int64)
    v = np.arange(ts.shape[0], dtype=np.float64)
    b = ts // S
    ends = (np.arange(10) + 1) * S
    got = reduce("spread", ts, v, b, 10, ends.astype(np.int64))
    assert got.values.tolist() == [9.0] * 10 and got.present.all()


def test_types_of_tags_made_by_hand(engine: Engine) -> None:
    """Types come from the catalog: a field whose series disagree is float, an enum is an
    integer, and a fraction a binary client wrote to an int64 tag is not cut off."""
    engine.create_tag("dev,k=1.v", value_type="int64")
    engine.create_tag("dev,k=2.v", value_type="float64")
    engine.create_tag("dev,k=1.mode", value_type="enum")
    engine.create_tag("dev,k=1.on", value_type="bool")
    for name, value in (("dev,k=1.v", 2.5), ("dev,k=2.v", 3.0), ("dev,k=1.mode", 4.0)):
        engine.write(engine.catalog.resolve(name), [5_000_000], [value])
    engine.write(engine.catalog.resolve("dev,k=1.on"), [5_000_000, 6_000_000], [1.0, 0.0])
    _, answer = ask(engine, "SHOW FIELD KEYS FROM dev")
    assert answer["results"][0]["series"][0]["values"] == [
        ["mode", "integer"],
        ["on", "boolean"],
        ["v", "float"],
    ]
    _, answer = ask(engine, "SELECT mode, v, \"on\" FROM dev WHERE k = '1'")
    assert answer["results"][0]["series"][0]["values"] == [
        [5, 4, 2.5, True],
        [6, None, None, False],
    ]
    engine.update_tag("dev,k=2.v", value_type="int64")  # now both int64: 2.5 stays 2.5
    _, answer = ask(engine, 'SELECT v FROM dev; SELECT max(v), count("on") FROM dev')
    one, two = answer["results"]
    assert one["series"][0]["values"] == [[5, 2.5], [5, 3]]
    assert two["series"][0]["values"] == [[0, 3, 2]]  # two calls: at the range start
    _, answer = ask(engine, 'SELECT sum("on") FROM dev')
    assert "unsupported sum iterator type" in answer["results"][0]["error"]


def test_a_tag_compared_with_a_boolean(engine: Engine) -> None:
    """No row of a SELECT (as influxd); refused in a SHOW, whose influxd ignores it."""
    _, answer = ask(engine, "SELECT usage FROM cpu WHERE host = true OR usage > 15")
    assert answer["results"][0]["series"][0]["values"] == [[2, 20], [61, 30]]
    _, answer = ask(engine, "SHOW SERIES WHERE host = true")
    assert "boolean in SHOW is not supported" in answer["results"][0]["error"]
