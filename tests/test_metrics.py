"""Observability: the /metrics, /healthz and /readyz endpoint, and the log output.

A real server on 127.0.0.1 with ``http_port=0``; the endpoint is read with
urllib, the exposition parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from xtsdb.client import connect
from xtsdb.server.app import ServerThread
from xtsdb.server.config import ConfigError, ServerConfig
from xtsdb.server.http_endpoint import HttpLimits, HttpListener, Router
from xtsdb.server.http_ops import Health, OpsRoutes
from xtsdb.server.logs import JsonFormatter, make_handler, resolve_format
from xtsdb.server.metrics import Metrics

if TYPE_CHECKING:
    from conftest import RawConn

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(srv: ServerThread | HttpListener, path: str, method: str = "GET") -> tuple[int, str]:
    port = srv.http_port if isinstance(srv, ServerThread) else srv.port
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(srv: ServerThread) -> Samples:
    status, text = get(srv, "/metrics")
    assert status == 200
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples[(metric, tuple(sorted(labels.items())))]


NAMED = [
    "xtsdb_points_written_total",
    "xtsdb_write_batches_total",
    "xtsdb_commit_duration_seconds_count",
    "xtsdb_wal_bytes",
    "xtsdb_membuffer_points",
    "xtsdb_blocks_flushed_total",
    "xtsdb_blocks_read_total",
    "xtsdb_blocks_skipped_total",
    "xtsdb_blocks_summarised_total",
    "xtsdb_connections",
    "xtsdb_ready",
]


def test_metrics_name_the_figures_and_follow_the_work(
    server: ServerThread, raw: Callable[..., RawConn]
) -> None:
    before = scrape(server)
    for name in NAMED:
        assert (name, ()) in before, name
    for area in ("wal", "containers", "index"):
        assert value(before, "xtsdb_disk_bytes", area=area) >= 0
    assert value(before, "xtsdb_points_written_total") == 0
    assert value(before, "xtsdb_ready") == 1

    ts = np.arange(2500, dtype=np.int64)
    with connect(server.url) as client:
        # Fewer points than a block (block_points is 1000): the background sealer
        # has nothing to take, so the memory gauge is exact.
        client.write(7, ts[:500], ts[:500] * 0.5)
        mid = scrape(server)
        assert value(mid, "xtsdb_points_written_total") == 500
        assert value(mid, "xtsdb_write_batches_total") == 1
        assert value(mid, "xtsdb_commit_duration_seconds_count") == 1
        assert value(mid, "xtsdb_membuffer_points") == 500
        assert value(mid, "xtsdb_connections") == 1
        client.write(7, ts[500:], ts[500:] * 0.5)
        client.flush_server()
        client.query(7, 0, 1000)
        # One bucket over all three sealed blocks: answered from their summaries.
        assert client.aggregate(7, 0, 1_000_000, 1_000_000, "count")["count"][0] == 2500
    after = scrape(server)
    assert value(after, "xtsdb_membuffer_points") == 0
    assert value(after, "xtsdb_blocks_flushed_total") >= 2  # block_points is 1000
    assert value(after, "xtsdb_blocks_read_total") >= 1
    assert value(after, "xtsdb_blocks_skipped_total") >= 1  # blocks after ts 1000
    assert value(after, "xtsdb_blocks_summarised_total") >= 2
    assert value(after, "xtsdb_request_duration_seconds_count", op="query") == 1
    assert value(after, "xtsdb_requests_total", op="write") == 2
    assert value(after, "xtsdb_disk_bytes", area="containers") > 0
    assert value(after, "xtsdb_disk_bytes", area="index") > 0

    conn = raw(server)
    assert conn.call("query", tag=b"seven", start=0, end=1)["ok"] is False
    errors = scrape(server)
    assert value(errors, "xtsdb_errors_total", code="10", name="invalid_input") == 1


def test_probes(server: ServerThread) -> None:
    assert get(server, "/healthz") == (200, "ok\n")
    assert get(server, "/readyz") == (200, "ready\n")
    assert get(server, "/healthz", "HEAD") == (200, "")
    assert get(server, "/nope")[0] == 404
    assert get(server, "/metrics", "POST")[0] == 405
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"not http at all\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
    port = server.http_port
    server.stop()
    with pytest.raises(OSError):  # stopped with the server
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


class _FailedEngine:
    def stats(self) -> dict[str, Any]:
        return {"failed": "WAL fsync failed: EIO"}


async def test_readyz_follows_the_server_phase(tmp_path: Path) -> None:
    # The phases a start and a stop go through, set as serve() sets them.
    health = Health()
    router = Router()
    OpsRoutes(Metrics(tmp_path), health).add_to(router)
    endpoint = await HttpListener(router, HttpLimits(), name="ops").start("127.0.0.1", 0)
    try:

        async def readyz() -> tuple[int, str]:
            return await asyncio.to_thread(get, endpoint, "/readyz")

        assert await readyz() == (503, "not ready: starting\n")  # recovery running
        assert (await asyncio.to_thread(get, endpoint, "/healthz"))[0] == 200
        health.phase = "ready"
        assert await readyz() == (200, "ready\n")
        health.engine = _FailedEngine()
        assert await readyz() == (
            503,
            "not ready: the engine refuses writes: WAL fsync failed: EIO\n",
        )
        health.engine = None
        health.phase = "stopping"
        assert await readyz() == (503, "not ready: stopping\n")
    finally:
        await endpoint.close()


def test_http_port_minus_one_means_no_endpoint(
    server_factory: Callable[..., ServerThread],
) -> None:
    srv = server_factory(http_port=-1)
    assert srv.http_port == 0
    with pytest.raises(ConfigError, match="http_port"):
        ServerConfig(http_port=-2)
    with pytest.raises(ConfigError, match="log_format"):
        ServerConfig.load(["--log-format", "xml"], {})


def test_slow_requests_are_logged_with_their_fields(
    server_factory: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    srv = server_factory(slow_query_ms=0.000001)  # every request is "slow"
    with caplog.at_level(logging.WARNING, logger="xtsdb.server"), connect(srv.url) as client:
        client.query(3, 10, 20)
    slow = [r for r in caplog.records if getattr(r, "event", "") == "slow_request"]
    assert slow, caplog.text
    rec = slow[-1]
    assert rec.levelno == logging.WARNING and rec.op == "query"  # type: ignore[attr-defined]
    assert (rec.tag, rec.start, rec.end) == (3, 10, 20)  # type: ignore[attr-defined]
    assert "slow request: query took" in rec.getMessage()


def test_json_and_text_log_lines() -> None:
    record = logging.LogRecord(
        "xtsdb.server", logging.WARNING, __file__, 1, "took %d ms", (5,), None
    )
    record.op = "query"
    line = JsonFormatter().format(record)
    doc = json.loads(line)
    assert doc["level"] == "WARNING" and doc["logger"] == "xtsdb.server"
    assert doc["msg"] == "took 5 ms" and doc["op"] == "query" and doc["ts"].endswith("Z")
    assert "\n" not in line

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("auto", Tty()) == "text"
    stream = Tty()
    make_handler("auto", stream).handle(record)
    assert stream.getvalue().rstrip().endswith("WARNING xtsdb.server: took 5 ms")


def test_connection_open_and_close_are_logged_at_debug(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    def debug_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]

    with caplog.at_level(logging.DEBUG, logger="xtsdb.server"):
        with connect(server.url) as client:
            client.ping()
        deadline = time.monotonic() + 10  # the server thread logs the close a moment later
        while not any("closed" in m for m in debug_lines()) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert any(m.startswith("connection from 127.0.0.1:") for m in debug_lines())
    assert any("closed" in m for m in debug_lines())


def test_unknown_ops_never_become_labels(server: ServerThread, raw: Callable[..., RawConn]) -> None:
    # An unknown op is refused before it is timed, so no client can grow the label set.
    conn = raw(server)
    conn.send({"id": 1, "op": "bogus"})
    assert conn.recv()["ok"] is False
    samples = scrape(server)
    assert ("xtsdb_request_duration_seconds_count", (("op", "bogus"),)) not in samples
    assert value(samples, "xtsdb_errors_total", code="13", name="unknown_operation") == 1
