"""The client SDK: sans-I/O pieces as bytes in/out, then both clients against a real server.

Adversity comes from real sockets: a listener that never answers, a server
that answers only ``hello``, and a TCP proxy that drops a connection with a
request in flight. Nothing here mocks the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from xtsdb.client import AsyncClient, Client, QueryResult, connect
from xtsdb.client._convert import to_us
from xtsdb.client._core import ClientCore, Session, Step, parse_url
from xtsdb.client.point_buffer import PointBuffer
from xtsdb.protocol import HELLO, FrameDecoder, encode_frame, ok_response
from xtsdb.protocol.errors import (
    InvalidInput,
    XtsdbConnectionError,
    XtsdbTimeout,
)
from xtsdb.server.app import ServerThread

BIG = 1 << 50


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


# -- sans-I/O ------------------------------------------------------------------------


def test_parse_url() -> None:
    assert parse_url("xtsdb://db.local") == ("db.local", 7878)
    assert parse_url("xtsdb://127.0.0.1:9000/") == ("127.0.0.1", 9000)
    assert parse_url("xtsdb://[::1]:9000") == ("::1", 9000)
    assert parse_url("xtsdbs://db.local:7878") == ("db.local", 7878)  # TLS: tests/test_tls.py
    for bad in ("http://x:1", "xtsdb://", "xtsdb://x:99999", "xtsdb://u:p@x:1", "xtsdb://x/db"):
        with pytest.raises(InvalidInput):
            parse_url(bad)


def test_to_us_is_exact_and_refuses_naive() -> None:
    aware = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert to_us(aware) == 1714557600123456
    assert to_us(np.datetime64("2024-05-01T10:00:00.123456")) == 1714557600123456
    assert to_us(np.int64(5)) == 5
    with pytest.raises(InvalidInput, match="naive"):
        to_us(datetime(2024, 5, 1))
    with pytest.raises(InvalidInput):
        to_us("2024-05-01")


def test_point_buffer_checks_and_rolls_back() -> None:
    buf = PointBuffer()
    assert buf.append(1, 10, 1.5, 192) == 1
    for bad in [(-1, 11, 1.0, 192), (1 << 32, 11, 1.0, 192), (1, 11.5, 1.0, 192)]:
        with pytest.raises(InvalidInput):
            buf.append(*bad)
    with pytest.raises(InvalidInput):
        buf.append(1, 11, "1.0", 192)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        buf.append(1, 11, 1.0, 256)
    assert buf.append(2, datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), 2, 0) == 2
    cols = buf.take()
    assert cols is not None and buf.take() is None
    tags, ts, values, q = cols
    assert tags.tolist() == [1, 2] and ts.tolist() == [10, 1_000_000]
    assert values.tolist() == [1.5, 2.0] and q.tolist() == [192, 0]


def test_session_matches_out_of_order_responses_split_anywhere() -> None:
    core = ClientCore("xtsdb://127.0.0.1:1")
    session: Session[str] = Session()
    reqs = [core.simple("ping") for _ in range(3)]
    for req, name in zip(reqs, "abc", strict=True):
        session.track(req, name)
    session.forget(reqs[1].id)  # timed out: its late answer is dropped
    wire = b"".join(encode_frame(ok_response(r.id)) for r in reversed(reqs))
    done = [w for i in range(len(wire)) for _, w, _ in session.feed(wire[i : i + 1])]
    assert done == ["c", "a"] and len(session) == 0


def test_write_plan_checks_everything_before_sending_and_splits() -> None:
    core = ClientCore("xtsdb://127.0.0.1:1", max_points_per_frame=100)
    with pytest.raises(InvalidInput, match="values"):
        next(core.write_plan([(1, np.arange(10), np.zeros(10), None), (2, [1, 2], [1.0], None)]))
    plan = core.write_plan([(1, np.arange(250), np.zeros(250), None)])
    step, sent = next(plan), []
    while True:
        sent += step.send
        acks = [ok_response(r.id, n=r.points, lsn=1) for r in sent[len(sent) - step.wait :]]
        try:
            step = plan.send(acks[: step.wait] if step.wait else [])
        except StopIteration as stop:
            assert stop.value == 250
            break
    assert [r.points for r in sent] == [100, 100, 50]
    assert isinstance(step, Step)


# -- fixtures: misbehaving peers --------------------------------------------------------


class CuttingProxy:
    """A TCP proxy to a server; after :meth:`cut_next` it swallows the next request
    a client sends and closes that connection: the request is lost in flight."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"xtsdb://127.0.0.1:{self._listener.getsockname()[1]}"
        self._armed = threading.Event()
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def cut_next(self) -> None:
        self._armed.set()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                down, _ = self._listener.accept()
            except TimeoutError:
                continue
            up = socket.create_connection(self._target, timeout=10)
            down.settimeout(None)
            up.settimeout(None)
            self._socks += [down, up]
            for src, dst, upstream in ((down, up, True), (up, down, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, upstream), daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if upstream and self._armed.is_set():
                    self._armed.clear()
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)
        for s in [*self._socks, self._listener]:
            s.close()


@pytest.fixture
def proxy(server: ServerThread) -> Iterator[CuttingProxy]:
    p = CuttingProxy(server.address)
    yield p
    p.close()


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """Accepts connections (in the kernel backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        yield f"xtsdb://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def hello_only_server() -> Iterator[str]:
    """Answers ``hello`` properly, then nothing else."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            decoder = FrameDecoder()
            while data := conn.recv(1 << 16):
                decoder.feed(data)
                for msg in decoder:
                    if msg["op"] == "hello":
                        conn.sendall(
                            encode_frame(HELLO.reply(msg["id"], 1, "mute", 1 << 20, False))
                        )

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"xtsdb://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    t.join(5)


# -- round trips ------------------------------------------------------------------------------


def _points(n: int, seed: int = 0) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(1, 1000, n)).astype(np.int64)
    return ts, rng.normal(size=n), rng.integers(0, 256, n).astype(np.uint8)


def _same(r: QueryResult, ts: Any, values: Any, q: Any) -> bool:
    return (
        np.array_equal(r.timestamps, ts)
        and np.array_equal(r.values, values)
        and np.array_equal(r.qualities, q)
    )


def test_sync_round_trip(server: ServerThread) -> None:
    ts, values, q = _points(5000)
    with connect(server.url) as db:
        assert db.server.startswith("xtsdb/")
        assert db.write(7, ts, values, q) == 5000
        r = db.query(7, 0, BIG)
        assert len(r) == 5000 and _same(r, ts, values, q)
        assert r.stats["points_from_memory"] + r.stats["points_from_disk"] == 5000
        assert len(db.query(7, int(ts[10]), int(ts[20]))) == 10  # half-open [start, end)
        assert len(db.query(7, 0, BIG, limit=3)) == 3
        assert len(db.query(8, 0, BIG)) == 0
        assert 0 < db.ping() < 5
        assert db.stats()["engine"]["points_written"] >= 5000
        db.flush_server()
        assert _same(db.query(7, 0, BIG), ts, values, q)


async def test_async_round_trip(server: ServerThread) -> None:
    ts, values, q = _points(5000, seed=1)
    async with await AsyncClient.connect(server.url) as db:
        assert await db.write(7, ts, values, q) == 5000
        assert _same(await db.query(7, 0, BIG), ts, values, q)
        tags = np.array([1, 2, 1, 2], dtype=np.uint32)
        await db.write(tags, [10, 10, 20, 30], [1.0, 2.0, 3.0, 4.0])  # one tag per point
        last = await db.last([1, 2, 99])
        assert last.to_dict() == {1: (20, 3.0, 192), 2: (30, 4.0, 192)}
        assert 0 < await db.ping() < 5
        await db.flush_server()
        assert "server" in await db.stats()


def test_datetime_arguments(server: ServerThread) -> None:
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    stamps = np.array(["2024-05-01T00:00:00", "2024-05-01T00:00:01"], dtype="datetime64[ms]")
    with connect(server.url) as db:
        db.write(3, stamps, [1.0, 2.0])
        db.write_point(3, t0 + timedelta(seconds=2), 3.0)
        db.flush()
        cet = timezone(timedelta(hours=1))
        r = db.query(
            3, datetime(2024, 5, 1, 1, tzinfo=cet), t0 + timedelta(seconds=2, microseconds=1)
        )
        assert r.timestamps.tolist() == [to_us(t0) + k * 1_000_000 for k in range(3)]
        assert r.datetimes[0] == np.datetime64("2024-05-01T00:00:00", "us")
        with pytest.raises(InvalidInput, match="naive"):
            db.query(3, datetime(2024, 5, 1), t0)


# -- write_point batching ---------------------------------------------------------------------


def test_write_point_batches_then_flush(server: ServerThread) -> None:
    n = 25_000
    with connect(server.url, batch_size=1000, flush_interval=60) as db:
        for i in range(n):
            db.write_point(11, i, float(i), 192 if i % 2 else 0)
        db.flush()
        r = db.query(11, 0, BIG)
    assert len(r) == n and r.values[-1] == n - 1 and r.qualities[:2].tolist() == [0, 192]
    assert r.timestamps.tolist() == list(range(n))


async def test_async_write_point_batches_then_flush(server: ServerThread) -> None:
    n = 25_000
    async with await AsyncClient.connect(server.url, batch_size=1000, flush_interval=60) as db:
        for i in range(n):
            await db.write_point(12, i, float(i))
        await db.flush()
        r = await db.query(12, 0, BIG)
    assert len(r) == n and np.array_equal(r.values, np.arange(n, dtype=np.float64))


def test_write_point_from_many_threads(server: ServerThread) -> None:
    with connect(server.url, batch_size=500) as db:

        def work(tag: int) -> None:
            for i in range(5000):
                db.write_point(tag, i, float(tag))

        threads = [threading.Thread(target=work, args=(20 + k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        db.flush()
        counts = [len(db.query(20 + k, 0, BIG)) for k in range(4)]
    assert counts == [5000] * 4


def test_time_based_flush_without_flush_call(server: ServerThread) -> None:
    with connect(server.url, flush_interval=0.05) as writer, connect(server.url) as reader:
        for i in range(3):
            writer.write_point(13, i, 1.0)
        assert eventually(lambda: len(reader.query(13, 0, BIG)) == 3)


async def test_async_time_based_flush_without_flush_call(server: ServerThread) -> None:
    async with (
        await AsyncClient.connect(server.url, flush_interval=0.05) as writer,
        await AsyncClient.connect(server.url) as reader,
    ):
        for i in range(3):
            await writer.write_point(14, i, 1.0)
        for _ in range(250):
            if len(await reader.query(14, 0, BIG)) == 3:
                break
            await asyncio.sleep(0.02)
        assert len(await reader.query(14, 0, BIG)) == 3


def test_close_flushes_and_then_refuses(server: ServerThread) -> None:
    db = connect(server.url, flush_interval=60)
    db.write_point(15, 1, 1.0)
    db.close()
    db.close()
    with pytest.raises(XtsdbConnectionError):
        db.write_point(15, 2, 1.0)
    with connect(server.url) as other:
        assert len(other.query(15, 0, BIG)) == 1


# -- errors --------------------------------------------------------------------------------


def test_errors_map_to_classes_sync(server: ServerThread) -> None:
    with connect(server.url) as db:
        with pytest.raises(InvalidInput):
            db.write(-1, [1], [1.0])  # refused before sending
        with pytest.raises(InvalidInput):
            db.write(1, [1 << 61], [1.0])  # refused by the server: |ts| >= 2**60
        assert db.stats()["server"]["errors"].get("invalid_input", 0) >= 1
        db.write_point(1, 1 << 61, 1.0)  # a bad batch: its error comes back at flush()
        with pytest.raises(InvalidInput):
            db.flush()
        db.write_point(1, 1 << 61, 1.0)  # sent by the flush timer, refused in the background
        deadline = time.monotonic() + 5
        with pytest.raises(InvalidInput):  # ... and raised by a later call, never dropped
            while time.monotonic() < deadline:
                db.write_point(1, 4, 1.0)  # (may share the refused batch)
                time.sleep(0.02)
        db.write_point(1, 5, 1.0)  # reported once; the client carries on
        db.flush()
        assert db.query(1, 5, 6).timestamps.tolist() == [5]


async def test_errors_map_to_classes_async(server: ServerThread) -> None:
    async with await AsyncClient.connect(server.url) as db:
        with pytest.raises(InvalidInput):
            await db.write(1 << 32, [1], [1.0])
        with pytest.raises(InvalidInput):
            await db.write(1, [1 << 61], [1.0])
        with pytest.raises(InvalidInput):
            await db.query(-1, 0, 10)
        await db.write_point(1, 1 << 61, 1.0)
        with pytest.raises(InvalidInput):
            await db.flush()
        assert len(await db.query(1, 0, BIG)) == 0


def test_pandas_extra(server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    r = QueryResult(np.array([0, 1_000_000], np.int64), np.array([1.0, 2.0]), np.zeros(2, np.uint8))
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    with pytest.raises(ImportError, match=r"xtsdb\[pandas\]"):
        r.to_pandas()


def test_to_pandas(server: ServerThread) -> None:
    pd = pytest.importorskip("pandas")
    with connect(server.url) as db:
        db.write(2, [0, 1_000_000], [1.0, 2.0])
        df = db.query(2, 0, BIG).to_pandas()
    assert list(df["value"]) == [1.0, 2.0]
    assert df.index[1] == pd.Timestamp("1970-01-01T00:00:01", tz="UTC")


# -- pipelining, frames --------------------------------------------------------------------


async def test_async_pipelined_writers_and_readers(server: ServerThread) -> None:
    def points(k: int) -> tuple[Any, Any]:
        return np.arange(1000) + k, np.full(1000, k + 0.0)

    async with await AsyncClient.connect(server.url) as db:
        first = await asyncio.gather(*(db.write(100 + k, *points(k)) for k in range(20)))
        assert first == [1000] * 20
        # 20 writers, 20 readers and 20 pings in flight on one connection at once
        writes = asyncio.gather(*(db.write(100 + k, *points(k)) for k in range(20, 40)))
        reads = asyncio.gather(*(db.query(100 + k, 0, BIG) for k in range(20)))
        pings = asyncio.gather(*(db.ping() for _ in range(20)))
        written, results, rtts = await asyncio.gather(writes, reads, pings)
        assert written == [1000] * 20 and all(rtt > 0 for rtt in rtts)
        assert all(r.values[0] == k and len(r) == 1000 for k, r in enumerate(results))
        later = await asyncio.gather(*(db.last(100 + k) for k in range(20, 40)))
        assert [x.to_dict()[100 + k][1] for k, x in enumerate(later, 20)] == list(range(20, 40))
        assert db.reconnects == 0


def test_large_write_is_split_into_frames_and_query_paged(
    server_factory: Callable[..., ServerThread],
) -> None:
    srv = server_factory(max_frame=64 * 1024)
    ts, values, q = _points(20_000, seed=2)
    with connect(srv.url) as db:
        assert db.max_frame == 64 * 1024
        before = db.stats()["server"]["requests"]
        assert db.write(9, ts, values, q) == 20_000  # 340 kB: ~6 frames
        r = db.query(9, 0, BIG)  # ~3,800 points per page
        after = db.stats()["server"]["requests"]
    assert _same(r, ts, values, q)
    assert after["write"] - before.get("write", 0) >= 6
    assert after["query"] - before.get("query", 0) >= 6
    with connect(srv.url, batch_size=10_000) as db:  # a batch bigger than a frame is split too
        for i in range(10_000):
            db.write_point(10, i, 1.0)
        db.flush()
        assert len(db.query(10, 0, BIG)) == 10_000


# -- connections: retry, loss, timeouts ---------------------------------------------------------


def test_sync_idempotent_call_retries_on_a_closed_socket(server: ServerThread) -> None:
    with connect(server.url) as db:
        db.write(5, [1, 2], [1.0, 2.0])
        assert db._sock is not None
        db._sock.shutdown(socket.SHUT_RDWR)
        assert len(db.query(5, 0, BIG)) == 2
        assert db.ping() > 0 and db.reconnects == 1


async def test_async_idempotent_call_retries_and_write_raises_on_a_closed_socket(
    server: ServerThread,
) -> None:
    async with await AsyncClient.connect(server.url) as db:
        assert db._writer is not None
        db._writer.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        assert await db.ping() > 0 and db.reconnects == 1
        assert db._writer is not None
        db._writer.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        with pytest.raises(XtsdbConnectionError):
            await db.write(5, [1], [1.0])  # sent into a dead socket: not retried
        assert await db.write(5, [2], [2.0]) == 1  # the next call reconnects
        assert db.reconnects == 2


def test_write_lost_in_flight_raises_unless_retry_writes(
    server: ServerThread, proxy: CuttingProxy
) -> None:
    with connect(proxy.url) as db:
        proxy.cut_next()
        with pytest.raises(XtsdbConnectionError):
            db.write(6, [1], [1.0])
        assert db.ping() > 0  # reconnects: the last connection is known to be dead
        proxy.cut_next()
        assert len(db.query(6, 0, BIG)) == 0  # cut, retried; and the lost write never arrived
        assert db.reconnects == 2
    with connect(proxy.url, retry_writes=True) as db:
        proxy.cut_next()
        assert db.write(6, [1], [1.0]) == 1
        assert db.reconnects == 1 and len(db.query(6, 0, BIG)) == 1


async def test_async_write_lost_in_flight_raises(server: ServerThread, proxy: CuttingProxy) -> None:
    async with await AsyncClient.connect(proxy.url) as db:
        proxy.cut_next()
        with pytest.raises(XtsdbConnectionError):
            await db.write(6, [1], [1.0])
        assert await db.ping() > 0
        proxy.cut_next()
        assert len(await db.query(6, 0, BIG)) == 0
        assert db.reconnects == 2


def test_connect_refused_is_a_connection_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError):  # XtsdbConnectionError is one
        Client(f"xtsdb://127.0.0.1:{port}", timeout=2)


def test_timeouts_sync(silent_listener: str, hello_only_server: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(XtsdbTimeout):
        Client(silent_listener, timeout=0.3)
    with connect(hello_only_server, timeout=5) as db, pytest.raises(TimeoutError):
        db.ping(timeout=0.2)
    assert time.monotonic() - t0 < 4


async def test_timeouts_async(silent_listener: str, hello_only_server: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(XtsdbTimeout):
        await AsyncClient.connect(silent_listener, timeout=0.3)
    async with await AsyncClient.connect(hello_only_server, timeout=5) as db:
        with pytest.raises(XtsdbTimeout):
            await db.query(1, 0, 10, timeout=0.2)
    assert time.monotonic() - t0 < 4
