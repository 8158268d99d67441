"""The wire protocol as bytes in, messages out: framing, message checks, array codec, docs."""

from __future__ import annotations

import contextlib
import itertools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xtsdb.protocol import (
    AGGREGATE,
    BACKUP,
    DEFAULT_MAX_FRAME,
    DELETE,
    DELETE_TAG,
    HELLO,
    INTERPOLATE,
    LAST,
    OPERATIONS,
    OPS,
    PLOT,
    QUERY,
    TAG_CREATE,
    TAG_GET,
    TAG_LIST,
    TAG_REMOVE,
    TAG_RENAME,
    TAG_SEARCH,
    TAG_UPDATE,
    WRITE,
    FrameDecoder,
    encode_frame,
    error_response,
    errors,
    ok_response,
    opdocs,
    pack_array,
    parse_request_header,
    parse_response_header,
    raise_for_error,
    readable_id,
    request,
    unpack_array,
)
from xtsdb.protocol.analytics import Buckets, Regular
from xtsdb.protocol.declare import specs
from xtsdb.protocol.errors import (
    FrameTooLarge,
    InvalidInput,
    ProtocolError,
    UnknownOperation,
    UnsupportedVersion,
    XtsdbError,
)
from xtsdb.protocol.frames import BIN_INLINE_MAX, encode_frame_parts
from xtsdb.protocol.ops import negotiate
from xtsdb.protocol.wire import Kind

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def wire(msg: dict[str, Any]) -> dict[str, Any]:
    """``msg`` after a trip through encode_frame and a FrameDecoder."""
    dec = FrameDecoder()
    dec.feed(encode_frame(msg))
    out = dec.next_message()
    assert isinstance(out, dict) and dec.next_message() is None
    assert dec.buffered == 0 and dec.wanted == 4
    return out


def points(resp: dict[str, Any]) -> tuple[Any, Any, Any]:
    p = QUERY.parse_answer(resp)
    return p.ts, p.values, p.q


def last_cols(resp: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    r = LAST.parse_answer(resp)
    return r.tags, r.ts, r.values, r.q


def last_tags(msg: dict[str, Any]) -> Any:
    return LAST.parse(msg).tags


def hello(msg: dict[str, Any]) -> tuple[int, str | None, str | None]:
    h = HELLO.parse(msg)
    return negotiate(h.versions), h.token, h.client


def welcome(resp: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(HELLO.parse_answer(resp))


def backup_path(msg: dict[str, Any]) -> str:
    return BACKUP.parse(msg).path


def backup_report(resp: dict[str, Any]) -> dict[str, Any]:
    return BACKUP.parse_answer(resp).backup


def query_args(msg: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(QUERY.parse(msg))


def decode_all(pieces: list[bytes], max_frame: int = DEFAULT_MAX_FRAME) -> list[dict[str, Any]]:
    dec = FrameDecoder(max_frame)
    out: list[dict[str, Any]] = []
    for piece in pieces:
        dec.feed(piece)
        out.extend(dec)
    assert dec.buffered == 0
    return out


# -- round trips of every op ----------------------------------------------------


def test_every_op_has_a_round_trip_below() -> None:
    core = {"hello", "ping", "write", "query", "last", "flush", "stats", "backup"}
    historian = {"aggregate", "interpolate", "plot", "delete", "delete_tag"}
    catalog = {"tag_create", "tag_get", "tag_list", "tag_search", "tag_update", "tag_rename"}
    catalog |= {"tag_remove"}
    cluster = {"cluster_status", "cluster_shard_tags"}  # round trips: test_cluster_protocol.py
    assert core | historian | catalog | cluster == OPS


def test_backup_round_trip() -> None:
    msg = wire(BACKUP.build(5, "nightly"))
    assert parse_request_header(msg) == (5, "backup") and backup_path(msg) == "nightly"
    with pytest.raises(InvalidInput, match="path"):
        backup_path(wire(request("backup", 6)))
    with pytest.raises(InvalidInput):
        BACKUP.build(7, "")
    report = {"path": "/b/nightly", "bytes": 10, "checkpoint_lsn": 3}
    assert backup_report(wire(ok_response(5, backup=report))) == report
    with pytest.raises(ProtocolError):
        backup_report(wire(ok_response(5)))


def test_hello_round_trip() -> None:
    msg = wire(HELLO.build(1, [1], token="s3cret", client="pytest"))
    assert parse_request_header(msg) == (1, "hello")
    assert hello(msg) == (1, "s3cret", "pytest")
    assert hello(wire(HELLO.build(2, [1]))) == (1, None, None)
    assert hello(wire(HELLO.build(3, [7, 1, 0]))) == (1, None, None)
    with pytest.raises(UnsupportedVersion):
        hello(wire(HELLO.build(4, [2, 3])))
    resp = wire(HELLO.reply(1, 1, "xtsdb 0.1.0", 1 << 20, True))
    assert parse_response_header(resp) == (1, True)
    assert welcome(resp) == (1, "xtsdb 0.1.0", 1 << 20, True)


@pytest.mark.parametrize("op", ["ping", "flush", "stats"])
def test_field_less_ops_round_trip(op: str) -> None:
    msg = wire(request(op, 42))
    assert msg == {"id": 42, "op": op}
    assert parse_request_header(msg) == (42, op)
    resp = wire(ok_response(42, stats={"points": 5}) if op == "stats" else ok_response(42))
    raise_for_error(resp)
    assert resp["id"] == 42 and resp["ok"] is True
    if op == "stats":
        assert resp["stats"] == {"points": 5}


def test_write_round_trip_single_tag() -> None:
    ts = np.array([3, 1, 2], np.int64)
    values = np.array([0.5, np.nan, -np.inf])
    msg = wire(WRITE.build(9, 7, ts, values))
    assert parse_request_header(msg) == (9, "write")
    assert isinstance(msg["ts"], bytes)  # raw bin, not a msgpack array
    tag, ts2, values2, q = WRITE.parse(msg)
    assert tag == 7 and q is None
    assert ts2.dtype == np.int64 and values2.dtype == np.float64
    np.testing.assert_array_equal(ts2, ts)
    assert values2.tobytes() == values.tobytes()  # NaN and inf bit-exact
    resp = wire(ok_response(9, n=3, lsn=11))
    raise_for_error(resp)
    assert (resp["n"], resp["lsn"]) == (3, 11)


def test_write_round_trip_tag_per_point_with_qualities() -> None:
    tags = np.array([1, 2, 2**32 - 1], np.uint32)
    msg = wire(WRITE.build(1, tags, [10, 20, 30], [1, 2, 3], [192, 0, 64]))
    tags2, ts, values, q = WRITE.parse(msg)
    assert isinstance(tags2, np.ndarray) and tags2.dtype == np.uint32
    np.testing.assert_array_equal(tags2, tags)
    np.testing.assert_array_equal(ts, [10, 20, 30])
    np.testing.assert_array_equal(values, [1.0, 2.0, 3.0])
    assert q is not None and q.dtype == np.uint8
    np.testing.assert_array_equal(q, [192, 0, 64])


def test_write_scalar_quality_and_numpy_tag() -> None:
    tag, _, _, q = WRITE.parse(wire(WRITE.build(1, np.uint32(5), [1, 2], [1.0, 2.0], 0)))
    assert tag == 5 and type(tag) is int
    assert q is not None and q.tolist() == [0, 0]


def test_empty_write_round_trips() -> None:
    tag, ts, values, q = WRITE.parse(wire(WRITE.build(1, 0, [], [])))
    assert tag == 0 and ts.shape == (0,) and values.shape == (0,) and q is None


def test_query_round_trip() -> None:
    msg = wire(QUERY.build(5, 3, -(2**63), 2**63 - 1, limit=10))
    assert parse_request_header(msg) == (5, "query")
    assert query_args(msg) == (3, -(2**63), 2**63 - 1, 10, False, False)
    assert query_args(wire(QUERY.build(6, 3, 0, 100))) == (3, 0, 100, None, False, False)
    flags = wire(QUERY.build(7, "boiler.temp", 0, 9, descending=True, good_only=True))
    assert query_args(flags) == ("boiler.temp", 0, 9, None, True, True)
    resp = wire(QUERY.reply(5, [1, 2], [0.25, 0.5], [192, 192], {"blocks_read": 1}))
    ts, values, q = points(resp)
    assert ts.tolist() == [1, 2] and values.tolist() == [0.25, 0.5] and q.tolist() == [192, 192]
    assert resp["stats"] == {"blocks_read": 1}
    ts, values, q = points(wire(QUERY.reply(5, [], [], [])))
    assert ts.size == values.size == q.size == 0


def test_last_round_trip() -> None:
    msg = wire(LAST.build(8, [4, 5, 6]))
    assert parse_request_header(msg) == (8, "last")
    tags = last_tags(msg)
    assert tags.dtype == np.uint32 and tags.tolist() == [4, 5, 6]
    assert last_tags(wire(LAST.build(9, 4))).tolist() == [4]
    resp = wire(LAST.reply(8, [4, 6], [100, 200], [1.5, 2.5], [192, 0]))
    out = last_cols(resp)
    assert [a.tolist() for a in out] == [[4, 6], [100, 200], [1.5, 2.5], [192, 0]]
    assert [a.dtype for a in out] == [np.uint32, np.int64, np.float64, np.uint8]


def test_aggregate_round_trip() -> None:
    msg = wire(AGGREGATE.build(1, "b.t", -5, 100, 10, ["avg", "count", "avg"]))
    a = AGGREGATE.parse(msg)
    assert (a.tags, a.start, a.end, a.interval) == ("b.t", -5, 100, 10)
    assert a.aggregates == ("avg", "count") and (a.origin, a.good_only) == (0, False)
    many = wire(AGGREGATE.build(2, np.array([3, 4]), 0, 9, 3, "sum", origin=1, good_only=True))
    a = AGGREGATE.parse(many)
    assert (a.tags, a.origin, a.good_only) == ([3, 4], 1, True)
    res = Buckets([0, 10], {"count": [1, 0], "avg": [0.5, np.nan]})
    one = AGGREGATE.parse_answer(wire(AGGREGATE.reply(1, res))).result
    assert isinstance(one, Buckets)
    start, values = one
    assert start.tolist() == [0, 10] and values["count"].dtype == np.int64
    assert values["count"].tolist() == [1, 0] and np.isnan(values["avg"][1])
    both = AGGREGATE.parse_answer(wire(AGGREGATE.reply(2, [res, res]))).result
    assert isinstance(both, list) and len(both) == 2 and both[1].values["avg"][0] == 0.5
    bad_fields: list[dict[str, Any]] = [
        {"aggregates": ["median"]},
        {"aggregates": "avg"},
        {"aggregates": []},
        {"interval": 0},
        {"tags": [1]},
        {"tag": None},
        {"good_only": 1},
    ]
    for bad in bad_fields:
        with pytest.raises(InvalidInput):
            AGGREGATE.parse({**msg, **bad})


def test_interpolate_and_plot_round_trip() -> None:
    msg = wire(INTERPOLATE.build(1, 7, [1, 5], method="linear", max_gap=3))
    a = INTERPOLATE.parse(msg)
    assert a.tag == 7 and not isinstance(a.times, Regular) and a.times.tolist() == [1, 5]
    assert (a.method, a.max_gap, a.good_only) == ("linear", 3, False)
    grid = INTERPOLATE.parse(wire(INTERPOLATE.build(2, "x", Regular(0, 10, 5), good_only=True)))
    assert (grid.times, grid.method, grid.good_only) == ((0, 10, 5), "previous", True)
    resp = wire(INTERPOLATE.reply(1, [1, 5], [0.5, np.nan], [0, 2]))
    ts, values, status = INTERPOLATE.parse_answer(resp)
    assert np.isnan(values[1]) and ts.tolist() == [1, 5]
    assert status.dtype == np.uint8 and status.tolist() == [0, 2]
    bad_fields: list[dict[str, Any]] = [
        {"method": "cubic"},
        {"times": [1, 2]},
        {"times": {"start": 0, "end": 1}},
        {"max_gap": -1},
    ]
    for bad in bad_fields:
        with pytest.raises(InvalidInput):
            INTERPOLATE.parse({**msg, **bad})
    with pytest.raises(InvalidInput, match="times"):
        INTERPOLATE.build(3, 7, None)
    plot = PLOT.parse(wire(PLOT.build(4, "x", 0, 10, 100)))
    assert tuple(plot) == ("x", 0, 10, 100, False)
    with pytest.raises(InvalidInput, match="intervals"):
        PLOT.parse({**wire(PLOT.build(4, 1, 0, 10, 1)), "intervals": 0})


def test_tag_catalog_and_delete_round_trip() -> None:
    msg = wire(TAG_CREATE.build(1, "b.t", {"unit": "m", "retention_us": 5}))
    assert tuple(TAG_CREATE.parse(msg)) == ("b.t", {"unit": "m", "retention_us": 5})
    with pytest.raises(InvalidInput, match="unknown tag fields"):
        TAG_CREATE.build(1, "b.t", {"colour": "red"})
    assert TAG_GET.parse(wire(TAG_GET.build(2, 9))).tag == 9
    assert tuple(TAG_LIST.parse(wire(TAG_LIST.build(3)))) == ("*", 10_000)
    assert tuple(TAG_LIST.parse(wire(TAG_LIST.build(3, "a*", 5)))) == ("a*", 5)
    assert tuple(TAG_SEARCH.parse(wire(TAG_SEARCH.build(3)))) == ("", None, 100)
    assert tuple(TAG_SEARCH.parse(wire(TAG_SEARCH.build(3, "Boil", "a.b", 7)))) == (
        "Boil",
        "a.b",
        7,
    )
    page = TAG_SEARCH.parse_answer(wire(TAG_SEARCH.reply(1, [{"id": 1, "name": "a"}], True)))
    assert page.tags == [{"id": 1, "name": "a"}] and page.more is True
    with pytest.raises(InvalidInput, match="limit"):
        TAG_SEARCH.parse({"limit": 1001})
    upd = wire(TAG_UPDATE.build(4, "b.t", {"duplicates": "first"}))
    assert tuple(TAG_UPDATE.parse(upd)) == ("b.t", {"duplicates": "first"})
    assert tuple(TAG_RENAME.parse(wire(TAG_RENAME.build(5, 9, "new")))) == (9, "new")
    assert TAG_REMOVE.parse(wire(TAG_REMOVE.build(6, "b.t"))).tag == "b.t"
    assert tuple(DELETE.parse(wire(DELETE.build(7, "b.t", -1, 5)))) == ("b.t", -1, 5)
    assert DELETE_TAG.parse(wire(DELETE_TAG.build(8, 3))).tag == 3
    info = {"id": 3, "name": "b.t", "unit": "m", "future_field": 1}
    assert TAG_GET.parse_answer(wire(TAG_GET.reply(1, info))).tag == info
    assert TAG_LIST.parse_answer(wire(TAG_LIST.reply(1, [info]))).tags == [info]
    assert DELETE.parse_answer(wire(ok_response(7, lsn=12))).lsn == 12
    with pytest.raises(ProtocolError):
        TAG_GET.parse_answer(wire(ok_response(1, tag={"id": "3", "name": "x"})))
    for bad in ({"retention_us": -1}, {"unit": 5}, {"name": ""}, {"name": None}):
        with pytest.raises(InvalidInput):
            TAG_CREATE.parse({**msg, **bad})
    with pytest.raises(InvalidInput, match="limit"):
        TAG_LIST.parse({"limit": 65_537})


def test_points_response_says_whether_there_is_more() -> None:
    assert wire(QUERY.reply(1, [1], [1.0], [192], more=True))["more"] is True
    assert wire(QUERY.reply(1, [], [], []))["more"] is False


def test_last_takes_names_as_a_list() -> None:
    assert last_tags(wire(LAST.build(1, "a"))) == ["a"]
    assert last_tags(wire(LAST.build(1, ["a", 5]))) == ["a", 5]
    assert last_tags(wire(LAST.build(1, (5, 6)))).tolist() == [5, 6]  # ids only: a bin


# -- zero-copy response frames ------------------------------------------------------


def _as_bin(obj: Any) -> Any:
    """``obj`` with every numpy array replaced by its bytes: what encode_frame would send."""
    if isinstance(obj, dict):
        return {k: _as_bin(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_as_bin(v) for v in obj]
    return obj.tobytes() if isinstance(obj, np.ndarray) else obj


PART_SIZES = [0, 1, 255, 256, 65_535, 65_536, BIN_INLINE_MAX // 8, BIN_INLINE_MAX // 8 + 1, 300_000]


@pytest.mark.parametrize("n", PART_SIZES)
def test_frame_parts_are_the_bytes_of_encode_frame(n: int) -> None:
    rng = np.random.default_rng(n)
    ts = np.sort(rng.integers(-(2**60), 2**60, n))
    values, q = rng.normal(size=n), rng.integers(0, 256, n, dtype=np.uint8)
    msgs = [
        QUERY.reply(n, ts, values, q, {"blocks_read": n}, more=n % 2 == 1),
        QUERY.reply(n, ts[::-1], values[::-1], q[::-1]),  # strided views (descending)
        LAST.reply(n, np.arange(n) % 2**32, ts, values, q),
        AGGREGATE.reply(n, [Buckets(ts, {"count": ts, "avg": values})] * 2),
        INTERPOLATE.reply(n, ts, values, q),
        ok_response(n, blob=ts.tobytes(), view=memoryview(values.tobytes()), nested=[{"x": q}]),
    ]
    for msg in msgs:
        parts = encode_frame_parts(msg)
        joined = b"".join(parts)
        assert joined == encode_frame(_as_bin(msg)) == encode_frame(msg)
        big = [p for p in parts if isinstance(p, memoryview)]
        assert all(p.nbytes >= BIN_INLINE_MAX for p in big)
        assert bool(big) == (n * 8 >= BIN_INLINE_MAX)  # large arrays are never copied
        dec = FrameDecoder()
        for p in parts:
            dec.feed(p)
        assert dec.next_message() == wire(msg)


def test_frame_parts_view_the_arrays_and_check_the_limit() -> None:
    ts = np.arange(100_000, dtype=np.int64)
    parts = encode_frame_parts(QUERY.reply(1, ts, ts.astype(np.float64), ts % 256))
    assert any(isinstance(p, memoryview) and p.obj is ts for p in parts)  # no copy of ts
    size = len(encode_frame(QUERY.reply(1, ts, ts.astype(np.float64), ts % 256))) - 4
    with pytest.raises(FrameTooLarge):
        encode_frame_parts(QUERY.reply(1, ts, ts.astype(np.float64), ts % 256), size - 1)
    with pytest.raises(ProtocolError, match="pack_array"):
        encode_frame_parts({"ts": np.arange(100_000, dtype=np.int32)})
    assert encode_frame_parts({"a": 1}) == [encode_frame({"a": 1})]


# -- framing -----------------------------------------------------------------------


def sample_stream() -> tuple[bytes, list[dict[str, Any]]]:
    msgs = [
        request("ping", 1),
        WRITE.build(2, 7, [1, 2, 3], [1.0, 2.0, 3.0], [192, 192, 0]),
        QUERY.build(3, 7, 0, 10),
        ok_response(4, n=1, lsn=2),
    ]
    return b"".join(encode_frame(m) for m in msgs), msgs


def test_frames_split_at_every_byte_boundary() -> None:
    stream, msgs = sample_stream()
    for cut in range(len(stream) + 1):
        assert decode_all([stream[:cut], stream[cut:]]) == msgs, cut
    assert decode_all([stream[i : i + 1] for i in range(len(stream))]) == msgs


def test_many_frames_in_one_feed() -> None:
    stream, msgs = sample_stream()
    dec = FrameDecoder()
    dec.feed(stream * 50)
    assert list(dec) == msgs * 50
    assert dec.buffered == 0 and dec.wanted == 4


def test_truncated_frame_waits_until_complete() -> None:
    data = encode_frame(request("ping", 1))
    dec = FrameDecoder()
    assert dec.wanted == 4 and dec.next_message() is None
    dec.feed(data[:2])
    assert (dec.wanted, dec.buffered) == (2, 2) and dec.next_message() is None
    dec.feed(data[2:6])
    assert (dec.wanted, dec.buffered) == (len(data) - 6, 6) and dec.next_message() is None
    dec.feed(data[6:-1])
    assert dec.wanted == 1 and dec.next_message() is None
    dec.feed(memoryview(data[-1:]))
    assert dec.wanted == 4 and dec.buffered == len(data)
    assert dec.next_message() == {"id": 1, "op": "ping"}
    assert dec.buffered == 0 and dec.next_message() is None


def test_oversize_prefix_raises_on_the_prefix_bytes() -> None:
    dec = FrameDecoder(max_frame=1000)
    prefix = (1001).to_bytes(4, "big")
    dec.feed(prefix[:3])  # not yet a whole prefix
    with pytest.raises(FrameTooLarge, match="1001"):
        dec.feed(prefix[3:])
    assert dec.buffered <= 4  # no body byte was buffered
    with pytest.raises(FrameTooLarge):  # the stream cannot be resynchronised
        dec.feed(b"\x80")


def test_oversize_prefix_of_the_default_limit() -> None:
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed((DEFAULT_MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(b"\xff\xff\xff\xff")
    dec = FrameDecoder(max_frame=5)
    dec.feed(frame(b"\x80") + frame(b"\x81\xa1a\x01"))  # bodies of 1 and 4 bytes: accepted
    assert list(dec) == [{}, {"a": 1}]


def test_frames_before_a_bad_prefix_in_the_same_feed_still_decode() -> None:
    dec = FrameDecoder(max_frame=100)
    with pytest.raises(FrameTooLarge):
        dec.feed(encode_frame(request("ping", 1)) + (101).to_bytes(4, "big") + b"x" * 101)
    assert dec.next_message() == {"id": 1, "op": "ping"}


def test_zero_length_frame_is_a_protocol_error() -> None:
    dec = FrameDecoder()
    with pytest.raises(ProtocolError) as info:
        dec.feed(b"\x00\x00\x00\x00")
    assert type(info.value) is ProtocolError


GARBAGE_BODIES = [
    b"\xc1",  # never-used type byte
    b"\x82\xa1a",  # map that ends early
    b"\x80\x80",  # extra data after the object
    b"\x81\xa1a\xa2\xff\xfe",  # str that is not UTF-8
    b"\x81\x01\x02",  # int map key
    b"\x81\xc4\x01k\x02",  # bin map key
    b"\x81\xa1a\xd6\xff\x00\x00\x00\x01",  # ext (msgpack timestamp)
    b"\x81\xa1a\xdd\xff\xff\xff\xff",  # array claiming 4G elements
    b"\x81\xa1a\xdf\xff\xff\xff\xff",  # map claiming 4G entries
    b"\x81\xa1a\xc6\xff\xff\xff\xff",  # bin claiming 4 GB
]
NON_MAP_BODIES = [b"\xc0", b"\x01", b"\xa2hi", b"\x92\x01\x02", b"\xc4\x00", b"\xc3"]


@pytest.mark.parametrize("body", GARBAGE_BODIES + NON_MAP_BODIES)
def test_bad_body_is_a_protocol_error_and_the_next_frame_decodes(body: bytes) -> None:
    dec = FrameDecoder()
    dec.feed(frame(body) + encode_frame(request("ping", 2)))
    with pytest.raises(ProtocolError) as info:
        dec.next_message()
    assert type(info.value) is ProtocolError and str(info.value)
    assert dec.next_message() == {"id": 2, "op": "ping"}
    assert dec.next_message() is None and dec.buffered == 0


@pytest.mark.parametrize("opener", [b"\x91", b"\x81\xa1a"])
def test_deeply_nested_body_is_refused(opener: bytes) -> None:
    body = opener * 100_000 + b"\xc0"
    dec = FrameDecoder()
    dec.feed(frame(body) + encode_frame(request("ping", 3)))
    with pytest.raises(ProtocolError, match="nesting"):
        dec.next_message()
    assert dec.next_message() == {"id": 3, "op": "ping"}


def test_encode_frame_limits_and_unencodable_values() -> None:
    msg = {"blob": b"x" * 100}
    body = msgpack.packb(msg, use_bin_type=True)
    assert encode_frame(msg, max_frame=len(body)) == len(body).to_bytes(4, "big") + body
    with pytest.raises(FrameTooLarge):
        encode_frame(msg, max_frame=len(body) - 1)
    # Only 1-D arrays in a wire dtype travel (as bin); others need an explicit conversion.
    for bad in (np.arange(3, dtype=np.int32), np.arange(3, dtype=">i8"), np.zeros((2, 2))):
        with pytest.raises(ProtocolError, match="pack_array"):
            encode_frame({"ts": bad})
    assert wire({"ts": np.arange(3, dtype="<i8")}) == {"ts": pack_array([0, 1, 2], "<i8")}
    with pytest.raises(ProtocolError):
        encode_frame({"x": object()})
    with pytest.raises(ProtocolError):
        encode_frame({"x": 2**64})
    # numpy scalars (counters, stats) encode as plain numbers
    assert wire({"a": np.int64(5), "b": np.float32(0.5), "c": np.bool_(True)}) == {
        "a": 5,
        "b": 0.5,
        "c": True,
    }


def test_large_write_frame_in_64k_pieces() -> None:
    n = 1_200_000  # 20 MB of ts + values + tags
    rng = np.random.default_rng(1)
    tags = rng.integers(0, 1000, n).astype(np.uint32)
    ts = np.arange(n, dtype=np.int64) * 1000
    values = rng.random(n)
    data = encode_frame(WRITE.build(1, tags, ts, values))
    assert len(data) > 20_000_000
    dec = FrameDecoder()
    piece = 64 * 1024
    for start in range(0, len(data), piece):
        dec.feed(data[start : start + piece])
        if start + piece < len(data):
            assert dec.next_message() is None
    msg = dec.next_message()
    assert msg is not None and dec.buffered == 0
    tags2, ts2, values2, q = WRITE.parse(msg)
    assert q is None and isinstance(tags2, np.ndarray)
    np.testing.assert_array_equal(tags2, tags)
    np.testing.assert_array_equal(ts2, ts)
    np.testing.assert_array_equal(values2, values)


# -- headers and envelopes -------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        {"op": "ping"},
        {"id": None, "op": "ping"},
        {"id": -1, "op": "ping"},
        {"id": 2**63, "op": "ping"},
        {"id": 1.0, "op": "ping"},
        {"id": True, "op": "ping"},
        {"id": "1", "op": "ping"},
    ],
)
def test_bad_request_id_is_a_protocol_error(msg: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request_header(msg)
    assert type(info.value) is ProtocolError
    assert readable_id(msg) is None


@pytest.mark.parametrize("op", [None, 1, b"ping", ["ping"]])
def test_bad_op_type_is_a_protocol_error(op: Any) -> None:
    msg = {"id": 5} if op is None else {"id": 5, "op": op}
    with pytest.raises(ProtocolError) as info:
        parse_request_header(msg)
    assert type(info.value) is ProtocolError
    assert readable_id(msg) == 5


def test_unknown_op() -> None:
    with pytest.raises(UnknownOperation, match="nope"):
        parse_request_header({"id": 5, "op": "nope"})
    assert parse_request_header({"id": 2**63 - 1, "op": "ping", "extra": 1}) == (2**63 - 1, "ping")
    with pytest.raises(UnknownOperation):
        request("nope", 1)
    with pytest.raises(InvalidInput):
        request("ping", -1)


@pytest.mark.parametrize("cls", [errors.ERROR_CLASSES[c] for c in sorted(errors.ERROR_CLASSES)])
def test_error_response_maps_back_to_its_class(cls: type[XtsdbError]) -> None:
    resp = wire(error_response(7, cls(f"boom {cls.name}")))
    assert resp["error"]["code"] == cls.code
    assert parse_response_header(resp) == (7, False)
    with pytest.raises(cls) as info:
        raise_for_error(resp)
    assert type(info.value) is cls and str(info.value) == f"boom {cls.name}"
    with pytest.raises(cls):  # response parsers raise the carried error first
        points(resp)


def test_error_response_edge_cases() -> None:
    resp = wire(error_response(None, ValueError("oops")))
    assert resp["id"] is None and resp["error"]["code"] == errors.InternalError.code
    assert "ValueError: oops" in resp["error"]["message"]
    assert wire(error_response(1, InvalidInput()))["error"]["message"] == "invalid_input"
    long = wire(error_response(1, InvalidInput("x" * 100_000)))["error"]["message"]
    assert len(long) <= 8192
    with pytest.raises(XtsdbError) as info:  # unknown codes map to the root class
        raise_for_error({"id": 1, "ok": False, "error": {"code": 999, "message": "?"}})
    assert type(info.value) is XtsdbError


@pytest.mark.parametrize(
    "resp",
    [
        {"id": 1},
        {"id": 1, "ok": 1},
        {"id": 1, "ok": False},
        {"id": 1, "ok": False, "error": {"code": "10", "message": "m"}},
        {"id": 1, "ok": False, "error": {"code": 10}},
    ],
)
def test_malformed_responses_are_protocol_errors(resp: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        raise_for_error(resp)
    assert type(info.value) is ProtocolError


def test_malformed_success_response_is_a_protocol_error_not_invalid_input() -> None:
    resp = ok_response(1, ts=b"\x00" * 8, values=b"\x00" * 16, q=b"\x00")
    with pytest.raises(ProtocolError, match="values") as info:
        points(resp)
    assert not isinstance(info.value, InvalidInput)
    with pytest.raises(ProtocolError):
        last_cols(ok_response(1, tags=b"\x00" * 4))
    with pytest.raises(ProtocolError):
        welcome(ok_response(1, version=1, server="s", max_frame=0, auth=True))


# -- field checks -----------------------------------------------------------------

TS = pack_array(np.array([1, 2]), "<i8")
VALS = pack_array(np.array([1.0, 2.0]), "<f8")
WRITE_MSG = {"id": 1, "op": "write", "tag": 1, "ts": TS, "values": VALS}
WRITE_TAGS = {
    "id": 1,
    "op": "write",
    "tags": pack_array(np.array([1, 2]), "<u4"),
    "ts": TS,
    "values": VALS,
}
QUERY_MSG = {"id": 1, "op": "query", "tag": 1, "start": 0, "end": 10, "limit": 5}
LAST_MSG = {"id": 1, "op": "last", "tags": pack_array(np.array([1, 2]), "<u4")}

BAD_FIELDS: list[tuple[dict[str, Any], str, Any]] = [
    *[(WRITE_MSG, "tag", v) for v in (-1, 2**32, True, 1.0, "", b"\x01", [1])],
    *[(WRITE_MSG, f, v) for f in ("ts", "values") for v in (None, 1, "ab", [1, 2], {"a": 1})],
    (WRITE_MSG, "ts", b"\x00" * 7),  # not a multiple of 8
    (WRITE_MSG, "ts", b"\x00" * 24),  # 3 timestamps, 2 values
    (WRITE_MSG, "values", b"\x00" * 12),  # not a multiple of 8
    (WRITE_MSG, "values", b"\x00" * 8),  # 1 value, 2 timestamps
    *[(WRITE_MSG, "q", v) for v in (192, [192, 192], "ab", b"\xc0", b"\xc0" * 3)],
    *[(WRITE_TAGS, "tags", v) for v in (1.5, [1, 2], b"\x00" * 6, b"\x00" * 4, b"\x00" * 12)],
    *[(QUERY_MSG, f, v) for f in ("start", "end") for v in (None, True, 1.5, "0", b"0", [0])],
    *[(QUERY_MSG, "tag", v) for v in (None, True, 1.5, "", b"0", [0])],  # a str is a tag name
    *[(QUERY_MSG, f, v) for f in ("descending", "good_only") for v in (1, 0, "yes", b"\x01")],
    (QUERY_MSG, "tag", 2**32),
    (QUERY_MSG, "start", 2**63),
    (QUERY_MSG, "end", -(2**63) - 1),
    *[(QUERY_MSG, "limit", v) for v in (-1, False, 2.0, "5", 2**63)],
    *[(LAST_MSG, "tags", v) for v in (None, 1, [1.5], [True], [""], "ab", b"\x00" * 5)],
]


@pytest.mark.parametrize(("base", "field", "value"), BAD_FIELDS)
def test_wrong_field_values_are_invalid_input(base: dict[str, Any], field: str, value: Any) -> None:
    msg = {**base, field: value}
    parse = {"write": WRITE.parse, "query": QUERY.parse, "last": LAST.parse}[base["op"]]
    parse(wire(base))  # the base message itself is fine
    with pytest.raises(InvalidInput, match=field):
        parse(msg)  # in process
    if not (isinstance(value, int) and value < -(2**63)):  # msgpack cannot carry that one
        with pytest.raises(InvalidInput, match=field):
            parse(wire(msg))  # over the wire


def test_write_needs_exactly_one_of_tag_and_tags() -> None:
    with pytest.raises(InvalidInput, match="exactly one"):
        WRITE.parse({**WRITE_MSG, "tags": WRITE_TAGS["tags"]})
    with pytest.raises(InvalidInput, match="exactly one"):
        WRITE.parse({k: v for k, v in WRITE_MSG.items() if k != "tag"})
    assert WRITE.parse({**WRITE_MSG, "tags": None, "q": None}).q is None  # nil means absent


@pytest.mark.parametrize(
    "msg",
    [
        {"versions": 1},
        {"versions": [1.0]},
        {"versions": [True]},
        {},
        {"versions": [1], "token": 5},
        {"versions": [1], "client": b"c"},
    ],
)
def test_bad_hello_fields(msg: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        hello({"id": 1, "op": "hello", **msg})


def test_builders_check_lengths_and_ranges() -> None:
    with pytest.raises(InvalidInput, match="values"):
        WRITE.build(1, 1, [1, 2], [1.0])
    with pytest.raises(InvalidInput, match="q"):
        WRITE.build(1, 1, [1, 2], [1.0, 2.0], [192])
    with pytest.raises(InvalidInput, match="tags"):
        WRITE.build(1, [1], [1, 2], [1.0, 2.0])
    with pytest.raises(InvalidInput, match="tag"):
        WRITE.build(1, -1, [1], [1.0])
    with pytest.raises(InvalidInput):
        WRITE.build(1, [-1], [1], [1.0])
    with pytest.raises(InvalidInput):
        WRITE.build(1, 1, [1.5], [1.0])  # timestamps must be whole numbers
    with pytest.raises(InvalidInput):
        WRITE.build(1, 1, [1], [1.0], [256])
    with pytest.raises(InvalidInput, match="start"):
        QUERY.build(1, 1, True, 2)
    with pytest.raises(InvalidInput, match="limit"):
        QUERY.build(1, 1, 0, 2, limit=-1)
    with pytest.raises(InvalidInput, match="ts"):
        LAST.reply(1, [1, 2], [1], [1.0, 2.0], [0, 0])
    with pytest.raises(InvalidInput, match="q"):
        QUERY.reply(1, [1], [1.0], [])


# -- array codec ------------------------------------------------------------------


def test_pack_array_is_little_endian_raw_bytes() -> None:
    assert pack_array(np.array([1, -2]), "<i8") == b"\x01" + b"\x00" * 7 + b"\xfe" + b"\xff" * 7
    assert pack_array(np.array([1, 2], ">u4"), "<u4") == b"\x01\x00\x00\x00\x02\x00\x00\x00"
    assert pack_array([1.5], "<f8") == b"\x00\x00\x00\x00\x00\x00\xf8\x3f"
    assert pack_array([2.0, 3.0], "<i8") == pack_array([2, 3], "<i8")  # whole floats are fine
    assert pack_array([True, False], "u1") == b"\x01\x00"
    assert pack_array(np.array([2**63 - 1], np.uint64), "<i8") == b"\xff" * 7 + b"\x7f"


@pytest.mark.parametrize(
    ("arr", "dtype"),
    [
        (np.array([2**63], np.uint64), "<i8"),
        (np.array([-1]), "<u4"),
        (np.array([2**32]), "<u4"),
        (np.array([256]), "u1"),
        (np.array([2.0**63]), "<i8"),
        (np.array([np.nan]), "<i8"),
        (np.array([1.5]), "u1"),
        (np.array([[1, 2]]), "<i8"),
        (np.array(5), "<i8"),
        (np.array(["a"]), "<f8"),
        (np.array([1 + 2j]), "<f8"),
        (np.array(["2024-01-01"], "datetime64[us]"), "<i8"),
    ],
)
def test_pack_array_refuses_to_change_values(arr: np.ndarray, dtype: str) -> None:
    with pytest.raises(InvalidInput):
        pack_array(arr, dtype)


def test_unpack_array_is_zero_copy_and_read_only() -> None:
    raw = pack_array(np.arange(4), "<i8")
    arr = unpack_array(raw, "<i8", "ts", count=4)
    assert arr.tolist() == [0, 1, 2, 3]
    assert arr.base is raw or np.shares_memory(arr, np.frombuffer(raw, np.uint8))
    assert not arr.flags.writeable
    with pytest.raises(InvalidInput, match=r"'ts'.*multiple"):
        unpack_array(raw[:-1], "<i8", "ts")
    with pytest.raises(InvalidInput, match=r"'ts'.*3"):
        unpack_array(raw, "<i8", "ts", count=3)
    with pytest.raises(InvalidInput, match=r"'ts'.*bin"):
        unpack_array(list(range(4)), "<i8", "ts")
    with pytest.raises(ValueError):
        unpack_array(raw, "<i4", "ts")  # not a wire dtype: a programming error


# -- fuzz -------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=20))
def test_random_bytes_raise_only_xtsdb_errors(data: bytes, cuts: list[int]) -> None:
    dec = FrameDecoder(max_frame=4096)
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    for a, b in itertools.pairwise(bounds):
        with contextlib.suppress(XtsdbError):
            dec.feed(data[a:b])
        while True:
            try:
                msg = dec.next_message()
            except XtsdbError:
                continue
            if msg is None:
                break
            assert isinstance(msg, dict)
            try_parse(msg)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(min_size=1, max_size=300))
def test_random_bodies_in_valid_frames(body: bytes) -> None:
    dec = FrameDecoder()
    dec.feed(frame(body) + encode_frame(request("ping", 1)))
    try:
        msg = dec.next_message()
        assert msg is not None
        try_parse(msg)
    except XtsdbError:
        pass
    assert dec.next_message() == {"id": 1, "op": "ping"}


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(),
    st.text(max_size=5),
    st.binary(max_size=40),
)
values_st = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["code", "message"]), c),
    max_leaves=5,
)
REQUEST_FIELDS = ["id", "op", "tag", "tags", "ts", "values", "q", "start", "end", "limit"]
REQUEST_FIELDS += ["descending", "good_only", "interval", "aggregates", "origin", "times"]
REQUEST_FIELDS += ["method", "max_gap", "intervals", "name", "pattern", "unit", "retention_us"]
FIELDS = [*REQUEST_FIELDS, "versions", "token", "client", "ok", "error", "server", "auth"]


@settings(max_examples=500, deadline=None)
@given(
    op=st.sampled_from([*sorted(OPS), "nope"]),
    fields=st.dictionaries(st.sampled_from(FIELDS), values_st, max_size=8),
)
def test_random_messages_raise_only_xtsdb_errors(op: str, fields: dict[str, Any]) -> None:
    try_parse({"op": op, **fields})


def try_parse(msg: dict[str, Any]) -> None:
    """Run every parser over ``msg``; anything but an XtsdbError fails the test."""
    parsers: list[Any] = [parse_request_header, raise_for_error, parse_response_header, hello]
    for op in OPERATIONS.values():
        parsers += [op.parse, op.parse_answer]
    for parse in parsers:
        with contextlib.suppress(XtsdbError):
            parse(msg)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(0, 50),
    cuts=st.lists(st.integers(0, 10_000), max_size=10),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_writes_survive_random_splits(n: int, cuts: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    tags = rng.integers(0, 2**32, n, dtype=np.uint32)
    ts = rng.integers(-(2**62), 2**62, n)
    values = rng.standard_normal(n)
    q = rng.integers(0, 256, n, dtype=np.uint8)
    data = encode_frame(WRITE.build(3, tags, ts, values, q)) * 2
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    msgs = decode_all([data[a:b] for a, b in itertools.pairwise(bounds)])
    assert len(msgs) == 2
    for msg in msgs:
        out = WRITE.parse(msg)
        for got, want in zip(out, (tags, ts, values, q), strict=True):
            assert isinstance(got, np.ndarray)
            assert got.tobytes() == np.asarray(want).tobytes()


# -- the package and its documentation ------------------------------------------------


def test_protocol_package_does_no_io() -> None:
    code = (
        "import sys, xtsdb.protocol\n"
        "bad = {'asyncio', 'socket', 'selectors', 'ssl'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def doc_examples() -> dict[str, bytes]:
    text = DOC.read_text(encoding="utf-8")
    found = re.findall(r"<!-- frame: (\w+) -->\s*```hex\n(.*?)```", text, re.S)
    return {name: bytes.fromhex(hexdump) for name, hexdump in found}


def test_documented_frames_match_the_code() -> None:
    expected = {
        "ping_request": encode_frame(request("ping", 1)),
        "ping_response": encode_frame(ok_response(1)),
        "write_request": encode_frame(
            WRITE.build(
                2,
                7,
                np.array([1_700_000_000_000_000, 1_700_000_001_000_000]),
                [1.5, -0.25],
                [192, 0],
            )
        ),
        "write_response": encode_frame(ok_response(2, n=2, lsn=1)),
        "error_response": encode_frame(error_response(3, UnknownOperation("unknown op 'nope'"))),
    }
    assert doc_examples() == expected


def test_documented_write_example_decodes() -> None:
    dec = FrameDecoder()
    dec.feed(doc_examples()["write_request"])
    msg = dec.next_message()
    assert msg is not None
    tag, ts, values, q = WRITE.parse(msg)
    assert tag == 7 and ts.tolist() == [1_700_000_000_000_000, 1_700_000_001_000_000]
    assert values.tolist() == [1.5, -0.25] and q is not None and q.tolist() == [192, 0]


def test_kinds_that_read_several_keys_say_so() -> None:
    # The message codec reads one_key kinds inline (the hot path) and calls put/take
    # only for the others: a kind overriding put or take must not claim one_key.
    for op in OPERATIONS.values():
        for message in (op.request, op.response):
            for spec in specs(message):
                kind = type(spec.kind)
                custom = kind.put is not Kind.put or kind.take is not Kind.take
                assert custom is not spec.kind.one_key, (op.name, spec.name)


def test_doc_op_reference_is_generated_from_the_declarations() -> None:
    # Regenerate with: python -m xtsdb.protocol.opdocs docs/protocol.md
    text = DOC.read_text(encoding="utf-8")
    assert opdocs.rewrite(text) == text
    for op in OPERATIONS.values():
        assert opdocs.render(op) in text


def test_doc_lists_every_error_code_and_every_op() -> None:
    text = DOC.read_text(encoding="utf-8")
    for code, cls in errors.ERROR_CLASSES.items():
        assert re.search(rf"^\| {code} +\| `{cls.name}` +\| `{cls.__name__}`", text, re.M), cls
    for op in OPS:
        assert f"### {op}\n" in text
    assert str(DEFAULT_MAX_FRAME // (1024 * 1024)) + " MiB" in text
