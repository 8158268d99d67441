"""Line protocol against a real InfluxDB 1.x: the same bytes to ``influxd`` and to xtsdb.

Each case is written to a fresh ``influxd`` database through ``/write`` and
parsed by xtsdb's parser (the code behind xtsdb's ``/write``). Then:

- a line InfluxDB refuses, xtsdb refuses (a line error, no point); a line
  InfluxDB stores, xtsdb does not refuse;
- what InfluxDB stores, read back with ``SELECT * ... GROUP BY *`` and named
  with :func:`series_name`, is what xtsdb stores: names, float values
  (integers and booleans as floats), timestamps (floored to microseconds),
  the last of two writes to one timestamp winning;

except for what ``docs/ingest.md`` lists as differences, each of which has a
case in :data:`DIFFERENCES` that checks both sides behave as documented.
Cases (``tests/lp_corpus.py``): an adversarial corpus plus seeded random lines
and bodies. One ``influxd`` serves the whole module; the end-to-end test also
sends them through a real xtsdb ``/write``. Field types go through both
``/write`` endpoints: the types recorded, the lines of a field type conflict
refused as influxd refuses them, and the two documented differences.
"""

from __future__ import annotations

import http.client
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from conftest import require_program
from influxd import Influxd, start
from lp_corpus import ADVERSARIAL, PRECISION_CASES, VALUES, random_line

from xtsdb.client import connect
from xtsdb.protocol.line_protocol import parse, series_name
from xtsdb.server.app import ServerThread

NOW_US = 123_456_789  # xtsdb's receive time for lines without a timestamp


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    program = require_program("influxd", "influxdb")
    server = start(program, tmp_path_factory.mktemp("influxd"))
    try:
        yield server
    finally:
        server.stop()


Point = tuple[str, int, float]


@dataclass
class Outcome:
    refused: bool  # nothing stored (xtsdb: and an error)
    points: set[Point]  # numbers only (xtsdb keeps no strings)
    strings: int  # string values InfluxDB stored
    error: str


_db_seq = iter(range(1 << 30))


def influx_outcome(influx: Influxd, body: bytes, precision: str | None) -> Outcome:
    db = f"d{next(_db_seq)}"
    influx.query(f'CREATE DATABASE "{db}"')
    t0 = time.time_ns()
    status, error = influx.write(db, body, precision)
    t1 = time.time_ns()
    stored = influx.stored(db)
    influx.query(f'DROP DATABASE "{db}"')
    last: dict[tuple[str, int], float] = {}
    strings = 0
    for measurement, tags, fld, t_ns, v in stored:
        if isinstance(v, str):
            strings += 1
            continue
        t_us = NOW_US if t0 <= t_ns <= t1 else t_ns // 1000  # receive time: no stamp given
        last[(series_name(measurement, tags, fld), t_us)] = float(v)
    points = {(name, t, v) for (name, t), v in last.items()}
    refused = status != 204 and not stored
    assert status in (204, 400), (status, error)
    return Outcome(refused, points, strings, error)


def xtsdb_outcome(body: bytes, precision: str | None) -> Outcome:
    b = parse(body, precision or "ns", now_us=NOW_US)
    last: dict[tuple[str, int], float] = {}
    for s, t, v in zip(b.series.tolist(), b.ts.tolist(), b.values.tolist(), strict=True):
        last[(b.names[s], t)] = v  # the engine's default: the last write of a timestamp wins
    refused = not last and bool(b.errors)
    error = "; ".join(e for _, e in b.errors)
    return Outcome(refused, {(n, t, v) for (n, t), v in last.items()}, 0, error)


def differs(i: Outcome, x: Outcome) -> str | None:
    """None if the two outcomes of one line agree, else what differs."""
    # xtsdb stores no strings: a line of only string fields is an error there
    if (i.refused or (i.strings > 0 and not i.points)) != x.refused:
        return f"refused: influxd {i.refused} ({i.error}), xtsdb {x.refused} ({x.error})"
    if i.points != x.points:
        return f"stored: influxd {sorted(i.points)}, xtsdb {sorted(x.points)}"
    return None


def compare(influx: Influxd, body: bytes, precision: str | None = None) -> str | None:
    return differs(influx_outcome(influx, body, precision), xtsdb_outcome(body, precision))


def test_adversarial_corpus_agrees(influx: Influxd) -> None:
    diffs = [(line, d) for line in ADVERSARIAL if (d := compare(influx, line)) is not None]
    assert diffs == []
    # the corpus covers both outcomes
    outcomes = [xtsdb_outcome(line, None) for line in ADVERSARIAL]
    assert 40 < sum(o.refused for o in outcomes) < len(outcomes) - 40


def test_precisions_agree(influx: Influxd) -> None:
    diffs = [(p, line, d) for p, line in PRECISION_CASES if (d := compare(influx, line, p))]
    assert diffs == []


def documented(line: bytes, i: Outcome, x: Outcome) -> bool:
    """A disagreement docs/ingest.md states, as random lines can form them."""
    if "field type conflict" in i.error:  # two types: the parser keeps both (see /write below)
        return not x.refused
    if b"3u" in line and i.refused and "invalid number" in i.error:  # 1.6 refuses unsigned
        return True
    if x.refused and "control characters" in x.error:  # the catalog refuses such names
        return True
    if x.refused and "missing field key" in x.error and b"\t=" in line:  # influxd: 'val0'
        return True
    # a backslash pair in the series key: influxd acknowledges the point, then
    # cannot read it back (SHOW SERIES lists it, SELECT returns nothing)
    return b"\\\\" in line and not i.refused and not i.points and not i.strings


def test_random_lines_agree(influx: Influxd) -> None:
    rng = random.Random(20261205)
    diffs, checked, refused, explained = [], 0, 0, 0
    deadline = time.monotonic() + 20  # bounded on a slow machine; the seed fixes the lines
    while checked < 400 and time.monotonic() < deadline:
        line = random_line(rng)
        i, x = influx_outcome(influx, line, None), xtsdb_outcome(line, None)
        checked += 1
        refused += x.refused
        d = differs(i, x)
        if d is not None:
            if documented(line, i, x):
                explained += 1
            else:
                diffs.append((line, d))
    assert diffs == []
    # the generator makes both kinds, and few lines need an excuse
    assert checked >= 100 and 0.1 < refused / checked < 0.9, (checked, refused)
    assert explained < checked // 10, explained


def test_random_bodies_agree(influx: Influxd) -> None:
    """Several random lines per body: where lines end (a quote left open, a backslash
    before the newline) and what is stored must agree too."""
    rng = random.Random(5)
    signed = [v for v in VALUES if not v.endswith("u")]  # influxd 1.6 refuses 3u
    diffs, checked, conflicts = [], 0, 0
    deadline = time.monotonic() + 10
    while checked < 60 and time.monotonic() < deadline:
        body = b"\n".join(random_line(rng, signed) for _ in range(rng.randint(2, 6)))
        i, x = influx_outcome(influx, body, None), xtsdb_outcome(body, None)
        checked += 1
        if (
            "field type conflict" in i.error
            or "control characters" in x.error
            or ("missing field key" in x.error and b"\t=" in body)
        ):
            conflicts += 1  # documented: types, names the catalog refuses, empty keys
        elif i.points != x.points:
            diffs.append((body, sorted(i.points), sorted(x.points)))
    assert diffs == []
    assert checked >= 20 and conflicts < checked // 2, (checked, conflicts)


@dataclass
class Difference:
    body: bytes
    precision: str | None
    influx: Outcome
    xtsdb: Outcome


def _out(refused: bool, *points: Point, strings: int = 0) -> Outcome:
    return Outcome(refused, set(points), strings, "")


DIFFERENCES: list[Difference] = [
    # unsigned integers: influxd 1.x refuses them (without its uint build flag)
    Difference(b"m v=3u 1", None, _out(True), _out(False, ("m.v", 0, 3.0))),
    # CRLF line ends
    Difference(b"m v=1 1\r\nm v=2 2\r\n", None, _out(True), _out(False, ("m.v", 0, 2.0))),
    # precision=us is microseconds in xtsdb (as InfluxDB 2), nanoseconds in influxd 1.6
    Difference(b"m v=1 1500", "us", _out(False, ("m.v", 1, 1.0)), _out(False, ("m.v", 1500, 1.0))),
    # names must be UTF-8
    Difference(b"m,t=\xff v=1 1", None, _out(False, ("m,t=\ufffd.v", 0, 1.0)), _out(True)),
    # a control character in a name: the catalog refuses it
    Difference(b"m,t=a\tb v=1 1", None, _out(False, ("m,t=a\tb.v", 0, 1.0)), _out(True)),
    # an empty field key after a tab: influxd stores it (read back as 'val0')
    Difference(b"m \t=1 1", None, _out(False, ("m.val0", 0, 1.0)), _out(True)),
    # a backslash pair before a comma in the measurement: influxd cannot read it back
    Difference(rb"m\\,t=1 v=1 1", None, _out(False), _out(False, (r"m\\,t=1.v", 0, 1.0))),
    # one field, two types: influxd refuses the point, xtsdb keeps floats (last wins)
    Difference(b"m v=1,v=2i 1", None, _out(True), _out(False, ("m.v", 0, 2.0))),
    # strings: stored by influxd, an error for that field in xtsdb
    Difference(
        b'm s="x",v=2 1',
        None,
        _out(False, ("m.v", 0, 2.0), strings=1),
        _out(False, ("m.v", 0, 2.0)),
    ),
]


@pytest.mark.parametrize("case", DIFFERENCES, ids=lambda c: repr(c.body)[:40])
def test_documented_differences_are_as_documented(influx: Influxd, case: Difference) -> None:
    i = influx_outcome(influx, case.body, case.precision)
    x = xtsdb_outcome(case.body, case.precision)
    assert (i.refused, i.points, i.strings) == (
        case.influx.refused,
        case.influx.points,
        case.influx.strings,
    )
    assert (x.refused, x.points) == (case.xtsdb.refused, case.xtsdb.points)


def test_unknown_precision_is_nanoseconds_in_influxd_refused_by_xtsdb(influx: Influxd) -> None:
    i = influx_outcome(influx, b"m v=1 1500", "fortnights")
    assert i.points == {("m.v", 1, 1.0)}
    with pytest.raises(ValueError, match="precision"):  # the server answers 400
        parse(b"m v=1 1500", "fortnights")


def test_xtsdb_write_endpoint_stores_what_the_parser_says(
    server_factory: Callable[..., ServerThread],
) -> None:
    """The corpus and random lines in one body to xtsdb's /write: the tags it creates and
    their points are the parser's but for the lines of a field type conflict (a series'
    first point sets its type: a float series takes all, an integer one integers, a
    boolean one booleans), and its error lines are the parser's and those."""
    rng = random.Random(7)
    body = b"\n".join([*ADVERSARIAL, *(random_line(rng) for _ in range(300))])
    b = parse(body, now_us=NOW_US)
    takes = {0: {0, 1, 2, 3}, 1: {1, 2}, 2: {1, 2}, 3: {3}}  # by the first point's type
    first = b.series_kinds().tolist()
    conflicts = {
        no
        for s, k, no in zip(
            b.series.tolist(), b.kinds.tolist(), b.point_lines.tolist(), strict=True
        )
        if k not in takes[first[s]]
    }
    assert 0 < len(conflicts) < 60, conflicts  # the random lines make some
    kept = b"\n".join(
        line if no not in conflicts else b"" for no, line in enumerate(body.split(b"\n"), 1)
    )
    want = xtsdb_outcome(kept, None).points  # (no quoted newline in these bodies)
    errors = sorted(b.errors + [(no, "") for no in conflicts])
    srv = server_factory(http_port=0)
    conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=30)
    t0 = time.time_ns() // 1000
    conn.request("POST", "/write?db=x", body)
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    t1 = time.time_ns() // 1000
    conn.close()
    assert resp.status == 400 and "partial write" in answer["error"]
    assert {e["line"] for e in answer["lines"]} == {no for no, _ in errors[:100]}
    got = set()
    with connect(srv.url) as db:
        for name in b.names:
            r = db.query(name, -(1 << 60), 1 << 60)
            for t, v in zip(r.timestamps.tolist(), r.values.tolist(), strict=True):
                got.add((name, NOW_US if t0 <= t <= t1 else t, v))
        assert len(db.tags(limit=10_000)) == len(b.names)  # no other tag was made
        types = {t.name: t.value_type for t in db.tags(limit=10_000)}
        assert types == {
            n: ("float64", "int64", "int64", "bool")[k] for n, k in zip(b.names, first, strict=True)
        }
    assert got == want


def _post(port: int, body: bytes) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/write?db=x&precision=s", body)
        resp = conn.getresponse()
        answer = resp.read()
    finally:
        conn.close()
    return resp.status, json.loads(answer)["error"] if answer else ""


# (body, lines xtsdb refuses): every body goes to both servers in turn
TYPED_WRITES = [
    (b"m,h=a n=5i,up=t,x=1.5 1\nm,h=a n=7i,up=f,x=2 2", 0),
    # a float to an integer, an integer to a boolean: those lines, whole (x=9 too), refused
    (b"m,h=a n=4.5,x=9 3\nm,h=a x=3 4\nm,h=a up=1i 5\nm,h=b n=3i 5", 2),
    (b"m,h=a up=true 6\nm,h=a n=-8i 6", 0),
]


def test_field_types_and_conflicts_as_influxd(
    influx: Influxd, server_factory: Callable[..., ServerThread]
) -> None:
    """/write gives a new tag its field type, and refuses a later line of another type as
    influxd does: the line whole, the rest stored, 400 'partial write: field type conflict'."""
    influx.query('CREATE DATABASE "typed"')
    srv = server_factory(http_port=0)
    assert _post(srv.http_port, b"m,h=b n=1u 2\n") == (204, "")  # influxd 1.6 refuses 'u'
    for body, bad in TYPED_WRITES:
        status, error = influx.write("typed", body + b"\n", "s")
        mine, my_error = _post(srv.http_port, body + b"\n")
        assert mine == status == (400 if bad else 204), (body, error, my_error)
        if bad:
            assert error.startswith("partial write: field type conflict: input field")
            assert my_error.startswith("partial write:") and my_error.endswith(f"dropped={bad}")
            assert error.endswith(f"dropped={bad}")
            want = error.removeprefix("partial write: ").removesuffix(f" dropped={bad}")
            assert want in my_error  # the first conflict, in influxd's words
    theirs = {
        (series_name(m, tags, f), t // 1000, v) for m, tags, f, t, v in influx.stored("typed")
    }
    with connect(srv.url) as db:
        types = {t.name: t.value_type for t in db.tags(limit=100)}
        ours = set()
        for name in types:
            r = db.query(name, -(1 << 60), 1 << 60)
            kind = {"int64": int, "bool": bool}.get(types[name], float)
            ours |= {
                (name, t, kind(v))
                for t, v in zip(r.timestamps.tolist(), r.values.tolist(), strict=True)
            }
    assert types == {
        "m,h=a.n": "int64",
        "m,h=a.up": "bool",
        "m,h=a.x": "float64",
        "m,h=b.n": "int64",
    }
    assert ours == theirs | {("m,h=b.n", 2_000_000, 1)}


def test_float64_tags_take_every_type_unlike_influxd(
    influx: Influxd, server_factory: Callable[..., ServerThread]
) -> None:
    """Documented: a float64 tag (all tags made before types were kept) takes integers and
    booleans too, so an upgrade drops no write; influxd refuses them into a float field."""
    influx.query('CREATE DATABASE "floaty"')
    srv = server_factory(http_port=0)
    for body in (b"m x=1.5 1\n", b"m x=2i 2\nm x=t 3\n"):
        status, error = influx.write("floaty", body, "s")
        mine, _ = _post(srv.http_port, body)
        assert mine == 204
    assert status == 400 and "field type conflict" in error
    with connect(srv.url) as db:
        assert db.query("m.x", 0, 1 << 60).values.tolist() == [1.5, 2.0, 1.0]


def test_two_types_of_a_new_field_in_one_body_unlike_influxd(
    influx: Influxd, server_factory: Callable[..., ServerThread]
) -> None:
    """Documented: a new field given two types in one body makes influxd 1.6 refuse the
    whole body (though it records the first type); xtsdb keeps the first type and refuses
    only the lines of the other, as for a field that existed before."""
    influx.query('CREATE DATABASE "mixed"')
    srv = server_factory(http_port=0)
    body = b"m n=1i 1\nm n=2.5 2\nm w=3 3\n"
    status, error = influx.write("mixed", body, "s")
    assert (status, error) == (400, "field type conflict") and influx.stored("mixed") == []
    mine, my_error = _post(srv.http_port, body)
    assert mine == 400 and "line 2: field type conflict" in my_error
    assert my_error.endswith("dropped=1")
    with connect(srv.url) as db:
        assert {t.name: t.value_type for t in db.tags(limit=10)} == {
            "m.n": "int64",
            "m.w": "float64",
        }
        assert db.query("m.n", 0, 1 << 60).values.tolist() == [1.0]
        assert db.query("m.w", 0, 1 << 60).values.tolist() == [3.0]
