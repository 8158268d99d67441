"""Hostile bytes against a real server process, and slow-loris senders.

The fuzzer sends what hypothesis makes -- random bytes, cut frames, huge or
zero length prefixes, frames whose msgpack claims giant arrays, maps, strings
or nesting, well-formed requests with wrong field types, unknown ops, extreme
and NaN timestamps -- each case on its own connection, which it then
half-closes. After every case:

- every answer the server sent is a well-formed response, and none is an
  ``internal`` error (a bug, not a refusal);
- the server process is alive, and a separate healthy connection still gets
  exactly the right answers;
- at the end, the server's peak RSS (``VmHWM`` from ``/proc/<pid>/status``)
  stayed within a bound: nothing a stranger sends is buffered beyond one frame.

The server is a subprocess so its memory is its own, not pytest's and
hypothesis's. It runs twice: open, and with a token configured, where every
case comes from a stranger and must get nothing but errors and pongs. The run
is derandomized: CI sees the same 150 cases every time.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xtsdb.protocol import OPS, QUERY, WRITE, FrameDecoder, encode_frame, parse_response_header
from xtsdb.protocol.errors import ERROR_CLASSES, FrameTooLarge, InternalError
from xtsdb.server.app import ServerThread
from xtsdb.server.process import ServerProcess, server_env

if TYPE_CHECKING:
    from conftest import RawConn

MAX_FRAME = 1 << 20
HEALTH_TAG = 3_141_592_653
HEALTH_TS = np.arange(0, 5_000, dtype=np.int64) * 1_000
HEALTH_VALUES = np.cos(np.arange(HEALTH_TS.size) / 7.0)
INT64 = (-(1 << 63), (1 << 63) - 1)
RSS_GROWTH_LIMIT = 32 << 20  # bytes over the RSS measured before the first case
TOKEN = "write-fuzz-0123456789abcdef"  # the healthy client's; fuzz cases never send it


# -- the server process ---------------------------------------------------------------


class FuzzServer:
    def __init__(self, srv: ServerProcess, auth: bool) -> None:
        self.srv, self.address, self.auth = srv, srv.address, auth

    def status(self, key: str) -> int:
        """A ``/proc/<pid>/status`` field in bytes (``VmRSS``, ``VmHWM``)."""
        for line in Path(f"/proc/{self.srv.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)


SMALL = ["--chunk-size", "256KiB", "--meta-extents", "1", "--block-points", "1000"]


@pytest.fixture(scope="module", params=["open", "tokens"])
def fuzz_server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[FuzzServer]:
    """A server process; with ``tokens`` every fuzz case comes from a stranger."""
    d = tmp_path_factory.mktemp("fuzz")
    args = ["--port", "0", "--data-dir", str(d / "data"), "--max-frame", str(MAX_FRAME), *SMALL]
    args += ["--read-workers", "1", "--log-level", "WARNING"]
    if request.param == "tokens":
        args += ["--token", f"write:{TOKEN}"]
    # No metrics HTTP port to collide with other servers.
    with ServerProcess(args, workdir=d, env=server_env(XTSDB_HTTP_PORT="-1")) as srv:
        srv.wait_ready()
        yield FuzzServer(srv, request.param == "tokens")


def send_case(address: tuple[str, int], data: bytes) -> list[dict[str, Any]]:
    """Send ``data`` on a new connection, half-close it, return every response until EOF."""
    decoder = FrameDecoder(1 << 30)
    with socket.create_connection(address, timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # the server may hang up before it has read everything
            sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 16):  # the server closes once it answered all
                decoder.feed(chunk)
    return list(decoder)


def check_responses(responses: list[dict[str, Any]], stranger: bool) -> None:
    for resp in responses:
        _id, ok = parse_response_header(resp)
        if ok and stranger:  # without a token, nothing but a pong: no data, no write
            assert set(resp) == {"id", "ok"}, resp
        if not ok:
            err = resp["error"]
            assert err["code"] in ERROR_CLASSES and isinstance(err["message"], str), resp
            assert err["code"] != InternalError.code, resp


def check_healthy(conn: RawConn) -> None:
    assert conn.call("ping")["ok"]
    req_id = conn.next_id()
    conn.send(QUERY.build(req_id, HEALTH_TAG, 0, 1 << 40))
    ts, values, q, _, _ = QUERY.parse_answer(conn.recv())
    np.testing.assert_array_equal(ts, HEALTH_TS)
    np.testing.assert_array_equal(values, HEALTH_VALUES)
    assert (q == 192).all()


# -- strategies -------------------------------------------------------------------------

DATA_FIELDS = ["id", "op", "tag", "tags", "ts", "values", "q", "start", "end", "limit"]
FIELDS = [*DATA_FIELDS, "versions", "token", "client"]  # and the hello's
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT64[0], (1 << 64) - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=16),
    st.binary(max_size=64),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
ops = st.sampled_from(sorted(OPS)) | st.sampled_from(["", "drop", "PING", "ping\x00", "ü" * 30])
ids = st.integers(0, 1000) | values


@st.composite
def wrong_types(draw: st.DrawFn) -> bytes:
    """A map with an id and an op, and fields of any type at all."""
    msg: dict[str, Any] = {"id": draw(ids), "op": draw(ops)}
    for name in draw(st.lists(st.sampled_from(FIELDS) | st.text(max_size=6), max_size=6)):
        msg[name] = draw(values)
    return encode_frame(msg, 1 << 30)


def i64_bytes(xs: list[int]) -> bytes:
    return np.array(xs, dtype="<i8").tobytes()


@st.composite
def extreme_writes(draw: st.DrawFn) -> bytes:
    """Well-typed writes and queries with timestamps anywhere in int64, NaN values."""
    ts = draw(st.lists(st.integers(*INT64), min_size=1, max_size=40))
    floats = st.floats(allow_nan=True, allow_infinity=True)
    vals = draw(st.lists(floats, min_size=len(ts), max_size=len(ts)))
    tag = draw(st.integers(0, (1 << 32) - 1).filter(lambda t: t != HEALTH_TAG))
    body = np.array(vals, "<f8").tobytes()
    write = {"id": 1, "op": "write", "tag": tag, "ts": i64_bytes(ts), "values": body}
    bound = st.integers(*INT64) | st.floats(allow_nan=True) | st.sampled_from([float("nan")])
    query = {"id": 2, "op": "query", "tag": tag, "start": draw(bound), "end": draw(bound)}
    return encode_frame(write) + encode_frame(query)


def frame_of(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


huge_claims = st.sampled_from(
    [
        b"\xdd\xff\xff\xff\xff",  # array32 of 4G elements
        b"\xdf\xff\xff\xff\xff",  # map32 of 4G entries
        b"\xc6\xff\xff\xff\xff",  # bin32 of 4 GiB
        b"\xdb\x7f\xff\xff\xff",  # str32 of 2 GiB
        b"\x82\xa2id\x01\xa2op\xdd\x00\x10\x00\x00",  # op: array of 1M elements, none sent
        b"\x83\xa2id\x01\xa2op\xa5write\xa2ts\xc6\x7f\xff\xff\xff",
    ]
).map(frame_of)
nested = st.builds(
    lambda depth, head: frame_of(head * depth + b"\xc0"),
    st.integers(50, 5000),
    st.sampled_from([b"\x91", b"\x81\xa1k", b"\x92\xc0"]),
)
truncated = st.builds(
    lambda frame, cut: frame[: max(1, cut % len(frame))], wrong_types(), st.integers(0, 1 << 16)
)
bad_prefix = st.builds(
    lambda n, tail: struct.pack(">I", n) + tail,
    st.sampled_from([0, MAX_FRAME + 1, 1 << 31, (1 << 32) - 1]) | st.integers(0, (1 << 32) - 1),
    st.binary(max_size=64),
)
one_case = st.one_of(
    st.binary(min_size=1, max_size=512),
    truncated,
    bad_prefix,
    wrong_types(),
    huge_claims,
    nested,
    extreme_writes(),
)
cases = st.lists(one_case, min_size=1, max_size=4).map(b"".join)  # pipelined, back to back


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_protocol_fuzz_keeps_the_server_healthy_and_bounded(fuzz_server: FuzzServer) -> None:
    from conftest import RawConn

    healthy = RawConn(fuzz_server.address)
    assert healthy.call("hello", versions=[1], token=TOKEN)["ok"]
    req_id = healthy.next_id()
    healthy.send(WRITE.build(req_id, HEALTH_TAG, HEALTH_TS, HEALTH_VALUES))
    assert healthy.recv()["n"] == HEALTH_TS.size
    check_healthy(healthy)
    baseline = fuzz_server.status("VmRSS")
    seen: list[int] = []

    same_cases = settings(max_examples=150, deadline=None, derandomize=True, database=None)

    @settings(same_cases, suppress_health_check=list(HealthCheck))
    @given(data=cases)
    def run(data: bytes) -> None:
        check_responses(send_case(fuzz_server.address, data), fuzz_server.auth)
        assert fuzz_server.srv.running(), fuzz_server.srv.log_tail()
        check_healthy(healthy)
        seen.append(len(data))

    try:
        run()
    finally:
        healthy.close()
    assert len(seen) >= 100
    peak = fuzz_server.status("VmHWM")
    assert peak - baseline < RSS_GROWTH_LIMIT, (baseline, peak)
    assert "Traceback" not in fuzz_server.srv.log()


def test_huge_prefix_is_refused_before_buffering(fuzz_server: FuzzServer) -> None:
    # Announce a frame just under 4 GiB and send 8 MiB of it: refused on the prefix.
    before = fuzz_server.status("VmRSS")
    with socket.create_connection(fuzz_server.address, timeout=10) as sock:
        sock.sendall(struct.pack(">I", (1 << 32) - 1))
        decoder = FrameDecoder()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(128):
                sock.sendall(b"\0" * (1 << 16))
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 16):
                decoder.feed(chunk)
    [resp] = list(decoder)
    assert resp["error"]["code"] == FrameTooLarge.code
    assert fuzz_server.status("VmRSS") - before < 4 << 20


# -- slow loris --------------------------------------------------------------------------------


def test_slow_loris_is_cut_off_by_frame_timeout(
    server_factory: Callable[..., ServerThread], raw: Callable[..., RawConn]
) -> None:
    srv = server_factory(frame_timeout=0.5, idle_timeout=0)
    loris, honest, observer = raw(srv, timeout=10), raw(srv, timeout=10), raw(srv, timeout=10)
    frame = encode_frame(QUERY.build(1, 1, 0, 10))
    # Honest but fragmented: the same frame in three pieces, quickly.
    for piece in (frame[:2], frame[2:9], frame[9:]):
        honest.send_raw(piece)
        time.sleep(0.01)
    assert honest.recv()["ok"]
    # The loris announces a frame and sends one byte every 0.1 s: always active, never done.
    loris.send_raw(struct.pack(">I", 1000))
    cut_off = False
    for _ in range(100):  # at most 10 s
        try:
            loris.send_raw(b"\x00")
        except (BrokenPipeError, ConnectionResetError):
            cut_off = True
            break
        time.sleep(0.1)
    assert cut_off or loris.is_closed_by_server()
    assert observer.call("ping")["ok"]
    stats = observer.call("stats")["stats"]["server"]
    assert stats["connections_frame_timeout"] == 1 and stats["connections"] == 2


def test_frame_timeout_leaves_big_pipelined_bursts_alone(
    server_factory: Callable[..., ServerThread], raw: Callable[..., RawConn]
) -> None:
    # Backpressure pauses reading mid-frame; that delay is the server's, not the
    # client's, and must not count against frame_timeout.
    srv = server_factory(frame_timeout=0.5, max_pending_bytes=16 * 1024)
    conn = raw(srv, timeout=30)
    frames = b"".join(
        encode_frame(WRITE.build(i + 1, 9, ts, ts * 1.0))
        for i in range(200)
        for ts in [i * 1000 + np.arange(1000, dtype=np.int64)]
    )
    conn.send_raw(frames)  # ~3.4 MB, far beyond what the server reads at once
    acks = [conn.recv() for _ in range(200)]
    assert all(a["ok"] for a in acks)
    stats = conn.call("stats")["stats"]["server"]
    assert stats["connections_frame_timeout"] == 0
