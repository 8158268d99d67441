"""Prometheus remote write through the HTTP port: durable once acknowledged, bad bodies refused.

- A real ``xtsdb-server`` process (:class:`ServerProcess`) is killed with
  SIGKILL right after a 204 and restarted on the same directory: every sample
  is there, bit for bit (a stale marker included).
- Broken snappy, protobuf, content types, sizes and labels are answered 4xx;
  nothing is stored (no tag created, no point written) and the server keeps
  serving.
"""

from __future__ import annotations

import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cramjam
import numpy as np
from conftest import require_program
from slow_disk import SMALL, slow_server
from test_http_api import PROM_HEADERS, READ_HEADERS, T0, Http, read_samples, remote_read
from test_prom_remote import _request as write_request

from xtsdb.client import connect
from xtsdb.server.app import ServerThread
from xtsdb.server.process import ServerProcess, free_port

STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]


def snappy(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))


def bits(values: list[float] | np.ndarray) -> list[int]:
    return [int(b) for b in np.asarray(values, np.float64).view(np.uint64)]


def test_a_remote_write_answered_204_survives_kill_9(tmp_path: Path) -> None:
    samples = [(1.25, T0), (STALE, T0 + 15_000), (-0.0, T0 + 30_000), (1e300, T0 + 45_000)]
    labels = [("__name__", "node_load1"), ("instance", "plc-gw01:9100"), ("job", "node")]
    body = snappy(write_request([(labels, samples)]))
    data = tmp_path / "data"

    def start() -> tuple[ServerProcess, Http]:
        port = free_port()
        args = ["--port", "0", "--http-port", str(port), "--data-dir", str(data), *SMALL]
        srv = ServerProcess(args, workdir=tmp_path)
        srv.wait_ready()
        return srv, Http(port)

    srv, http_ = start()
    try:
        assert http_("POST", "/api/v1/write", body, **PROM_HEADERS)[:2] == (204, b"")
        srv.kill9()  # at once: nothing of the server runs after the 204
        assert srv.wait(30) == -9
    finally:
        srv.close()
    srv, http_ = start()  # recovery replays the WAL
    try:
        status, answer, _ = http_(
            "POST", "/api/v1/read", remote_read("node_load1", 0, T0 + 10**6), **READ_HEADERS
        )
        assert status == 200
        [(got_labels, got)] = read_samples(answer)
        assert got_labels == dict(labels)
        assert [t for t, _ in got] == [t for _, t in samples]
        assert bits([v for _, v in got]) == bits([v for v, _ in samples])
        with connect(srv.url) as db:  # the binary protocol sees the same bits
            name = r"node_load1,instance=plc-gw01:9100,job=node.value"
            r = db.query(name, 0, 1 << 62)
        assert r.timestamps.tolist() == [t * 1000 for _, t in samples]
        assert bits(r.values) == bits([v for v, _ in samples])
    finally:
        srv.stop()
        srv.close()


def test_the_204_waits_for_the_commit_even_behind_a_slow_fsync(tmp_path: Path) -> None:
    # Every fdatasync is held 400 ms (strace): a request queued behind a commit in
    # progress would be lost to a kill -9 if it were answered before its own commit.
    strace = require_program("strace", "strace")
    data, port = tmp_path / "data", free_port()
    first = snappy(write_request([([("__name__", "first")], [(1.0, T0)])]))
    second = snappy(write_request([([("__name__", "second")], [(2.0, T0)])]))
    http_ = Http(port)
    with slow_server(
        tmp_path, data, "--http-port", str(port), strace=strace, delay_us=400_000
    ) as srv:
        blocker = threading.Thread(
            target=http_, args=("POST", "/api/v1/write", first), kwargs=PROM_HEADERS
        )
        blocker.start()
        time.sleep(0.1)  # its commit is in its held fsync now
        started = time.monotonic()
        assert http_("POST", "/api/v1/write", second, **PROM_HEADERS)[0] == 204
        assert time.monotonic() - started > 0.3  # it waited for a held fsync, its own
        srv.kill9()
        srv.wait(30)
        blocker.join(30)
    with (
        slow_server(tmp_path, data, "--http-port", str(port), strace=None) as srv,
        connect(srv.url) as db,
    ):
        assert db.query("second.value", 0, 1 << 62).values.tolist() == [2.0]


def _tags(srv: ServerThread) -> int:
    with sqlite3.connect(f"file:{srv.data_dir / 'catalog.sqlite3'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM tags").fetchone()[0])


def _snappy_announcing(size: int) -> bytes:
    """A snappy block whose header (a varint) announces ``size`` bytes."""
    head = bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        head.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(head) + b"\x00" * 16


def test_bad_bodies_are_refused_and_store_nothing(
    server_factory: Callable[..., ServerThread],
) -> None:
    srv = server_factory(http_port=0, max_frame=64 * 1024, max_partial_bytes=1 << 20)
    http_ = Http(srv.http_port)
    good = snappy(write_request([([("__name__", "up"), ("job", "a")], [(1.0, T0)])]))
    no_name = snappy(write_request([([("job", "a")], [(1.0, T0)])]))
    not_protobuf = snappy(b"\xff" * 40)
    cases = [  # (body, header changes, expected status)
        (good, {"Content-Type": "application/json"}, 415),
        (
            good,
            {"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"},
            415,
        ),
        (good, {"Content-Encoding": "identity"}, 415),
        (good, {"Content-Encoding": "br"}, 415),
        (good, {"X-Prometheus-Remote-Write-Version": "2.0.0"}, 415),
        (b"\x05not snappy at all", {}, 400),
        (good[:-3], {}, 400),  # truncated
        (_snappy_announcing(1 << 30), {}, 413),  # a small body that would expand to 1 GiB
        (_snappy_announcing(1 << 40), {}, 400),  # past what snappy can announce
        (not_protobuf, {}, 400),
        (no_name, {}, 400),
    ]
    for body, changes, expected in cases:
        headers = {**PROM_HEADERS, **changes}
        status, answer, _ = http_("POST", "/api/v1/write", body, **headers)
        assert status == expected, (changes, body[:20], answer)
        assert answer.strip(), "the answer says what is wrong"
        assert http_("GET", "/ping")[0] == 204  # still serving
    # Over max_frame: answered from the head alone, before a byte of the body is read.
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=10) as s:
        s.sendall(b"POST /api/v1/write HTTP/1.1\r\nContent-Length: 71680\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 413 ")
    status, answer, _ = http_("POST", "/api/v1/read", b"\x05garbage", **READ_HEADERS)
    assert status == 400, answer
    status, answer, _ = http_("POST", "/api/v1/read", good, **PROM_HEADERS)  # a write body
    assert status == 400, answer
    status, _, _ = http_(
        "POST", "/api/v1/read", remote_read("up", 0, T0), **PROM_HEADERS, Content_Type="text/plain"
    )
    assert status == 415
    # Only the Prometheus routes take snappy: line protocol in it is refused.
    status, _, _ = http_("POST", "/write", snappy(b"m f=1 1"), Content_Encoding="snappy")
    assert status == 415
    assert _tags(srv) == 0  # no tag was created
    with connect(srv.url) as db:
        stats = db.stats()
    assert stats["server"]["prom_samples_written"] == 0
    # and a good request still works on the same server
    assert http_("POST", "/api/v1/write", good, **PROM_HEADERS)[0] == 204
    status, answer, _ = http_("POST", "/api/v1/read", remote_read("up", 0, T0), **READ_HEADERS)
    assert status == 200 and read_samples(answer) == [({"__name__": "up", "job": "a"}, [(T0, 1.0)])]
    assert _tags(srv) == 1
