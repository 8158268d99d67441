"""The server over real sockets on 127.0.0.1, spoken to with raw frames (no client SDK)."""

from __future__ import annotations

import asyncio
import logging
import statistics
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
import pytest

from xtsdb.protocol import LAST, QUERY, WRITE, FrameDecoder, encode_frame, request
from xtsdb.protocol.errors import (
    FrameTooLarge,
    InternalError,
    InvalidInput,
    Overloaded,
    ProtocolError,
    UnknownOperation,
    UnsupportedVersion,
)
from xtsdb.server import app
from xtsdb.server.app import ServerThread, serve
from xtsdb.server.config import ServerConfig
from xtsdb.server.engine import Engine, Points

if TYPE_CHECKING:
    from conftest import RawConn

Raw = Callable[..., "RawConn"]


def write(conn: RawConn, tags: Any, ts: Any, values: Any, q: Any = None) -> dict[str, Any]:
    req_id = conn.next_id()
    conn.send(WRITE.build(req_id, tags, ts, values, q))
    resp = conn.recv()
    assert resp["id"] == req_id
    return resp


def query(conn: RawConn, tag: int, start: int = 0, end: int = 1 << 50) -> tuple[Any, Any, Any]:
    req_id = conn.next_id()
    conn.send(QUERY.build(req_id, tag, start, end))
    resp = conn.recv()
    assert resp["id"] == req_id
    p = QUERY.parse_answer(resp)
    return p.ts, p.values, p.q


def server_stats(conn: RawConn) -> dict[str, Any]:
    resp = conn.call("stats")
    assert resp["ok"], resp
    stats: dict[str, Any] = resp["stats"]["server"]
    return stats


def error_code(resp: dict[str, Any]) -> int:
    assert resp["ok"] is False, resp
    code: int = resp["error"]["code"]
    return code


def test_hello_and_ping(server: ServerThread, raw: Raw) -> None:
    conn = raw(server)
    hello = conn.call("hello", versions=[1], token="ignored-for-now", client="test")
    assert hello["ok"] and hello["version"] == 1 and hello["auth"] is False
    assert hello["server"].startswith("xtsdb/") and hello["max_frame"] == server.config.max_frame
    assert error_code(conn.call("hello", versions=[7, 8])) == UnsupportedVersion.code
    assert conn.call("ping")["ok"] is True
    assert server.url == f"xtsdb://127.0.0.1:{server.port}"


def test_write_then_query_round_trip(server: ServerThread, raw: Raw) -> None:
    conn = raw(server)
    ts = np.arange(1_000, 3_500, dtype=np.int64) * 1000
    values = np.sin(np.arange(ts.size) / 50.0)
    q = np.where(np.arange(ts.size) % 7 == 0, 0, 192).astype(np.uint8)
    resp = write(conn, 42, ts, values, q)
    assert resp["ok"] and resp["n"] == ts.size and isinstance(resp["lsn"], int)
    got_ts, got_values, got_q = query(conn, 42)
    np.testing.assert_array_equal(got_ts, ts)
    np.testing.assert_array_equal(got_values, values)
    np.testing.assert_array_equal(got_q, q)
    # half-open range and limit
    resp = conn.call("query", tag=42, start=int(ts[10]), end=int(ts[20]), limit=5)
    sub_ts = QUERY.parse_answer(resp).ts
    np.testing.assert_array_equal(sub_ts, ts[10:15])
    assert set(resp["stats"]) >= {"points_from_memory", "points_from_disk"}


def test_multi_tag_write_and_last(server: ServerThread, raw: Raw) -> None:
    conn = raw(server)
    n = 600
    tags = np.tile(np.array([1, 2, 3], dtype=np.uint32), n // 3)  # interleaved, one frame
    ts = np.repeat(np.arange(n // 3, dtype=np.int64), 3) + 10
    values = tags * 1000.0 + ts
    assert write(conn, tags, ts, values)["n"] == n
    for tag in (1, 2, 3):
        got_ts, got_values, _ = query(conn, tag)
        np.testing.assert_array_equal(got_ts, np.arange(n // 3) + 10)
        np.testing.assert_array_equal(got_values, tag * 1000.0 + got_ts)
    req_id = conn.next_id()
    conn.send(LAST.build(req_id, [3, 1, 99]))
    last_tags, last_ts, last_values, _, _ = LAST.parse_answer(conn.recv())
    assert sorted(last_tags.tolist()) == [1, 3]  # tag 99 has no data
    assert set(last_ts.tolist()) == {n // 3 - 1 + 10}
    np.testing.assert_array_equal(np.sort(last_values), np.array([1000.0, 3000.0]) + n // 3 + 9)


def test_pipelined_requests_on_one_connection(server: ServerThread, raw: Raw) -> None:
    conn = raw(server)
    base = np.arange(100, dtype=np.int64)
    assert write(conn, 7, base, base * 2.0)["ok"]
    sent: dict[int, str] = {}
    frames = []
    for i in range(40):  # writes of new data interleaved with queries of acknowledged data
        wid, qid = conn.next_id(), conn.next_id()
        ts = 1_000 + i * 10 + np.arange(10, dtype=np.int64)
        frames.append(encode_frame(WRITE.build(wid, 8, ts, ts * 3.0)))
        frames.append(encode_frame(QUERY.build(qid, 7, 0, 100)))
        sent[wid], sent[qid] = "write", "query"
    conn.send_raw(b"".join(frames))  # one burst: the server sees them back to back
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(len(sent)):
        resp = conn.recv()
        assert resp["ok"], resp
        seen[resp["id"]] = resp
    assert seen.keys() == sent.keys()
    for req_id, op in sent.items():
        if op == "write":
            assert seen[req_id]["n"] == 10
        else:
            np.testing.assert_array_equal(QUERY.parse_answer(seen[req_id]).values, base * 2.0)
    got_ts, got_values, _ = query(conn, 8)
    assert got_ts.size == 400
    np.testing.assert_array_equal(got_values, got_ts * 3.0)


def test_many_concurrent_connections(server: ServerThread, raw: Raw) -> None:
    n_conns, n_batches, batch = 20, 5, 200
    conns = [raw(server) for _ in range(n_conns)]
    errors: list[BaseException] = []

    def worker(i: int, conn: RawConn) -> None:
        try:
            for b in range(n_batches):
                ts = np.arange(b * batch, (b + 1) * batch, dtype=np.int64)
                assert write(conn, 100 + i, ts, ts + i / 100.0)["ok"]
            got_ts, got_values, _ = query(conn, 100 + i)
            np.testing.assert_array_equal(got_ts, np.arange(n_batches * batch))
            np.testing.assert_array_equal(got_values, got_ts + i / 100.0)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    stats = server_stats(conns[0])
    assert stats["connections"] == n_conns
    assert stats["writes"] == n_conns * n_batches
    assert stats["points_written"] == n_conns * n_batches * batch
    assert 1 <= stats["commits"] <= stats["writes"]


def test_bad_body_costs_one_frame_and_bad_prefix_closes(server: ServerThread, raw: Raw) -> None:
    victim, bystander = raw(server), raw(server, timeout=5)
    # A frame whose body is not a msgpack map: error with id None, stream stays usable.
    body = b"\xc1garbage"
    victim.send_raw(struct.pack(">I", len(body)) + body)
    resp = victim.recv()
    assert resp["id"] is None and error_code(resp) == ProtocolError.code
    assert victim.call("ping")["ok"]
    # A zero length prefix cannot be framed: one error, then the server hangs up.
    victim.send_raw(b"\x00\x00\x00\x00more bytes that will never be read")
    resp = victim.recv()
    assert resp["id"] is None and error_code(resp) == ProtocolError.code
    assert victim.is_closed_by_server()
    # Everyone else is unaffected.
    assert bystander.call("ping")["ok"]
    assert write(bystander, 5, [1, 2, 3], [1.0, 2.0, 3.0])["n"] == 3


def test_oversize_length_prefix_is_refused_before_buffering(
    server_factory: Callable[..., ServerThread], raw: Raw
) -> None:
    srv = server_factory(max_frame=4096)
    conn, other = raw(srv, timeout=5), raw(srv)
    conn.send_raw(struct.pack(">I", 1 << 30))  # 1 GiB announced; never sent
    resp = conn.recv()
    assert resp["id"] is None and error_code(resp) == FrameTooLarge.code
    assert conn.is_closed_by_server()
    # A real frame just over the limit is refused the same way.
    big = raw(srv, timeout=5)
    ts = np.arange(400, dtype=np.int64)
    big.send(WRITE.build(1, 1, ts, ts * 1.0))
    assert error_code(big.recv()) == FrameTooLarge.code
    assert big.is_closed_by_server()
    assert other.call("ping")["ok"]
    assert query(other, 1)[0].size == 0


def test_a_refused_frame_is_answered_while_its_body_is_still_coming(
    server_factory: Callable[..., ServerThread], raw: Raw
) -> None:
    """The answer to a too-large frame must reach a client that is still sending it.

    Closing a socket with unread bytes sends a reset, which destroyed the answer
    (and failed the client's send) whenever the body was still arriving: the
    server now half-closes after the answer and drops what follows.
    """
    srv = server_factory(max_frame=4096)
    body = b"\0" * (2 << 20)  # far more than the socket buffers hold
    for _ in range(20):
        conn = raw(srv, timeout=10)
        conn.send_raw(struct.pack(">I", 1 << 30) + body)  # fails on a reset
        resp = conn.recv()
        assert resp["id"] is None and error_code(resp) == FrameTooLarge.code
        assert conn.is_closed_by_server()
        conn.close()


def test_unknown_op_and_bad_header(server: ServerThread, raw: Raw) -> None:
    conn = raw(server)
    conn.send({"id": 5, "op": "drop_database"})
    resp = conn.recv()
    assert resp["id"] == 5 and error_code(resp) == UnknownOperation.code
    conn.send({"op": "ping"})  # no id: answered with id None
    resp = conn.recv()
    assert resp["id"] is None and error_code(resp) == ProtocolError.code
    conn.send({"id": "seven", "op": "ping"})
    assert error_code(conn.recv()) == ProtocolError.code
    assert conn.call("ping")["ok"]


def test_wrong_types_are_refused_and_change_nothing(server: ServerThread, raw: Raw) -> None:
    conn = raw(server)
    ts = np.arange(5, dtype="<i8").tobytes()
    vals = np.ones(5, dtype="<f8").tobytes()
    bad_writes: list[dict[str, Any]] = [
        {"tag": b"x", "ts": ts, "values": vals},  # tag neither an int nor a name
        {"tag": 9, "ts": "not bytes", "values": vals},  # ts not bin
        {"tag": 9, "ts": ts, "values": [1.0, 2.0, 3.0, 4.0, 5.0]},  # values not bin
        {"tag": 9, "ts": ts, "values": vals[:-8]},  # length mismatch
        {"tag": 9, "ts": ts[:-3], "values": vals},  # ts not a whole number of int64s
        {"tag": 9, "tags": np.full(5, 9, "<u4").tobytes(), "ts": ts, "values": vals},
        {"tag": -1, "ts": ts, "values": vals},  # out of range
        {"tag": 9, "ts": np.array([0, 1, 2, 3, 1 << 61], "<i8").tobytes(), "values": vals},
        {"tag": 9, "ts": ts, "values": vals, "q": b"\x01\x02"},
    ]
    for fields in bad_writes:
        resp = conn.call("write", **fields)
        assert error_code(resp) == InvalidInput.code, (fields, resp)
    bad_queries: list[dict[str, Any]] = [
        {"tag": 9, "start": "0", "end": 10},
        {"tag": 9, "start": 0},
        {"tag": 1.5},
    ]
    for fields in bad_queries:
        assert error_code(conn.call("query", **fields)) == InvalidInput.code
    assert error_code(conn.call("last", tags=[1.5, 2])) == InvalidInput.code
    assert query(conn, 9)[0].size == 0
    stats = server_stats(conn)
    assert stats["writes"] == 0 and stats["errors"]["invalid_input"] >= len(bad_writes)


def test_connection_cap(server_factory: Callable[..., ServerThread], raw: Raw) -> None:
    srv = server_factory(max_connections=2)
    first, second = raw(srv), raw(srv)
    assert first.call("ping")["ok"] and second.call("ping")["ok"]
    third = raw(srv, timeout=5)
    resp = third.recv()
    assert resp["id"] is None and error_code(resp) == Overloaded.code
    assert third.is_closed_by_server()
    first.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the server notices the close asynchronously
        fourth = raw(srv, timeout=5)
        resp = fourth.call("ping")
        if resp["ok"]:
            break
        time.sleep(0.02)
    assert resp["ok"]
    assert server_stats(second)["connections_refused"] >= 1


def test_idle_connections_are_closed(server_factory: Callable[..., ServerThread], raw: Raw) -> None:
    srv = server_factory(idle_timeout=0.3)
    idle, busy = raw(srv, timeout=5), raw(srv, timeout=5)
    start = time.monotonic()
    for _ in range(8):  # busy keeps talking for ~0.8 s
        assert busy.call("ping")["ok"]
        time.sleep(0.1)
    assert idle.is_closed_by_server()
    assert time.monotonic() - start < 3
    assert busy.call("ping")["ok"]


def test_backpressure_bounds_unanswered_bytes(
    server_factory: Callable[..., ServerThread], raw: Raw
) -> None:
    limit = 64 * 1024
    srv = server_factory(max_pending_bytes=limit)
    writer, observer = raw(srv, timeout=20), raw(srv)
    n_frames, per_frame = 150, 2000
    frames = []
    for i in range(n_frames):
        ts = i * per_frame + np.arange(per_frame, dtype=np.int64)
        frames.append(encode_frame(WRITE.build(i + 1, 77, ts, ts * 0.5)))
    frame_size = max(len(f) for f in frames)
    # Send everything without reading a single response (sendall blocks while the
    # server is not reading; the server must keep committing meanwhile).
    sender = threading.Thread(target=writer.send_raw, args=(b"".join(frames),))
    sender.start()
    sender.join(20)
    assert not sender.is_alive()
    acked = {}
    for _ in range(n_frames):
        resp = writer.recv()
        assert resp["ok"], resp
        acked[resp["id"]] = resp["n"]
    assert acked == {i + 1: per_frame for i in range(n_frames)}
    stats = server_stats(observer)
    assert stats["read_pauses"] >= 1
    # Never more than the limit plus the one frame that crossed it.
    assert stats["pending_bytes_peak"] <= limit + frame_size + 1024
    got_ts, got_values, _ = query(observer, 77)
    assert got_ts.size == n_frames * per_frame
    np.testing.assert_array_equal(got_values, got_ts * 0.5)


def test_full_write_queue_pauses_all_readers(
    server_factory: Callable[..., ServerThread], raw: Raw
) -> None:
    srv = server_factory(max_queue_bytes=64 * 1024)
    conns = [raw(srv, timeout=20) for _ in range(4)]
    per_frame, n_frames = 1000, 30
    senders = []
    for c_i, conn in enumerate(conns):
        frames = [
            encode_frame(WRITE.build(f + 1, 200 + c_i, ts, ts * 1.0))
            for f in range(n_frames)
            for ts in [f * per_frame + np.arange(per_frame, dtype=np.int64)]
        ]
        senders.append(threading.Thread(target=conn.send_raw, args=(b"".join(frames),)))
    for t in senders:
        t.start()
    for t in senders:
        t.join(20)
    for conn in conns:
        assert all(conn.recv()["ok"] for _ in range(n_frames))
    stats = server_stats(conns[0])
    assert stats["queue_pauses"] >= 1 and stats["queue_paused"] is False
    assert stats["points_written"] == len(conns) * n_frames * per_frame


def test_lone_write_is_not_delayed_by_the_idle_tick(
    server_factory: Callable[..., ServerThread], raw: Raw
) -> None:
    # durability=none takes fsync out of the timing; what is left is the queue.
    srv = server_factory(durability="none")
    conn = raw(srv)
    latencies = []
    for i in range(30):
        t0 = time.perf_counter()
        assert write(conn, 3, [i], [float(i)])["ok"]
        latencies.append(time.perf_counter() - t0)
        time.sleep(0.001)  # let the flush task go back to waiting on the queue
    assert statistics.median(latencies) < 0.005, latencies


def test_hand_made_request_dicts_work(server: ServerThread, raw: Raw) -> None:
    # What a client in another language sends: plain msgpack with raw arrays.
    conn = raw(server)
    body = msgpack.packb(
        {
            "id": 1,
            "op": "write",
            "tag": 11,
            "ts": np.array([5, 6], "<i8").tobytes(),
            "values": np.array([0.5, 0.25], "<f8").tobytes(),
        },
        use_bin_type=True,
    )
    conn.send_raw(struct.pack(">I", len(body)) + body)
    assert conn.recv()["n"] == 2
    conn.send(request("flush", 2))
    assert conn.recv()["ok"]
    np.testing.assert_array_equal(query(conn, 11)[1], [0.5, 0.25])


class _FaultyEngine(Engine):
    """The real engine with one injected fault: ``query`` hits a bug."""

    def query(self, *args: Any, **kwargs: Any) -> Points:
        raise RuntimeError("injected fault")


def test_unexpected_exception_becomes_internal_error(
    server_factory: Callable[..., ServerThread],
    raw: Raw,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(app, "Engine", _FaultyEngine)
    srv = server_factory()
    conn = raw(srv)
    with caplog.at_level(logging.ERROR, logger="xtsdb.server"):
        resp = conn.call("query", tag=1, start=0, end=10)
    assert error_code(resp) == InternalError.code and "injected fault" in resp["error"]["message"]
    assert any(r.exc_info and "injected fault" in str(r.exc_info[1]) for r in caplog.records)
    assert write(conn, 1, [1], [1.0])["ok"]  # the server and the connection carry on
    assert server_stats(conn)["errors"]["internal"] == 1


def test_graceful_stop_answers_and_keeps_queued_writes(
    server_factory: Callable[..., ServerThread], raw: Raw
) -> None:
    srv = server_factory()
    conn = raw(srv, timeout=20)
    n_frames, per_frame = 40, 5000
    frames = [
        encode_frame(WRITE.build(i + 1, 300, ts, ts * 2.0))
        for i in range(n_frames)
        for ts in [i * per_frame + np.arange(per_frame, dtype=np.int64)]
    ]
    conn.send_raw(b"".join(frames) + encode_frame(request("ping", 999)))
    answers = {}
    while 999 not in answers:  # the ping is answered once every write before it is queued
        resp = conn.recv()
        answers[resp["id"]] = resp
    stopper = threading.Thread(target=srv.stop)
    stopper.start()  # stop while commits are still running
    while len(answers) < n_frames + 1:
        resp = conn.recv()
        answers[resp["id"]] = resp
    stopper.join(30)
    assert not stopper.is_alive()
    assert all(r["ok"] for r in answers.values())
    assert conn.is_closed_by_server()
    again = server_factory(data_dir=srv.data_dir)
    got_ts, got_values, _ = query(raw(again), 300)
    assert got_ts.size == n_frames * per_frame
    np.testing.assert_array_equal(got_values, got_ts * 2.0)


async def test_serve_on_a_plain_asyncio_loop(tmp_path: Path) -> None:
    # serve() is what main and ServerThread run; here it shares pytest's (non-uvloop) loop.
    assert "uvloop" not in type(asyncio.get_running_loop()).__module__
    shutdown = asyncio.Event()
    ready: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    config = ServerConfig(
        port=0, http_port=0, data_dir=tmp_path / "d", chunk_size=256 * 1024, meta_extents=1
    )
    task = asyncio.create_task(serve(config, shutdown, lambda h, p: ready.set_result((h, p))))
    try:
        host, port = await asyncio.wait_for(ready, 30)
        reader, writer = await asyncio.open_connection(host, port)
        ts = np.arange(100, dtype=np.int64)
        writer.write(encode_frame(WRITE.build(1, 5, ts, ts * 1.5)))
        writer.write(encode_frame(QUERY.build(2, 5, 0, 100)))  # may overtake the write
        decoder = FrameDecoder()
        answers: dict[int, dict[str, Any]] = {}
        while len(answers) < 2:
            decoder.feed(await asyncio.wait_for(reader.read(1 << 16), 10))
            for msg in decoder:
                answers[msg["id"]] = msg
        assert answers[1]["n"] == 100 and answers[2]["ok"]
        writer.write(encode_frame(QUERY.build(3, 5, 0, 100)))
        while (msg := decoder.next_message()) is None:
            decoder.feed(await asyncio.wait_for(reader.read(1 << 16), 10))
        np.testing.assert_array_equal(QUERY.parse_answer(msg).values, ts * 1.5)
        writer.close()
    finally:
        shutdown.set()
        await asyncio.wait_for(task, 30)


def test_requests_of_a_vanished_connection_are_closed_not_leaked(server: ServerThread) -> None:
    """Queries pipelined by a client that resets at once: their never-started request
    coroutines are closed, not left for the garbage collector to report."""
    import gc
    import socket
    import warnings

    from xtsdb.client import connect

    with connect(server.url) as db:
        db.write(1, np.arange(50_000, dtype=np.int64), np.zeros(50_000))
    frames = b"".join(
        encode_frame({"op": "query", "id": i, "tag": 1, "start": 0, "end": 1 << 60})
        for i in range(40)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(20):
            s = socket.create_connection(server.address)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(frames)
            s.close()  # RST: the server cancels what it queued for this connection
        with connect(server.url) as db:  # still serving; let the server run its callbacks
            assert len(db.query(1, 0, 1 << 60)) == 50_000
        time.sleep(0.3)
        gc.collect()
    leaked = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert leaked == []
