"""The InfluxDB-compatible HTTP endpoint against a real server (``http_port=0``).

Requests go through ``http.client`` (keep-alive, like Telegraf's Go client)
or a raw socket where the exact bytes matter (chunked bodies, 100-continue).
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from xtsdb.client import connect
from xtsdb.server.app import ServerThread

READ_SECRET = "read-secret-0123456789abcdef"
WRITE_SECRET = "write-secret-0123456789abcdef"
TOKENS = (f"read:{READ_SECRET}", f"write:{WRITE_SECRET}")
NS = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z in ns

# What Telegraf's outputs.influxdb sends: several inputs in one batch, tags
# sorted, ints with 'i', bools, a string field, escaped names, and (not from
# Telegraf, but what hand-written clients produce) a malformed line.
TELEGRAF_BATCH = f"""\
cpu,cpu=cpu-total,host=plc-gw01 usage_idle=97.5,usage_user=1.25,usage_system=1.25 {NS}
cpu,cpu=cpu0,host=plc-gw01 usage_idle=96.0,usage_user=2.5,usage_system=1.5 {NS}
mem,host=plc-gw01 used=2147483648i,available_percent=73.2,total=8589934592i {NS}
system,host=plc-gw01 load1=0.52,n_cpus=4i,uptime=86400i,uptime_format="1 day,  0:00" {NS}
net,host=plc-gw01,interface=eth0 bytes_recv=123456789u,err_in=0i,up=true {NS}
modbus,host=plc-gw01,name=Boiler\\ 1,slave_id=1,type=holding_register FIC101.PV=42.5 {NS}
disk,device=sda1,host=plc-gw01,mode=rw,path=/var/lib/xtsdb free=1.5e10,inodes_used=1200i {NS}
this line is not line protocol
cpu,cpu=cpu-total,host=plc-gw01 usage_idle=97.0,usage_user=1.5,usage_system=1.5 {NS + 10**10}
"""


def tag_id(srv: ServerThread, name: str) -> int:
    """A tag's id, read from the catalog file (SQLite allows a reader beside the server)."""
    with sqlite3.connect(f"file:{srv.data_dir / 'catalog.sqlite3'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT id FROM tags WHERE name = ?", (name,)).fetchone()
    assert row is not None, f"no tag {name!r}"
    return int(row[0])


def stored(srv: ServerThread, name: str) -> list[tuple[int, float]]:
    with connect(srv.url) as db:
        r = db.query(tag_id(srv, name), 0, 1 << 60)
    return list(zip(r.timestamps.tolist(), r.values.tolist(), strict=True))


class Http:
    """One keep-alive connection to the endpoint; every call bounded by a timeout."""

    def __init__(self, srv: ServerThread) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)

    def __call__(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any] | None, http.client.HTTPResponse]:
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else None), resp


@pytest.fixture
def influx(server_factory: Callable[..., ServerThread]) -> ServerThread:
    return server_factory(http_port=0)


def test_telegraf_batch_is_stored_and_bad_lines_are_named(influx: ServerThread) -> None:
    http_ = Http(influx)
    body = gzip.compress(TELEGRAF_BATCH.encode())
    headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
    status, err, _ = http_("POST", "/write?db=telegraf", body, headers)
    assert status == 400 and err is not None
    msg = err["error"]
    assert msg.startswith("partial write:") and "unable to parse" in msg
    assert [e["line"] for e in err["lines"]] == [4, 8]  # the string field, the bad line
    assert "uptime_format" in err["lines"][0]["error"]
    assert "this line is not line protocol" in err["lines"][1]["error"]

    t0 = NS // 1000
    idle = [(t0, 97.5), (t0 + 10_000_000, 97.0)]
    assert stored(influx, "cpu,cpu=cpu-total,host=plc-gw01.usage_idle") == idle
    assert stored(influx, "mem,host=plc-gw01.used") == [(t0, 2147483648.0)]
    assert stored(influx, "system,host=plc-gw01.n_cpus") == [(t0, 4.0)]
    assert stored(influx, "net,host=plc-gw01,interface=eth0.bytes_recv") == [(t0, 123456789.0)]
    assert stored(influx, "net,host=plc-gw01,interface=eth0.up") == [(t0, 1.0)]
    name = r"modbus,host=plc-gw01,name=Boiler\ 1,slave_id=1,type=holding_register.FIC101\.PV"
    assert stored(influx, name) == [(t0, 42.5)]
    # the string field made no tag; the other fields of its line were written
    with sqlite3.connect(f"file:{influx.data_dir / 'catalog.sqlite3'}?mode=ro", uri=True) as db:
        names = {r[0] for r in db.execute("SELECT name FROM tags")}
    assert "system,host=plc-gw01.uptime_format" not in names
    assert "system,host=plc-gw01.load1" in names and len(names) == 18
    with connect(influx.url) as db:
        q = db.query(tag_id(influx, "cpu,cpu=cpu0,host=plc-gw01.usage_user"), 0, 1 << 60)
        stats = db.stats()["server"]
    assert q.qualities.tolist() == [192]
    assert stats["influx_lines"] == 9 and stats["influx_bad_lines"] == 2
    assert stats["influx_points"] == 21 and stats["influx_tags_created"] == 18


def test_telegraf_startup_sequence_on_one_connection(influx: ServerThread) -> None:
    http_ = Http(influx)
    status, _, resp = http_("GET", "/ping")
    assert status == 204 and "xtsdb" in (resp.getheader("X-Influxdb-Version") or "")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, body, _ = http_("POST", "/query", b"q=CREATE+DATABASE+%22telegraf%22", form)
    assert status == 200 and body == {"results": [{"statement_id": 0}]}
    status, body, _ = http_("POST", "/write?db=telegraf&rp=", f"m,host=a f=1.5 {NS}\n".encode())
    assert status == 204 and body is None
    status, _, _ = http_("HEAD", "/ping")
    assert status == 204
    assert stored(influx, "m,host=a.f") == [(NS // 1000, 1.5)]  # visible once answered


def test_precision_and_receive_time(influx: ServerThread) -> None:
    http_ = Http(influx)
    before = time.time_ns() // 1000
    body = b"p,u=s f=1 1700000000\np,u=none f=2\n"
    assert http_("POST", "/write?db=x&precision=s", body)[0] == 204
    after = time.time_ns() // 1000
    assert stored(influx, "p,u=s.f") == [(1_700_000_000_000_000, 1.0)]
    [(t, v)] = stored(influx, "p,u=none.f")
    assert before <= t <= after and v == 2.0
    assert http_("POST", "/api/v2/write?bucket=b&org=o&precision=ms", b"p,u=ms f=3 5")[0] == 204
    assert stored(influx, "p,u=ms.f") == [(5000, 3.0)]
    status, err, _ = http_("POST", "/write?precision=fortnight", b"p f=1 1")
    assert status == 400 and err is not None and "precision" in err["error"]


def test_chunked_gzip_and_expect_continue_raw(influx: ServerThread) -> None:
    payload = gzip.compress(f"c,k=v f=7 {NS}\n".encode())
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (payload[:10], payload[10:]))
    head = (
        b"POST /write?db=telegraf HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Encoding: gzip\r\nExpect: 100-continue\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", influx.http_port), timeout=10) as s:
        s.sendall(head)
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(chunks + b"0\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 204 No Content\r\n"), reply
    assert stored(influx, "c,k=v.f") == [(NS // 1000, 7.0)]


def test_size_limit_is_413(server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(http_port=0, max_frame=64 * 1024)
    big = b"m f=1 1\n" * 10_000  # 80 KB
    status, err, _ = Http(srv)("POST", "/write", big)
    assert status == 413 and err is not None and "exceeds" in err["error"]
    status, _, _ = Http(srv)("POST", "/write", gzip.compress(big), {"Content-Encoding": "gzip"})
    assert status == 413  # the decompressed size counts
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=10) as s:
        s.sendall(b"POST /write HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        s.sendall(b"10000\r\n" + b"x" * 0x10000 + b"\r\n" + b"10\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 413 ")


def test_errors_are_json(influx: ServerThread) -> None:
    http_ = Http(influx)
    status, err, _ = http_("GET", "/nope")
    assert status == 404 and err is not None and "/write" in err["error"]
    assert http_("GET", "/write")[0] == 405
    status, err, _ = http_("GET", "/query?q=SELECT+*+FROM")
    assert status == 400 and err is not None and "error parsing query" in err["error"]
    status, err, _ = http_("POST", "/write", b"only garbage\n")
    assert status == 400 and err is not None and err["error"].startswith("unable to parse")
    status, health, _ = http_("GET", "/health")
    assert status == 200 and health is not None and health["status"] == "pass"


def test_auth_with_tokens(server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(http_port=0, tokens=TOKENS)
    line = f"a,k=v f=1 {NS}\n".encode()

    def post(path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, body, _ = Http(srv)("POST", path, line, headers)
        return status, body

    assert Http(srv)("GET", "/ping")[0] == 204  # liveness needs no secret
    status, body = post("/write?db=x")
    assert status == 401 and "credentials" in body["error"]
    assert post("/write?db=x&u=telegraf&p=wrong-secret-0123456789abcdef")[0] == 401
    status, body = post(f"/write?db=x&u=reader&p={READ_SECRET}")
    assert status == 403 and "write role" in body["error"]
    basic = base64.b64encode(f"telegraf:{WRITE_SECRET}".encode()).decode()
    for headers, path in [
        ({}, f"/write?db=x&u=telegraf&p={WRITE_SECRET}"),
        ({"Authorization": f"Basic {basic}"}, "/write?db=x"),
        ({"Authorization": f"Token {WRITE_SECRET}"}, "/api/v2/write?bucket=x"),
        ({"Authorization": f"Token telegraf:{WRITE_SECRET}"}, "/write?db=x"),
        ({"Authorization": f"Bearer {WRITE_SECRET}"}, "/write?db=x"),
    ]:
        assert post(path, headers)[0] == 204, headers
    # CREATE DATABASE needs the write role too
    http_ = Http(srv)
    q = "/query?q=CREATE+DATABASE+telegraf"
    assert http_("POST", q, b"", {"Authorization": f"Bearer {READ_SECRET}"})[0] == 403
    assert Http(srv)("POST", q, b"", {"Authorization": f"Bearer {WRITE_SECRET}"})[0] == 200


def test_failed_auth_closes_the_connection(server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(http_port=0, tokens=TOKENS)
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=10) as s:
        s.sendall(b"POST /write?p=nope-nope-nope-nope HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        data = b""
        for _ in range(100):  # until EOF: the server hangs up after one guess
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 401 ") and b"Connection: close" in data


def test_many_points_in_slices_all_committed(influx: ServerThread, monkeypatch: Any) -> None:
    import xtsdb.server.influx as influx_mod

    monkeypatch.setattr(influx_mod, "SLICE_BYTES", 4096)  # many slices, one request
    n = 5_000
    ts = NS + np.arange(n, dtype=np.int64) * 1_000_000_000
    body = "".join(f"s,i={i % 3} v={i}i {t}\n" for i, t in enumerate(ts.tolist()))
    body = body.replace(f"v=1234i {ts[1234]}", "v=oops")  # a bad line deep inside
    status, err, _ = Http(influx)("POST", "/write", body.encode())
    assert status == 400 and err is not None and [e["line"] for e in err["lines"]] == [1235]
    got = sum(len(stored(influx, f"s,i={k}.v")) for k in range(3))
    assert got == n - 1


def test_http_port_config_and_the_removed_settings(tmp_path: Any) -> None:
    from xtsdb.server.config import ConfigError, ServerConfig

    assert ServerConfig().http_port == -1  # off by default
    assert ServerConfig.load(["--http-port", "8086"], {}).http_port == 8086
    assert ServerConfig.load([], {"XTSDB_HTTP_PORT": "0"}).http_port == 0
    with pytest.raises(ConfigError, match="http_port"):
        ServerConfig(http_port=-2)
    # The two ports it replaces are refused from every source, naming what replaces them.
    toml = tmp_path / "old.toml"
    for old in ("influx_port", "metrics_port"):
        flag = "--" + old.replace("_", "-")
        for argv, env in [
            ([flag, "8086"], {}),
            ([f"{flag}=8086"], {}),
            ([], {f"XTSDB_{old.upper()}": "8086"}),
            ([], {f"XTSDB_{old.upper()}": "-1"}),
        ]:
            with pytest.raises(ConfigError, match=f"{old}.*http_port") as exc:
                ServerConfig.load(argv, env)
            assert "--http-port" in str(exc.value)
        toml.write_text(f"{old} = 8086\n")
        with pytest.raises(ConfigError, match=f"key {old}: .*http_port"):
            ServerConfig.load(["--config", str(toml)], {})


def test_refused_lines_fail_alone_as_an_influx_partial_write(influx: ServerThread) -> None:
    strict = "strict,host=a.f"
    with connect(influx.url) as db:
        db.create_tag(strict, duplicates="reject")
        db.write(strict, [NS // 1000], [1.0])
    body = (
        f"other,host=a f=10 {NS}\n"  # 1
        f"strict,host=a f=99 {NS}\n"  # 2: the timestamp is stored already
        f"strict,host=a f=2 {NS + 1000}\n"  # 3: new, stored
        f"other,host=b f=20 {NS}\n"  # 4
        f"strict,host=a f=3 {NS + 1000}\n"  # 5: repeats line 3
    ).encode()
    status, err, _ = Http(influx)("POST", "/write?db=x", body)
    assert status == 400 and err is not None
    # InfluxDB 1.x: 400 {"error": "partial write: REASON dropped=N"}
    assert err["error"].startswith("partial write:") and err["error"].endswith(" dropped=2")
    assert [e["line"] for e in err["lines"]] == [2, 5]
    assert all("refuses duplicate timestamps" in e["error"] for e in err["lines"])
    t0 = NS // 1000
    assert stored(influx, strict) == [(t0, 1.0), (t0 + 1, 2.0)]
    assert stored(influx, "other,host=a.f") == [(t0, 10.0)]
    assert stored(influx, "other,host=b.f") == [(t0, 20.0)]


def test_racing_requests_to_a_reject_tag_one_wins_others_stored(influx: ServerThread) -> None:
    import threading

    with connect(influx.url) as db:
        db.create_tag("race.f", duplicates="reject")
    statuses: list[tuple[int, Any]] = []
    rounds = 15

    def post(k: int) -> None:
        http_ = Http(influx)
        for r in range(rounds):
            body = f"race f={k} {NS + r * 1000}\nside,k={k} f={r} {NS + r * 1000}\n".encode()
            status, err, _ = http_("POST", "/write", body)
            statuses.append((status, err))

    threads = [threading.Thread(target=post, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ok = [s for s, _ in statuses if s == 204]
    refused = [e for s, e in statuses if s == 400]
    assert len(ok) + len(refused) == 3 * rounds
    assert len(ok) == rounds  # one winner per timestamp
    assert all(e["lines"] == [{"line": 1, "error": e["lines"][0]["error"]}] for e in refused)
    assert all(e["error"].endswith("dropped=1") for e in refused)
    assert len(stored(influx, "race.f")) == rounds
    for k in range(3):  # the other line of every request was stored
        assert [v for _, v in stored(influx, f"side,k={k}.f")] == [float(r) for r in range(rounds)]


def test_a_trickled_request_head_is_cut_off_at_frame_timeout(
    server_factory: Callable[..., ServerThread],
) -> None:
    srv = server_factory(http_port=0, frame_timeout=1.0, idle_timeout=300.0)
    address = ("127.0.0.1", srv.http_port)
    with (
        socket.create_connection(address, timeout=10) as idle,
        socket.create_connection(address, timeout=10) as slow,
    ):
        slow.sendall(b"POST /write HTTP/1.1\r\n")
        started = time.monotonic()
        closed_after = None
        while time.monotonic() - started < 6:  # a header byte every 0.2 s, never the end
            try:
                slow.sendall(b"X")
                slow.settimeout(0.2)
                if slow.recv(4096) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None and closed_after < 3.0, closed_after
        # Waiting between requests is not a slow head: idle_timeout applies there.
        idle.sendall(b"POST /write HTTP/1.1\r\nContent-Length: 8\r\n\r\nk f=1 1\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 204 ")
        time.sleep(1.5)
        idle.sendall(b"POST /write HTTP/1.1\r\nContent-Length: 8\r\n\r\nk f=2 2\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 204 ")


def test_bodies_being_received_share_the_partial_budget(
    server_factory: Callable[..., ServerThread],
) -> None:
    srv = server_factory(http_port=0, max_frame=1 << 20, max_partial_bytes=1 << 20)
    address = ("127.0.0.1", srv.http_port)
    body = b"b f=1 1\n" * (100 * 1024)  # 800 KiB
    head = b"POST /write HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
    with (
        socket.create_connection(address, timeout=10) as a,
        socket.create_connection(address, timeout=10) as b,
    ):
        a.sendall(head + body[:1000])  # holds 800 KiB of the 1 MiB budget
        time.sleep(0.3)
        b.sendall(head)
        reply = b.recv(4096)
        assert reply.startswith(b"HTTP/1.1 503 ") and b"overloaded" in reply, reply
        a.sendall(body[1000:])
        assert a.recv(4096).startswith(b"HTTP/1.1 204 ")
    status, _, _ = Http(srv)("POST", "/write", body)  # the budget was given back
    assert status == 204
