"""The line protocol parser, bytes in, columns out (no server)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xtsdb.protocol.line_protocol import KINDS, PRECISIONS, ParsedBatch, parse, series_name

T0 = 1_700_000_000_000_000_000  # ns


def points(b: ParsedBatch) -> list[tuple[str, int, float]]:
    return [
        (b.names[s], t, v)
        for s, t, v in zip(b.series.tolist(), b.ts.tolist(), b.values.tolist(), strict=True)
    ]


def test_fields_tags_and_the_name_mapping() -> None:
    b = parse(f"cpu,region=eu,host=a usage_idle=98.5,usage_user=1.5 {T0}\n".encode())
    assert b.errors == [] and b.lines == 1
    # tags sorted by key, whatever order the line had them in
    assert points(b) == [
        ("cpu,host=a,region=eu.usage_idle", T0 // 1000, 98.5),
        ("cpu,host=a,region=eu.usage_user", T0 // 1000, 1.5),
    ]
    assert b.series.dtype == np.uint32 and b.ts.dtype == np.int64 and b.values.dtype == np.float64
    assert b.point_lines.tolist() == [1, 1]


def test_same_series_in_any_tag_order_is_one_name() -> None:
    b = parse(b"m,b=2,a=1 f=1 1000\nm,a=1,b=2 f=2 2000\nm f=3 3000\n")
    assert b.names == ["m,a=1,b=2.f", "m.f"]
    assert b.series.tolist() == [0, 0, 1]


def test_value_types() -> None:
    line = "m i=-12i,u=12u,t=t,T=TRUE,tr=true,f=F,fa=false,x=1.5e3,y=-.5,z=7,w=1. 1000"
    b = parse(line.encode(), precision="us")
    got = {b.names[s].split(".", 1)[1]: v for s, v in zip(b.series, b.values.tolist(), strict=True)}
    ints = {"i": -12.0, "u": 12.0}
    bools = {"t": 1.0, "T": 1.0, "tr": 1.0, "f": 0.0, "fa": 0.0}
    assert got == {**ints, **bools, "x": 1500.0, "y": -0.5, "z": 7.0, "w": 1.0}
    kinds = {b.names[s].split(".", 1)[1]: KINDS[k] for s, k in enumerate(b.series_kinds())}
    assert kinds == {"i": "integer", "u": "unsigned", "x": "float", "y": "float", "z": "float"} | {
        k: "boolean" for k in bools
    } | {"w": "float"}


def test_field_types_per_point_and_series() -> None:
    """Each point keeps the type its line gave it (a series' first point names the series'
    type); a refused line's types go with it, even the first line of its series."""
    body = b"m q=1,n=2.5,z=zz 0\nm n=5i,x=1 1\nm n=6,x=2 2\nm n=7i,q=2i bad\nm q=f 3\n"
    b = parse(body, precision="s")
    assert [(b.names[s], KINDS[k]) for s, k in zip(b.series, b.kinds, strict=True)] == [
        ("m.n", "integer"),
        ("m.x", "float"),
        ("m.n", "float"),
        ("m.x", "float"),
        ("m.q", "boolean"),
    ]
    kinds = {b.names[i]: KINDS[k] for i, k in enumerate(b.series_kinds())}
    assert kinds == {"m.n": "integer", "m.x": "float", "m.q": "boolean"}


def test_unsigned_at_or_past_2_63_is_refused() -> None:
    b = parse(b"m u=9223372036854775807u 1\nm u=9223372036854775808u 2\n")
    assert b.values.tolist() == [float(2**63 - 1)] and KINDS[int(b.kinds[0])] == "unsigned"
    assert [no for no, _ in b.errors] == [2] and "int64" in b.errors[0][1]


def test_string_field_is_an_error_for_that_field_only() -> None:
    b = parse(b'm,h=a ok=1,s="a, b=c \\" d",n=2i 5000\n', precision="us")
    assert [(name, v) for name, _, v in points(b)] == [("m,h=a.ok", 1.0), ("m,h=a.n", 2.0)]
    assert len(b.errors) == 1 and b.errors[0][0] == 1 and "string" in b.errors[0][1]


def test_escapes() -> None:
    lines = [
        r"wea\ ther\,x,loc\=ation=us\ mid\,west\=1 temp\ c\=1.=82 1000",
        r'm,k=v f="a\\" 1000',  # only a string field: no point, one error
        r"m\=x,t=1 g=2 1000",  # '=' in a measurement needs no escape, but may have one
        "m=x,t=1 g=3 1000",  # ... and both are the measurement 'm=x', as for InfluxDB
        r"m\"q f\"k\=\ =4 1000",  # measurement and field key unescape '"' too
        r"m,t\"k=v\"x f=5 1000",  # ... tag keys and values do not
    ]
    b = parse("\n".join(lines).encode(), precision="us")
    assert points(b) == [  # the field key's dot is escaped in the name: see series_name
        (r"wea\ ther\,x,loc\=ation=us\ mid\,west\=1.temp\ c\=1\.", 1000, 82.0),
        ("m=x,t=1.g", 1000, 2.0),
        ("m=x,t=1.g", 1000, 3.0),
        (r'm"q.f"k\=\ ', 1000, 4.0),
        (r"m,t\"k=v\"x.f", 1000, 5.0),
    ]
    assert [no for no, _ in b.errors] == [2]
    # What the official influxdb Python client sends for measurement 'my=meas':
    assert parse(rb"my\=meas v=1 1").names == ["my=meas.v"]


def test_runs_of_blanks_between_sections() -> None:
    data = b"ws1  v=1 1000\nws2 v=2  2000\n\t ws3 \t v=3 \t 3000  \nws4 v=4   \nw\\ 5  v=5  5000\n"
    b = parse(data, precision="us", now_us=7)
    want = [("ws1.v", 1000, 1.0), ("ws2.v", 2000, 2.0), ("ws3.v", 3000, 3.0), ("ws4.v", 7, 4.0)]
    want.append((r"w\ 5.v", 5000, 5.0))
    assert points(b) == want
    assert b.errors == []


@pytest.mark.parametrize(
    "line",
    [
        b"m v=+1.5 1",  # no '+' before a number
        b"m v=1\t2 1",  # nor a tab inside one
        b"m v=1\t 1",
        b"m v=1 +1",  # nor before a timestamp
        b"m v=1 1\t",  # only spaces after the timestamp
        b"m,a=1,a=2 v=1 1",  # duplicate tag keys
        b"m,b=1,a=2,b=3 v=1 1",
        b"m,time=1 v=1 1",  # a tag key 'time'
        b"m time=1 1",  # only a field 'time'
        b"m v=2,time=+1 1",  # a field 'time' is not stored, but its value must be valid
        b"m\\ v=1 1",  # a measurement ending in a backslash escapes the space
        b"m.b\\\\ c=1 1",
        b"m,t=a\\ v=1 1",  # a tag value ending in a backslash escapes the space
        b"m v=1,v2=nan 1",  # a bad value refuses the whole line
        b"m v=1,v2=1u5 1",
        b"m v=1,v2=tRUE 1",
        b"m v=1,v2= 1",
        b"m v=1 1 2",
        b"m a\\=1 1",  # a field key ending in a backslash
        b"m,t=a=b v=1 1",
        b"m v=1 9223372036854775807",  # InfluxDB's time range: |t| <= 2**63 - 2 ns
        b"m,t=a\tb v=1 1",  # a control character in a name: the catalog refuses it
    ],
)
def test_refused_as_influxdb_refuses(line: bytes) -> None:
    b = parse(line + b"\nok v=1 5", precision="us")
    assert points(b) == [("ok.v", 5, 1.0)], b.errors
    assert [no for no, _ in b.errors] == [1], b.errors


def test_field_named_time_is_dropped_and_said() -> None:
    b = parse(b"m time=1,v=2 5", precision="us")
    assert points(b) == [("m.v", 5, 2.0)]
    assert len(b.errors) == 1 and "time" in b.errors[0][1]


def test_no_two_series_share_a_name_through_backslashes() -> None:
    # Both became 'm.b\\.c' when a backslash escaped a backslash in the series key.
    b = parse(b"m.b\\\\ c=1 1\nm b\\.c=2 1\n")
    assert b.names == [r"m.b\\.c"] and b.values.tolist() == [2.0]
    assert [no for no, _ in b.errors] == [1]


def test_series_name_is_one_to_one_where_dots_could_collide() -> None:
    assert series_name("a.b", {}, "c") != series_name("a", {}, "b.c")
    assert series_name("a", {}, "b.c") == r"a.b\.c"
    assert series_name("cpu", {"region": "eu", "host": "a"}, "usage_idle") == (
        "cpu,host=a,region=eu.usage_idle"
    )
    b = parse(b"a.b c=1 1\na b.c=2 1\n")
    assert b.names == ["a.b.c", r"a.b\.c"]


@pytest.mark.parametrize(
    ("precision", "stamp", "us"),
    [
        ("ns", "1700000000123456789", 1_700_000_000_123_456),
        ("n", "-1500", -2),  # floor, as for any pre-1970 time
        ("us", "1700000000123456", 1_700_000_000_123_456),
        ("u", "5", 5),
        ("ms", "1700000000123", 1_700_000_000_123_000),
        ("s", "1700000000", 1_700_000_000_000_000),
        ("m", "2", 120_000_000),
        ("h", "1", 3_600_000_000),
    ],
)
def test_precisions(precision: str, stamp: str, us: int) -> None:
    b = parse(f"m f=1 {stamp}".encode(), precision=precision)
    assert b.errors == [] and b.ts.tolist() == [us]


def test_unknown_precision_is_the_callers_bug() -> None:
    with pytest.raises(ValueError, match="precision"):
        parse(b"m f=1 1", precision="fortnights")
    assert set(PRECISIONS) >= {"ns", "us", "ms", "s"}


def test_missing_timestamp_is_receive_time_and_crlf_comments_blank_lines() -> None:
    data = b"# a comment\r\n\r\n   \nm f=1\r\n  # indented comment\nm f=2 7000\r\n"
    b = parse(data, now_us=42)
    assert b.ts.tolist() == [42, 7] and b.values.tolist() == [1.0, 2.0]
    assert b.lines == 2 and b.errors == [] and b.point_lines.tolist() == [4, 6]


def test_errors_carry_line_numbers_and_good_lines_survive() -> None:
    data = b"\n".join(
        [
            b"m f=1 1000",
            b"just-a-word",
            b"m f=1,g 1000",  # a field without '=': the whole line is refused
            b"m,t f=1 1000",  # a tag without '='
            b"m f=nan 1000",
            b"m f=1_000 1000",
            b"m f=1i0 1000",
            b"m f=99999999999999999999i 1000",
            b"m f=-1u 1000",
            b"m f=1e999 1000",
            b"m f=1 -",
            b"m f=1 12ab",
            b"m f=1 99999999999999999999",
            b"m f=1 1 extra",
            b",t=1 f=1 1000",
            b"m f= 1000",
            b"m \xff=1 1000",
            b"m f=2 2000",
            b'm f="unterminated 1000',  # (last: a quote left open takes the newlines after it)
        ]
    )
    b = parse(data, precision="us")
    assert points(b) == [("m.f", 1000, 1.0), ("m.f", 2000, 2.0)]
    assert [no for no, _ in b.errors] == [*range(2, 18), 19]
    assert b.lines == 19
    assert "just-a-word" in b.errors[0][1]


def test_timestamp_out_of_engine_range_is_a_line_error() -> None:
    b = parse(b"m f=1 2000000000000\nm f=2 3\n", precision="s")
    assert b.values.tolist() == [2.0] and b.ts.tolist() == [3_000_000]
    assert b.errors[0][0] == 1 and "out of range" in b.errors[0][1]


def test_names_only_for_series_with_points() -> None:
    b = parse(b'm s="x",g=1 1\nn f=nan 1\n')
    assert b.names == ["m.g"] and b.series.tolist() == [0]


def test_large_batch_is_columnar() -> None:
    n = 20_000
    lines = [f"m,host=h{i % 7} a={i}i,b={i * 0.5},c=t {T0 + i}" for i in range(n)]
    b = parse("\n".join(lines).encode())
    assert len(b) == 3 * n and len(b.names) == 21 and b.errors == []
    host0_a = b.values[b.series == b.names.index("m,host=h0.a")]
    assert host0_a.tolist() == [float(i) for i in range(0, n, 7)]


_LP_CHARS = st.sampled_from([*' ,=\\"\n\r#tfiu.-0123456789eEabcmxyz_\t', "\xff", "é"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_LP_CHARS, max_size=120).map("".join), st.sampled_from(sorted(PRECISIONS)))
def test_fuzz_never_raises(text: str, precision: str) -> None:
    data = text.encode("utf-8", "surrogateescape")
    b = parse(data, precision=precision, now_us=0)
    n_lines = data.count(b"\n") + 1
    assert all(1 <= no <= n_lines for no, _ in b.errors)
    assert b.series.shape == b.ts.shape == b.values.shape == b.point_lines.shape
    assert all(int(s) < len(b.names) for s in b.series)
    assert np.all(np.abs(b.ts) < 1 << 60)


@settings(max_examples=200, deadline=None)
@given(
    st.text(min_size=1, max_size=8),
    st.dictionaries(st.text(min_size=1, max_size=6), st.text(min_size=1, max_size=6), max_size=3),
    st.text(min_size=1, max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_fuzz_escaped_round_trip(
    measurement: str, tags: dict[str, str], fld: str, value: float
) -> None:
    """Any names a writer escapes properly come back as series_name says, value exact."""
    bad = set('\n\r\t\\"#\x7f') | {chr(c) for c in range(32)}  # control: refused
    if any(set(s) & bad for s in [measurement, fld, *tags, *tags.values()]):
        return  # backslash runs are ambiguous

    def esc(s: str, chars: str) -> str:
        return "".join("\\" + c if c in chars else c for c in s)

    key = esc(measurement, ", ") + "".join(
        f",{esc(k, ',= ')}={esc(v, ',= ')}" for k, v in tags.items()
    )
    line = f"{key} {esc(fld, ',= ')}={value!r} 1000"
    b = parse(line.encode(), precision="us")
    if measurement.lstrip() != measurement or measurement.startswith("#"):
        return  # leading blanks are stripped; '#' starts a comment
    assert b.errors == [], (line, b.errors)
    assert points(b) == [(series_name(measurement, tags, fld), 1000, value)]


def test_newline_in_a_string_or_after_a_backslash_does_not_end_the_line() -> None:
    data = b'm s="a\nb",v=1 1\nm v=2 2\\\nm v=3 3\nm,t="x v=4 4\nm v=5 5\\\\\nm v=6 6\\\n'
    b = parse(data, precision="us")
    assert points(b) == [("m.v", 1, 1.0), ('m,t="x.v', 4, 4.0)]
    # line 1 holds a newline in its string (the string is the error); line 3 goes on
    # past its backslash-newline (bad timestamp); a backslash pair escapes nothing; the
    # body's last newline always ends a line: lines 6 and 7 keep a bad timestamp
    assert [no for no, _ in b.errors] == [1, 3, 6, 7] and b.lines == 5
