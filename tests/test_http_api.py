"""The one HTTP port (server/http_api.py) of a real server: every route, tokens, start-up.

A :class:`ServerThread` on 127.0.0.1 with ``http_port=0``; requests through
``http.client``. Prometheus messages are built with the protobuf runtime
(:mod:`xtsdb.protocol.prom_messages`) and compressed with cramjam, as a
Prometheus would send them, not with the server's own encoders.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cramjam
import pytest
from conftest import server_config

import xtsdb.server.app as app_mod
import xtsdb.server.http_prom as http_prom
from xtsdb.client import connect
from xtsdb.protocol import prom_messages as pm
from xtsdb.server.app import ServerThread
from xtsdb.server.engine import Engine

READ = "read-secret-0123456789abcdef"
WRITE = "write-secret-0123456789abcdef"
TOKENS = (f"read:{READ}", f"write:{WRITE}")
PROM_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
READ_HEADERS = {**PROM_HEADERS, "X-Prometheus-Remote-Read-Version": "0.1.0"}
del READ_HEADERS["X-Prometheus-Remote-Write-Version"]
T0 = 1_700_000_000_000  # ms


def remote_write(series: dict[str, list[tuple[float, int]]], job: str = "node") -> bytes:
    """A snappy WriteRequest: metric name -> [(value, timestamp_ms)], label job=``job``."""
    req = pm.WriteRequest()
    for name, samples in series.items():
        ts = req.timeseries.add()
        ts.labels.add(name="__name__", value=name)
        ts.labels.add(name="job", value=job)
        for value, t in samples:
            ts.samples.add(value=value, timestamp=t)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def remote_read(name: str, start_ms: int, end_ms: int) -> bytes:
    req = pm.ReadRequest(accepted_response_types=[pm.SAMPLES])
    q = req.queries.add(start_timestamp_ms=start_ms, end_timestamp_ms=end_ms)
    q.matchers.add(type=pm.EQ, name="__name__", value=name)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def read_samples(body: bytes) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    """The series of the first query of a snappy ReadResponse, decoded by the runtime."""
    resp = pm.ReadResponse.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    out = []
    for ts in resp.results[0].timeseries:
        labels = {lab.name: lab.value for lab in ts.labels}
        out.append((labels, [(s.timestamp, s.value) for s in ts.samples]))
    return out


class Http:
    """Requests to one port; a fresh connection each (a 401 closes the connection)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def __call__(
        self, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> tuple[int, bytes, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read(), dict(resp.getheaders())
        finally:
            conn.close()


def query(http_: Http, q: str, **headers: str) -> tuple[int, Any]:
    status, body, _ = http_("GET", "/query?" + urllib.parse.urlencode({"q": q}), **headers)
    return status, json.loads(body) if body else None


def test_every_route_on_one_port(server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(http_port=0)
    http_ = Http(srv.http_port)
    assert http_("GET", "/ping")[0] == 204
    assert http_("GET", "/health")[0] == 200
    assert http_("GET", "/healthz")[:2] == (200, b"ok\n")
    assert http_("GET", "/readyz")[:2] == (200, b"ready\n")
    assert http_("POST", "/write?db=x&precision=s", b"boiler,unit=1 temp=81.5 1700000000")[0] == 204
    assert (
        http_("POST", "/api/v2/write?bucket=x&precision=s", b"boiler,unit=2 temp=7 1700000000")[0]
        == 204
    )
    status, answer = query(http_, "SELECT temp FROM boiler GROUP BY unit")
    assert status == 200
    [result] = answer["results"]
    got = {s["tags"]["unit"]: s["values"] for s in result["series"]}
    assert got == {"1": [["2023-11-14T22:13:20Z", 81.5]], "2": [["2023-11-14T22:13:20Z", 7]]}

    samples = [(1.5, T0), (2.5, T0 + 15_000), (-3.0, T0 + 30_000)]
    status, body, _ = http_("POST", "/api/v1/write", remote_write({"up": samples}), **PROM_HEADERS)
    assert (status, body) == (204, b"")
    status, body, headers = http_(
        "POST", "/api/v1/read", remote_read("up", 0, T0 + 60_000), **READ_HEADERS
    )
    assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
    assert read_samples(body) == [({"__name__": "up", "job": "node"}, [(t, v) for v, t in samples])]
    # InfluxQL sees the Prometheus series as measurement "up", field "value"
    status, answer = query(http_, "SELECT count(value) FROM up")
    assert status == 200 and answer["results"][0]["series"][0]["values"][0][1] == 3

    status, text, headers = http_("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert b"xtsdb_points_written_total 5.0" in text
    stats = srv_stats(srv)
    assert stats["prom_samples_written"] == 3 and stats["influx_points"] == 2
    assert stats["http_requests"]["204"] >= 4


def srv_stats(srv: ServerThread) -> dict[str, Any]:
    with connect(srv.url) as db:
        return dict(db.stats()["server"])


ROUTES = [  # (method, path, body, the role it needs: None for open)
    ("GET", "/ping", None, None),
    ("GET", "/health", None, None),
    ("GET", "/healthz", None, None),
    ("GET", "/readyz", None, None),
    ("GET", "/metrics", None, "read"),
    ("POST", "/write", b"m f=1 1", "write"),
    ("POST", "/api/v2/write", b"m f=2 2", "write"),
    ("GET", "/query?q=SHOW+MEASUREMENTS", None, "read"),
    ("POST", "/query?q=CREATE+DATABASE+x", None, "write"),
    ("POST", "/api/v1/write", remote_write({"up": [(1.0, T0)]}), "write"),
    ("POST", "/api/v1/read", remote_read("up", 0, T0), "read"),
]


@pytest.mark.parametrize(("method", "path", "body", "needs"), ROUTES)
def test_tokens_per_route(
    tokened: ServerThread, method: str, path: str, body: bytes | None, needs: str | None
) -> None:
    http_ = Http(tokened.http_port)
    extra = PROM_HEADERS if path.startswith("/api/v1/") else {}

    def status(**auth: str) -> int:
        return http_(method, path, body, **extra, **auth)[0]

    ok = {200, 204}
    assert (status() in ok) is (needs is None)
    if needs is None:
        return
    assert status() == 401
    assert status(Authorization="Bearer wrong-secret-0123456789abcdef") == 401
    basic = base64.b64encode(f"grafana:{READ}".encode()).decode()
    for auth in ({"Authorization": f"Bearer {READ}"}, {"Authorization": f"Basic {basic}"}):
        assert status(**auth) == (200 if needs == "read" else 403), auth
    assert status(Authorization=f"Token {WRITE}") in ok


@pytest.fixture
def tokened(server_factory: Callable[..., ServerThread]) -> ServerThread:
    return server_factory(http_port=0, tokens=TOKENS)


def test_a_read_token_writes_nothing(tokened: ServerThread) -> None:
    http_ = Http(tokened.http_port)
    auth = {"Authorization": f"Bearer {READ}"}
    assert http_("POST", "/write", b"r f=1 1", **auth)[0] == 403
    assert (
        http_("POST", "/api/v1/write", remote_write({"r": [(1.0, T0)]}), **PROM_HEADERS, **auth)[0]
        == 403
    )
    status, answer = query(http_, "SHOW MEASUREMENTS", **auth)
    assert status == 200 and answer == {"results": [{"statement_id": 0}]}  # none at all


@pytest.fixture
def held_recovery(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Engine.open (recovery) waits for the event: the server stays 'starting' until set."""
    release = threading.Event()
    real_open = Engine.open

    def slow_open(*args: Any, **kwargs: Any) -> Engine:
        release.wait(30)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(app_mod.Engine, "open", staticmethod(slow_open))
    yield release
    release.set()


def test_http_port_answers_during_recovery(tmp_path: Path, held_recovery: threading.Event) -> None:
    srv = ServerThread(server_config(tmp_path / "d", http_port=0))
    runner = threading.Thread(target=srv.start, daemon=True)  # start() returns once ready
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not srv.http_port and time.monotonic() < deadline:  # set once the port listens
            time.sleep(0.01)
        http_ = Http(srv.http_port)
        assert http_("GET", "/healthz")[0] == 200
        assert http_("GET", "/readyz")[:2] == (503, b"not ready: starting\n")
        assert http_("GET", "/ping")[0] == 204
        status, text, _ = http_("GET", "/metrics")
        assert status == 200 and b"xtsdb_ready 0.0" in text
        for method, path, body, _ in ROUTES[5:]:
            extra = PROM_HEADERS if path.startswith("/api/v1/") else {}
            status, answer, headers = http_(method, path, body, **extra)
            assert status == 503 and b"starting" in answer, (path, answer)
            assert headers.get("Retry-After") == "1"
        held_recovery.set()
        runner.join(30)
        assert http_("GET", "/readyz")[:2] == (200, b"ready\n")
        assert http_("POST", "/write", b"late f=1 1")[0] == 204
    finally:
        held_recovery.set()
        runner.join(30)
        srv.stop(30)


def test_a_stop_lets_http_writes_in_progress_commit_and_refuses_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    go = threading.Event()  # decoding waits for it: a write stays in progress, not yet queued
    real_prepare = http_prom.prepare_write

    def held(*args: Any) -> Any:
        go.wait(30)
        return real_prepare(*args)

    monkeypatch.setattr(http_prom, "prepare_write", held)
    config = server_config(tmp_path / "d", http_port=0, shutdown_timeout=20.0)
    srv = ServerThread(config).start()
    http_ = Http(srv.http_port)
    answers: list[int] = []
    body = remote_write({"held": [(4.5, T0)]})
    writer = threading.Thread(
        target=lambda: answers.append(http_("POST", "/api/v1/write", body, **PROM_HEADERS)[0])
    )
    stopper = threading.Thread(target=srv.stop)
    try:
        writer.start()
        time.sleep(0.2)  # the write is being decoded now
        stopper.start()
        deadline = time.monotonic() + 10
        while http_("GET", "/readyz")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert http_("GET", "/readyz")[:2] == (503, b"not ready: stopping\n")
        status, answer, _ = http_("POST", "/write", b"late f=1 1")
        assert status == 503 and b"stopping" in answer
        assert answers == []  # still in progress: the stop waits for it
    finally:
        go.set()
        writer.join(30)
        stopper.join(60)
    assert answers == [204]
    monkeypatch.undo()
    with ServerThread(config.replace(http_port=-1)) as again, connect(again.url) as db:
        assert db.query("held,job=node.value", 0, 1 << 62).values.tolist() == [4.5]
