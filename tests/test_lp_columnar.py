"""The columnar line-protocol path against the exact parser: identical results, always.

``parse`` reads plain lines as columns (protocol/lp_columnar.py) and hands the
others to the exact parser; ``parse_exact`` reads every line the exact way.
Every test here compares the two whole (names and their order, series, times,
values bit for bit, types, line numbers, errors, line count), and checks that
the columnar path really took the lines it should, so a scan that gave every
line back could not pass.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lp_corpus import ADVERSARIAL, ATOMS, STAMPS, VALUES, random_line

from xtsdb.protocol import line_protocol
from xtsdb.protocol.line_protocol import (
    PRECISIONS,
    SMALL_BODY_BYTES,
    ParsedBatch,
    field_part,
    key_prefix,
    parse,
    parse_by_size,
    parse_exact,
)
from xtsdb.protocol.lp_columnar import scan


def same(body: bytes, precision: str = "ns") -> ParsedBatch:
    """Parse both ways (same receive time); fail on any difference; the result."""
    a, b = parse(body, precision, now_us=123), parse_exact(body, precision, now_us=123)
    assert a.names == b.names, body
    for col in ("series", "ts", "point_lines", "kinds"):
        assert np.array_equal(getattr(a, col), getattr(b, col)), (col, body)
        assert getattr(a, col).dtype == getattr(b, col).dtype
    assert a.values.tobytes() == b.values.tobytes(), (a.values, b.values, body)
    assert a.errors == b.errors, body
    assert a.lines == b.lines, body
    return a


def taken(body: bytes) -> int:
    """How many lines the columnar scan itself read."""
    return scan(body, key_prefix, field_part).lines


def test_plain_lines_are_read_as_columns() -> None:
    body = b"".join(
        f"cpu,host=h{i % 3},dc=x usage={i * 0.25},n={i}i,ok=t,u={i}u {1700000000 + i}\n".encode()
        for i in range(500)
    )
    b = same(body, "s")
    assert taken(body) == 500 and len(b) == 2000 and b.errors == []
    assert b.names[:4] == [
        "cpu,dc=x,host=h0.usage",
        "cpu,dc=x,host=h0.n",
        "cpu,dc=x,host=h0.ok",
        "cpu,dc=x,host=h0.u",
    ]
    assert b.kinds[:4].tolist() == [0, 1, 3, 2]


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "-0",
        "-0.0",
        "0.",
        ".5",
        "-.5",
        "1.",
        "007",
        "20.017",
        "-3.25",
        "123456789012345678",
        "9007199254740993",
        "0.1",
        "0.30000000000000004",
        "98.74371859296483",
        "1.7976931348623157",
        "4.9406564584124654",
        "0.000000000000000000001",
        "12345678901234567890123",
        "-0i",
        "0i",
        "-12i",
        "999999999999999999i",
        "1234567890123456789i",
        "0u",
        "42u",
        "999999999999999999u",
        "-1u",
        "t",
        "T",
        "true",
        "True",
        "TRUE",
        "f",
        "F",
        "false",
        "False",
        "FALSE",
        "tRUE",
        "nan",
        "inf",
        "1e3",
        "1E-3",
        "+1",
        "1_0",
        "--1",
        "1.2.3",
        "-",
        ".",
        "-.",
        "i",
        "u",
        "1iu",
        "0x10",
        "٣",
        "1.5i",
    ],
)
def test_one_value_either_way(value: str) -> None:
    body = f"m,t=a v={value},w=1 1700000000000000000\n".encode()
    same(body)
    same(body.replace(b",w=1", b""))


def test_long_mantissas_are_read_by_float_itself() -> None:
    rng = np.random.default_rng(5)
    xs = [*rng.normal(0, 1000.0, 3000).tolist(), 5e-324, 2.2250738585072014e-308, 1 / 3]
    body = b"".join(f"m v={x!r} {i}\n".encode() for i, x in enumerate(xs) if "e" not in repr(x))
    b = same(body, "u")
    assert taken(body) == len(b)
    want = [x for x in xs if "e" not in repr(x)]
    assert b.values.tobytes() == struct.pack(f"<{len(want)}d", *want)


def test_timestamps_at_their_limits() -> None:
    stamps = [
        "0",
        "-1",
        "000000000000000000001",
        "9223372036854775807",
        "-9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "99999999999999999999",
        "1" * 19,
        "9223372036854775806",
        "-9223372036854775806",
        "+1",
        "1a",
    ]
    for precision in sorted(PRECISIONS):
        same("".join(f"m v=1 {s}\n" for s in stamps).encode(), precision)


def test_the_adversarial_corpus_line_by_line_and_whole() -> None:
    for line in ADVERSARIAL:
        same(line)
        same(b"m v=1 5\n" + line + b"\nm v=2 6\n")  # plain lines around it
    same(b"\n".join(ADVERSARIAL))


def test_lines_that_go_on_past_a_newline_take_plain_looking_lines_with_them() -> None:
    body = b'm v=1 1\nm s="x\ncpu v=2 2\n",v=3 3\ncpu v=4 4\nm v=5 5\\\ncpu v=6 6\nm v=7 7\n'
    b = same(body, "s")
    assert taken(body) == 3  # lines 1, 5 and 8; 3 and 7 are inside others
    assert b.point_lines.tolist() == [1, 2, 5, 8]


def test_names_are_ordered_by_first_appearance_across_both_readers() -> None:
    # 'b' is first met in a refused line the exact parser reads (it registers names
    # before it finds the bad value): both ways must order the names alike.
    body = b"m a=1 1\nm\tb=1,c=x 2\nm c=3,b=2 3\nm d=4 4\nm\tb=1 5\n"
    b = same(body)
    assert b.names == ["m.a", "m.c", "m.b", "m.d"]


def test_time_fields_bad_names_and_invalid_utf8_go_to_the_exact_parser() -> None:
    body = b"m time=1,v=2 1\nm,time=x v=1 2\n\xff v=1 3\nm \xfe=1 4\nm,a=1,a=2 v=1 5\nm v=1 6\n"
    b = same(body)
    assert taken(body) == 1 and len(b.errors) == 5


def test_duplicate_keys_and_tag_orders() -> None:
    body = b"m,b=2,a=1 v=1,v=2 10\nm,a=1,b=2 v=3 11\nm,a=1,b=2 v=4,w=5 12\n"
    b = same(body)
    assert taken(body) == 3 and b.names == ["m,a=1,b=2.v", "m,a=1,b=2.w"]
    assert b.values.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_empty_and_blank_bodies() -> None:
    for body in (b"", b"\n", b"\n\n\n", b"   \n", b"# c\n", b"m v=1", b"m v=1\n\n"):
        same(body)


def test_random_corpus_lines_mixed_with_plain_ones() -> None:
    rng = random.Random(14)
    for _ in range(300):
        lines = [
            random_line(rng) if rng.random() < 0.5 else f"p,h=x v={rng.random()!r} 7".encode()
            for _ in range(rng.randint(1, 12))
        ]
        same(b"\n".join(lines), rng.choice(sorted(PRECISIONS)))


_PIECES = st.sampled_from(
    [*ATOMS, *VALUES, *STAMPS, " ", ",", "=", "\n", "m", "v", "1", "t", "i", "u", ".", "-", '"']
)
_PLAIN = st.builds(
    "{}{} {}={}{}".format,
    st.sampled_from(["m", "cpu", "a.b", "é"]),
    st.sampled_from(["", ",h=1", ",h=2,z=y", ",z=y,h=1"]),
    st.sampled_from(["v", "w", "x_y"]),
    st.sampled_from([*VALUES, "1", "2.5", "-0.125", "17i", "t"]),
    st.sampled_from(["", " 1", " -5", " 1700000000000000000"]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(_PLAIN, st.lists(_PIECES, max_size=12).map("".join)), max_size=12),
    st.sampled_from(sorted(PRECISIONS)),
)
def test_property_random_and_adversarial_bodies(lines: list[str], precision: str) -> None:
    same("\n".join(lines).encode("utf-8", "surrogateescape"), precision)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_property_random_bytes(body: bytes) -> None:
    same(body)


def test_parse_by_size_reads_small_bodies_line_by_line_and_large_ones_as_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Either way the result is parse_exact's; the scan runs only from SMALL_BODY_BYTES on."""
    rng = random.Random(7)
    lines = [random_line(rng) for _ in range(400)]
    plain = [f"m,tag=t{i % 7} a={i}.5,b={i}i {1700000000 + i}".encode() for i in range(400)]
    scans: list[int] = []
    real_scan = line_protocol.scan

    def counting_scan(data: bytes, *args: object) -> object:
        scans.append(len(data))
        return real_scan(data, *args)

    monkeypatch.setattr(line_protocol, "scan", counting_scan)
    sides = set()
    for mixed in (plain, [x for pair in zip(plain, lines, strict=True) for x in pair]):
        for n in (1, 5, 40, 120, 400, 800):
            body = b"\n".join(mixed[:n]) + b"\n"
            got = parse_by_size(body, "s", now_us=123)
            want = parse_exact(body, "s", now_us=123)
            assert got.names == want.names
            for col in ("series", "ts", "point_lines", "kinds"):
                assert np.array_equal(getattr(got, col), getattr(want, col)), (col, n)
            assert got.values.tobytes() == want.values.tobytes()
            assert (got.errors, got.lines) == (want.errors, want.lines)
            small = len(body) < SMALL_BODY_BYTES
            assert scans == ([] if small else [len(body)]), (n, len(body))
            scans.clear()
            sides.add(small)
    assert sides == {True, False}
