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
Cases: an adversarial corpus plus seeded random lines. One ``influxd`` serves
the whole module.
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

from xtsdb.client import connect
from xtsdb.protocol.line_protocol import parse, series_name
from xtsdb.server.app import ServerThread

NOW_US = 123_456_789  # xtsdb's receive time for lines without a timestamp
T = 1_700_000_000_000_000_000


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


ADVERSARIAL: list[bytes] = [
    # blanks
    b"ws1  v=1 1",
    b"ws2 v=2  2",
    b"\t ws3 \t v=3 \t 3  ",
    b"m v=1 ",
    b"m v=1 1\t",
    b"m v=1\t1",
    b"m v=1\t 1",
    b"m\tv=1 1",
    b"m v=1 \t1",
    b"\x00m v=1 1",
    b"m v=1 1\x00",
    b"m v=1 1 2",
    b"   ",
    b"# a comment v=1 1",
    b"  # indented comment",
    # escapes in the series key
    rb"my\=meas v=1 1",
    rb"m\"x v=1 1",
    rb"m\ x v=1 1",
    rb"m\,x,t=1 v=1 1",
    rb"m\x v=1 1",
    rb"m\ v=1 1",
    rb"m.b\\ c=1 1",
    rb"m b\.c=2 1",
    rb"m,t=a\ v=1 1",
    rb"m,t=a\\ v=1 1",
    rb"m,t=a\ b v=1 1",
    rb"m,t\ k=v v=1 1",
    rb"m,t\=k=v\=w v=1 1",
    rb"m,t\,k=v\,w v=1 1",
    rb"m,t\"k=v\"x v=1 1",
    rb"m,t==x v=1 1",
    rb"m,t=a=b v=1 1",
    rb"m,t=== v=1 1",
    b"m,=a v=1 1",
    b"m,a v=1 1",
    b"m, v=1 1",
    b"m,a= v=1 1",
    b",t=1 v=1 1",
    b"m",
    b"m ",
    b"m,t=1",
    # escapes in the field set
    rb"m f\"k=1 1",
    rb"m f\ k=1 1",
    rb"m f\,k=1 1",
    rb"m f\=k=1 1",
    rb"m f\.k=1 1",
    rb"m a\\=1 1",
    rb"m \=1 1",
    rb"m v=1\ 1",
    rb"m v=1 \1",
    b"m v=1,=2 1",
    b"m =1 1",
    b"m v 1",
    b"m v= 1",
    b"m v=1, 1",
    b"m v=1,,w=2 1",
    b"m v=1,w 1",
    # strings
    b'm s="a b",v=1 1',
    b'm s="a,b=c",v=1 1',
    rb'm s="x\"y",v=1 1',
    b'm s="unterminated,v=1 1',
    b'm v=1,s="a"x 1',
    b'm s="only" 1',
    # numbers and booleans
    b"m v=+1.5 1",
    b"m v=-1.5 1",
    b"m v=.5 1",
    b"m v=-.5e-3 1",
    b"m v=1. 1",
    b"m v=1.e5 1",
    b"m v=1E+5 1",
    b"m v=1e 1",
    b"m v=1e5e5 1",
    b"m v=1.1.1 1",
    b"m v=. 1",
    b"m v=- 1",
    b"m v=-0 1",
    b"m v=01 1",
    b"m v=1_000 1",
    b"m v=0x10 1",
    b"m v=1e400 1",
    b"m v=1e-400 1",
    b"m v=" + b"9" * 400 + b" 1",
    b"m v=nan 1",
    b"m v=NaN 1",
    b"m v=-nan 1",
    b"m v=inf 1",
    b"m v=-inf 1",
    b"m v=12i 1",
    b"m v=-12i 1",
    b"m v=01i 1",
    b"m v=+1i 1",
    b"m v=-i 1",
    b"m v=1.5i 1",
    b"m v=1e5i 1",
    b"m v=1i5 1",
    b"m v=9223372036854775807i 1",
    b"m v=9223372036854775808i 1",
    b"m v=-9223372036854775808i 1",
    b"m v=9007199254740993i 1",
    b"m a=t,b=T,c=true,d=True,e=TRUE 1",
    b"m a=f,b=F,c=false,d=False,e=FALSE 1",
    b"m v=tRUE 1",
    b"m v=yes 1",
    b"m v=1,v2=nan 1",
    # duplicates and 'time'
    b"m,a=1,a=2 v=1 1",
    b"m,b=1,a=2,b=3 v=1 1",
    b"m v=1,v=2 1",
    b"m,t=v f=1,t=2 1",
    b"m,time=1 v=1 1",
    b"m time=1 1",
    b"m time=1,v=2 1",
    b"m time=nan,v=2 1",
    b"m v=2,time=+1 1",
    b'm time="x",v=2 1',
    rb"m tim\e=1 1",
    # timestamps
    b"m v=1 -5",
    b"m v=1 -1500",
    b"m v=1 +5",
    b"m v=1 -",
    b"m v=1 1_0",
    b"m v=1 12ab",
    b"m v=1 0",
    b"m v=1 9223372036854775806",
    b"m v=1 9223372036854775807",
    b"m v=1 -9223372036854775806",
    b"m v=1 -9223372036854775807",
    b"m v=1 99999999999999999999",
    b"m v=1",
    # newlines inside a string, or escaped by a backslash, do not end a line
    b's s="a\nb",v=1 1',
    b'm s="a\n\nb",v=1 1\nm v=2 2',
    rb'm s="a\"' + b'\nb",v=1 1',
    b'm v=1 "x\nm v=2 2"',
    b'm,t="x v=1 1\nm v=2 2',
    b"m v=1 1\\\nm v=2 2",
    b"m v=1 1\\\\\nm v=2 2",
    b"m v=1 1\\\n",
    b"m v=1 1\\\nx",
    b"m v=1\n\n\nm v=2 2\n",
    # unicode
    "mé,tâg=vàl fïeld=1 1".encode(),
    "m v=1,ü=2 1".encode(),
]

PRECISION_CASES: list[tuple[str, bytes]] = [
    (p, b"m v=1 " + stamp)
    for p in ("n", "u", "ms", "s", "m", "h")
    for stamp in (
        b"1",
        b"-1",
        b"1700000000",
        b"9223372036",
        b"9223372037",
        b"2562047",
        b"153722868",
    )
]


def test_adversarial_corpus_agrees(influx: Influxd) -> None:
    diffs = [(line, d) for line in ADVERSARIAL if (d := compare(influx, line)) is not None]
    assert diffs == []
    # the corpus covers both outcomes
    outcomes = [xtsdb_outcome(line, None) for line in ADVERSARIAL]
    assert 40 < sum(o.refused for o in outcomes) < len(outcomes) - 40


def test_precisions_agree(influx: Influxd) -> None:
    diffs = [(p, line, d) for p, line in PRECISION_CASES if (d := compare(influx, line, p))]
    assert diffs == []


# -- random lines -----------------------------------------------------------------

_ATOMS = [
    "a",
    "b",
    "cpu",
    "é",
    ".",
    "-",
    "_",
    "#",
    "0",
    "time",
    r"\,",
    r"\ ",
    r"\=",
    r"\"",
    "\\",
    ",",
    "=",
    " ",
    '"',
    "\t",
]
_VALUES = [
    "1",
    "-1.5",
    ".5",
    "1.",
    "1e3",
    "1E-3",
    "-0",
    "+1",
    "1_0",
    "nan",
    "inf",
    "12i",
    "-7i",
    "1.5i",
    "9223372036854775808i",
    "3u",
    "t",
    "True",
    "FALSE",
    "tRUE",
    '"s"',
    '"a,b c"',
    r'"x\"y"',
    "",
    "1e400",
    "0x10",
    "1\t",
    "01",
    "--1",
    "2.5e+3",
]
_STAMPS = [
    "",
    " 1700000000000000000",
    " -5000",
    " +5",
    " 1_0",
    " 12ab",
    "  17000000000001",
    " \t1000",
    " 2000 ",
    " 1 2",
    " 1\t",
    " 9223372036854775807",
]


def _name(rng: random.Random, plain: float) -> str:
    if rng.random() < plain:
        return rng.choice(["a", "b", "host", "cpu", "x.y", "é"])
    return "".join(rng.choice(_ATOMS) for _ in range(rng.randint(1, 3)))


def random_line(rng: random.Random, values: list[str] = _VALUES) -> bytes:
    """A line of line protocol, valid or nearly so: each piece sometimes wrong."""
    key = _name(rng, 0.5)
    for _ in range(rng.choice([0, 0, 1, 2, 3])):
        key += f",{_name(rng, 0.6)}={_name(rng, 0.6)}"
    fields = ",".join(
        f"{_name(rng, 0.7)}={rng.choice(values) if rng.random() < 0.5 else '2.25'}"
        for _ in range(rng.randint(1, 3))
    )
    lead = rng.choice(["", "", "", " ", "\t"])
    sep = rng.choice([" ", " ", " ", "  ", " \t"])
    return f"{lead}{key}{sep}{fields}{rng.choice(_STAMPS)}".encode()


def documented(line: bytes, i: Outcome, x: Outcome) -> bool:
    """A disagreement docs/ingest.md states, as random lines can form them."""
    if "field type conflict" in i.error:  # one field, two types: xtsdb keeps floats
        return not x.refused
    if b"3u" in line and i.refused and "invalid number" in i.error:  # 1.6 refuses unsigned
        return True
    if x.refused and "control characters" in x.error:  # the catalog refuses such names
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
    signed = [v for v in _VALUES if not v.endswith("u")]  # influxd 1.6 refuses 3u
    diffs, checked, conflicts = [], 0, 0
    deadline = time.monotonic() + 10
    while checked < 60 and time.monotonic() < deadline:
        body = b"\n".join(random_line(rng, signed) for _ in range(rng.randint(2, 6)))
        i, x = influx_outcome(influx, body, None), xtsdb_outcome(body, None)
        checked += 1
        if "field type conflict" in i.error or "control characters" in x.error:
            conflicts += 1  # documented: types, and names the catalog refuses
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
    their points are the parser's, and its error lines are the parser's."""
    rng = random.Random(7)
    body = b"\n".join([*ADVERSARIAL, *(random_line(rng) for _ in range(300))])
    want = xtsdb_outcome(body, None).points
    b = parse(body, now_us=NOW_US)
    srv = server_factory(influx_port=0)
    conn = http.client.HTTPConnection("127.0.0.1", srv.influx_port, timeout=30)
    t0 = time.time_ns() // 1000
    conn.request("POST", "/write?db=x", body)
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    t1 = time.time_ns() // 1000
    conn.close()
    assert resp.status == 400 and "partial write" in answer["error"]
    assert {e["line"] for e in answer["lines"]} == {no for no, _ in b.errors[:100]}
    got = set()
    with connect(srv.url) as db:
        for name in b.names:
            r = db.query(name, -(1 << 60), 1 << 60)
            for t, v in zip(r.timestamps.tolist(), r.values.tolist(), strict=True):
                got.add((name, NOW_US if t0 <= t <= t1 else t, v))
        assert len(db.tags(limit=10_000)) == len(b.names)  # no other tag was made
    assert got == want
