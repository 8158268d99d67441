"""InfluxQL parsing (protocol/influxql): what Grafana and the 1.x clients send, and refusals.

No I/O. Refusals must name what is not supported, and a parse error must say
where it is, as InfluxDB's do.
"""

from __future__ import annotations

import numpy as np
import pytest

from xtsdb.protocol.errors import InvalidInput
from xtsdb.protocol.influxql import ast, parse
from xtsdb.protocol.influxql.answer import parse_time, times
from xtsdb.protocol.influxql.lexer import MAX_QUERY, MAX_REGEX, duration_text

GRAFANA = (
    'SELECT mean("usage_idle") FROM "autogen"."cpu" WHERE ("host" =~ /^(a|b)$/) AND '
    'time >= 1700000000000ms and time <= 1700003600000ms GROUP BY time(10s), "host" fill(null)'
)


def one(q: str) -> ast.Statement:
    statements = parse(q)
    assert len(statements) == 1
    return statements[0]


def test_grafana_dashboard_query() -> None:
    s = one(GRAFANA)
    assert isinstance(s, ast.Select)
    assert s.fields == [ast.Field(ast.Call("mean", (ast.VarRef("usage_idle"),)))]
    assert s.sources == [ast.Source(name="cpu")]  # the retention policy prefix is dropped
    assert s.interval_ns == 10_000_000_000 and s.group_tags == ["host"] and s.fill == "null"
    cond = s.condition
    assert isinstance(cond, ast.Binary) and cond.op == "and"  # (regex AND time) AND time
    assert isinstance(cond.lhs, ast.Binary) and cond.lhs.op == "and"
    assert cond.lhs.lhs == ast.Binary("=~", ast.VarRef("host"), ast.Regex("^(a|b)$"))


def test_schema_explorer_queries() -> None:
    s = one('SHOW TAG VALUES ON "telegraf" FROM "cpu" WITH KEY = "host" WHERE "region" = \'eu\'')
    assert isinstance(s, ast.Show) and s.what == "tag_values"
    assert s.keys == ["host"] and s.key_op == "=" and s.sources == [ast.Source(name="cpu")]
    assert s.condition == ast.Binary("=", ast.VarRef("region"), ast.String("eu"))
    s = one("SHOW MEASUREMENTS WITH MEASUREMENT =~ /cp\\/u/ LIMIT 100")
    assert isinstance(s, ast.Show) and s.regex == "cp/u" and s.limit == 100
    s = one('SHOW TAG VALUES WITH KEY IN ("a", b)')
    assert isinstance(s, ast.Show) and s.key_op == "in" and s.keys == ["a", "b"]
    s, f = parse('SELECT * FROM "db".."m"; SHOW FIELD KEYS FROM "m"')
    assert isinstance(s, ast.Select) and s.sources == [ast.Source(name="m")]
    assert isinstance(f, ast.Show) and f.what == "field_keys" and f.sources == s.sources
    kinds = [type(x) for x in parse("SHOW DATABASES; SHOW RETENTION POLICIES ON x;")]
    assert kinds == [ast.Show, ast.Show]


def test_type_hints_are_accepted_and_casts_kept() -> None:
    s = one('SELECT "v"::field, w::float, x::integer FROM m WHERE "t"::tag = \'x\'')
    assert isinstance(s, ast.Select)
    want = [ast.VarRef("v"), ast.VarRef("w", "float"), ast.VarRef("x", "integer")]
    assert [f.expr for f in s.fields] == want
    assert s.condition == ast.Binary("=", ast.VarRef("t"), ast.String("x"))


def test_boolean_literals_unquoted_only() -> None:
    s = one('SELECT v FROM m WHERE b = true OR FALSE != "true"')
    assert isinstance(s, ast.Select)
    want = ast.Binary(
        "or",
        ast.Binary("=", ast.VarRef("b"), ast.Boolean(True)),
        ast.Binary("!=", ast.Boolean(False), ast.VarRef("true")),
    )
    assert s.condition == want


def test_precedence_and_literals() -> None:
    s = one("SELECT a + b * 2 - -1.5 AS x FROM m WHERE t = 'x' OR u = 'y' AND v != 'z'")
    assert isinstance(s, ast.Select)
    mul = ast.Binary("*", ast.VarRef("b"), ast.Number(2.0, True))
    assert s.fields[0] == ast.Field(
        ast.Binary("-", ast.Binary("+", ast.VarRef("a"), mul), ast.Number(-1.5)), "x"
    )
    assert isinstance(s.condition, ast.Binary) and s.condition.op == "or"  # AND binds tighter
    assert isinstance(s.condition.rhs, ast.Binary) and s.condition.rhs.op == "and"


S = 10**9
DURATIONS = [("1ns", 1), ("3u", 3_000), ("3µ", 3_000), ("2ms", 2_000_000), ("5s", 5 * S)]
DURATIONS += [("1m", 60 * S), ("1h30m", 5400 * S), ("1d", 86_400 * S), ("2w", 14 * 86_400 * S)]


@pytest.mark.parametrize(("text", "ns"), DURATIONS)
def test_durations(text: str, ns: int) -> None:
    s = one(f"SELECT mean(v) FROM m WHERE time > now() - {text} GROUP BY time({text})")
    assert isinstance(s, ast.Select) and s.interval_ns == ns


def test_fill_and_paging() -> None:
    q = "SELECT max(v) FROM m GROUP BY time(1m, -15s), * fill(-2.5) ORDER BY time DESC"
    s = one(q + " LIMIT 10 OFFSET 2 SLIMIT 3 SOFFSET 1")
    assert isinstance(s, ast.Select)
    assert (s.offset_ns, s.group_all, s.fill, s.fill_value) == (-15 * 10**9, True, "value", -2.5)
    assert (s.descending, s.limit, s.offset, s.slimit, s.soffset) == (True, 10, 2, 3, 1)
    for mode in ("null", "none", "previous", "linear"):
        s = one(f"SELECT max(v) FROM m GROUP BY time(1m) fill({mode})")
        assert isinstance(s, ast.Select) and s.fill == mode


@pytest.mark.parametrize(
    ("q", "named"),
    [
        ("SELECT v INTO other FROM m", "SELECT ... INTO"),
        ("DROP MEASUREMENT m", "DROP"),
        ("DELETE FROM m", "DELETE"),
        ("SHOW USERS", "SHOW USERS"),
        ("SELECT v FROM m ORDER BY v", "ORDER BY a column other than time"),
        ("SELECT v FROM m GROUP BY /h/", "GROUP BY /regex/"),
        ("SELECT v FROM m tz('Europe/Paris')", "tz()"),
        ("CREATE DATABASE x WITH DURATION 1d", "CREATE DATABASE with options"),
        ("SELECT v::string FROM m", "the cast ::string"),
        ("SELECT mean(v) FROM (SELECT v FROM m)", "subqueries"),
        ("SHOW SERIES CARDINALITY", "SHOW SERIES CARDINALITY"),
        ("SHOW TAG VALUES EXACT CARDINALITY WITH KEY = k", "SHOW TAG VALUES CARDINALITY"),
    ],
)
def test_unsupported_is_refused_by_name(q: str, named: str) -> None:
    with pytest.raises(InvalidInput, match="not supported") as info:
        parse(q)
    assert named in str(info.value)


@pytest.mark.parametrize(
    ("q", "where"),
    [
        ("SELEC v FROM m", "found SELEC, expected SELECT, SHOW, CREATE at line 1, char 1"),
        ("SELECT v FROM", "found EOF, expected identifier at line 1, char 14"),
        ("SELECT v FROM m WHERE time > now() -", "expected identifier, string, number"),
        ("SELECT v FROM m\nWHERE x = 'open", "unterminated quote, expected ' at line 2, char 11"),
        ("SELECT v FROM m WHERE x =~ /open", "unterminated regex"),
        ("SELECT v FROM m GROUP BY time(0s)", "expected duration"),
        ("SELECT v FROM m LIMIT 99999999999999999999", "expected integer"),
        ("SELECT v FROM m fill(sideways)", "expected null, none, previous, linear or a number"),
        ("SELECT v FROM m; ;", ""),
        ("", "empty query"),
    ],
)
def test_parse_errors_say_where(q: str, where: str) -> None:
    if not where:  # empty statements between separators are skipped
        assert len(parse(q)) == 1
        return
    with pytest.raises(InvalidInput, match="error parsing query") as info:
        parse(q)
    assert where in str(info.value)


def test_size_bounds() -> None:
    with pytest.raises(InvalidInput, match="at most"):
        parse("SELECT v FROM m WHERE t = '" + "x" * MAX_QUERY + "'")
    with pytest.raises(InvalidInput, match="a regex is at most"):
        parse("SELECT v FROM m WHERE t =~ /" + "a" * (MAX_REGEX + 1) + "/")
    assert parse("SELECT v FROM m WHERE t =~ /" + "a" * MAX_REGEX + "/")


def test_times() -> None:
    assert parse_time("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_time("2024-05-01T02:00:00+02:00") == parse_time("2024-05-01T00:00:00Z")
    assert parse_time("2024-05-01") == parse_time("2024-05-01 00:00:00")
    for bad in ("yesterday", "2024-13-01T00:00:00Z", "2300-01-01T00:00:00Z"):
        with pytest.raises(InvalidInput):
            parse_time(bad)
    ns = np.array([0, 1, 1_500_000_000, -1_500], np.int64)
    assert times(ns, 0) == [
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:00:00.000000001Z",
        "1970-01-01T00:00:01.5Z",
        "1969-12-31T23:59:59.9999985Z",
    ]
    assert times(ns, 1_000) == [0, 0, 1_500_000, -1]  # truncated toward zero, as Go divides
    assert duration_text(168 * 3600 * 10**9) == "168h0m0s" and duration_text(0) == "0s"
