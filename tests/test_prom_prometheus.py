"""A real Prometheus remote-writes into an Engine; a second one, empty, reads it back.

Until the server's HTTP listener serves ``/api/v1/write`` and ``/api/v1/read``
(issue 13), a small ``http.server`` on 127.0.0.1 calls the same functions the
routes will call (:func:`handle_write`, :func:`handle_read`) on a real Engine,
and serves the ``/metrics`` page the first Prometheus scrapes. Both
Prometheus must answer the same range queries exactly.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import require_program

from xtsdb.protocol import prom_messages as pm
from xtsdb.protocol import prom_remote as pr
from xtsdb.server.engine import Engine
from xtsdb.server.prom_remote import SeriesNames, handle_read, handle_write

SCRAPES = 8


class _Target:
    """The scraped page: a counter, a gauge with awkward label values, a stale-prone series."""

    def __init__(self) -> None:
        self.n = 0

    def page(self) -> bytes:
        self.n += 1
        lines = [
            f'demo_total{{kind="a b",path="C:\\\\"}} {self.n * 3}',
            f'demo_gauge{{k="x=y,z"}} {self.n * 0.25 - 1}',
        ]
        if self.n < 4:  # disappears: Prometheus writes a stale marker for it
            lines.append(f"demo_short {self.n}")
        return ("\n".join(lines) + "\n").encode()


def _serve(engine: Engine, target: _Target) -> ThreadingHTTPServer:
    names = SeriesNames()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(200, {"Content-Type": "text/plain; version=0.0.4"}, target.page())

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = dict(self.headers.items())
            if self.path == "/api/v1/write":
                self._send(*handle_write(engine, body, headers, names))
            elif self.path == "/api/v1/read":
                self._send(*handle_read(engine, body, headers))
            else:
                self._send(404, {}, b"")

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prometheus(
    binary: str, tmp: Path, name: str, config: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    (tmp / f"{name}.yml").write_text(config)
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / f'{name}.yml'}",
            f"--storage.tsdb.path={tmp / name}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / f"{name}.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/-/ready", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    proc.wait()
    raise AssertionError((tmp / f"{name}.log").read_text()[-2000:])


def _query(url: str, q: str, start: float, end: float) -> Any:
    args = urllib.parse.urlencode({"query": q, "start": start, "end": end, "step": "1"})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{args}", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return sorted(body["data"]["result"], key=lambda s: sorted(s["metric"].items()))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, Engine, ThreadingHTTPServer, Path]]:
    binary = require_program("prometheus", "prometheus")
    with Engine.open(tmp_path / "db") as engine:
        srv = _serve(engine, _Target())
        try:
            yield binary, engine, srv, tmp_path
        finally:
            srv.shutdown()


def test_remote_write_then_remote_read_answers_like_the_writer(stack):
    binary, engine, srv, tmp = stack
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    writer, wurl = _prometheus(
        binary,
        tmp,
        "writer",
        f"""
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: demo
    static_configs: [{{targets: ["127.0.0.1:{srv.server_address[1]}"]}}]
remote_write:
  - url: {base}/api/v1/write
    queue_config: {{batch_send_deadline: 200ms, min_backoff: 50ms, max_backoff: 200ms}}
""",
    )
    try:
        deadline = time.monotonic() + 40
        want_series = {("demo_total", "a b"), ("demo_gauge", ""), ("demo_short", "")}
        while time.monotonic() < deadline:
            time.sleep(0.5)
            got = _query(wurl, '{__name__=~"demo_.*"}', time.time() - 60, time.time())
            if (
                sum(len(s["values"]) for s in got if s["metric"]["__name__"] == "demo_total")
                >= SCRAPES
            ):
                break
        end = time.time() - 1.5
        start = end - 60
        queries = ['{__name__=~"demo_.*"}', "rate(demo_total[3s])", 'demo_gauge{k=~"x=.*"}']
        expected = {q: _query(wurl, q, start, end) for q in queries}
        assert {
            (s["metric"]["__name__"], s["metric"].get("kind", "")) for s in expected[queries[0]]
        } == want_series
        _wait_written(engine, expected[queries[0]])
    finally:
        writer.terminate()
        writer.wait(timeout=30)
    reader, rurl = _prometheus(
        binary,
        tmp,
        "reader",
        f"""
remote_read:
  - url: {base}/api/v1/read
    read_recent: true
""",
    )
    try:
        for q in queries:
            assert _query(rurl, q, start, end) == expected[q], q
    finally:
        reader.terminate()
        reader.wait(timeout=30)
    # The gauge's stale marker after demo_short went away is stored bit-exactly.
    req = pr.encode_read_request(
        [pr.PromQuery(0, int(time.time() * 1000), (pr.Matcher(pm.EQ, "__name__", "demo_short"),))]
    )
    (short,) = pr.decode_read_response(handle_read(engine, req, _READ)[2])[0]
    assert 0x7FF0000000000002 in short.values.view("u8").tolist()


_READ = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}


def _wait_written(engine: Engine, series: list[dict[str, Any]]) -> None:
    """Until xtsdb holds every sample the writer shows (remote write lags a little)."""
    last = {s["metric"]["__name__"]: float(s["values"][-1][0]) for s in series}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        req = pr.encode_read_request(
            [pr.PromQuery(0, int(time.time() * 1000), (pr.Matcher(pm.RE, "__name__", "demo_.*"),))]
        )
        got = pr.decode_read_response(handle_read(engine, req, _READ)[2])[0]
        have = {dict(s.labels)["__name__"]: int(s.ts_ms.max()) / 1000 for s in got if len(s.ts_ms)}
        if all(have.get(k, 0) >= v for k, v in last.items()):
            return
        time.sleep(0.3)
    raise AssertionError(f"remote write did not deliver: have {have}, want {last}")
