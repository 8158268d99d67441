"""The ``/query`` route's handler on a real HTTP listener: GET, POST form bodies, chunked.

A Router on an HttpListener (127.0.0.1, a free port) serves ``/query`` with
:func:`influxql_route.answer` over a real engine, as the InfluxDB endpoint
wires it; requests are raw HTTP/1.0 over a socket.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from xtsdb.server.context import ServerContext
from xtsdb.server.engine import Engine
from xtsdb.server.http_endpoint import HttpLimits, HttpListener, HttpReply, Router
from xtsdb.server.http_request import HttpRequest
from xtsdb.server.influx_write import prepare
from xtsdb.server.influxql_route import answer
from xtsdb.server.write_queue import WriteQueue

LINES = b"cpu,host=a v=1 1000000000\ncpu,host=b v=3 2000000000\n"


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[HttpListener]:
    engine = Engine.open(tmp_path / "data")
    prepared = prepare(engine, LINES, "ns", 0, 1)
    engine.write_batches([q.batch for q in prepared.batches])
    pool = ThreadPoolExecutor(2)
    ctx = ServerContext(engine, WriteQueue(engine, max_queue_bytes=1 << 20), pool, 1 << 20)

    async def query(req: HttpRequest) -> HttpReply:
        return await answer(ctx, req, may_write=req.headers.get("x-role") == "write")

    router = Router()
    router.add("GET POST", "/query", query)
    limits = HttpLimits(max_body=1 << 16, idle_timeout=5, request_timeout=5, write_timeout=5)
    srv = await HttpListener(router, limits, name="influxql test").start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.close()
        pool.shutdown()
        engine.close()


async def _ask(srv: HttpListener, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def test_get_and_post_answer_the_same(listener: HttpListener) -> None:
    params = {"q": "SELECT sum(v) FROM cpu; SHOW TAG VALUES WITH KEY = host", "epoch": "s"}
    encoded = urllib.parse.urlencode(params)
    status, headers, got = await _ask(listener, f"GET /query?{encoded} HTTP/1.0\r\n\r\n".encode())
    assert status == 200 and headers["content-type"] == "application/json"
    results = json.loads(got)["results"]
    assert results[0]["series"][0]["values"] == [[0, 4]]
    assert results[1]["series"][0]["values"] == [["host", "a"], ["host", "b"]]
    form = (
        "POST /query?db=telegraf HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(encoded)}\r\n\r\n{encoded}"
    )
    status, _, posted = await _ask(listener, form.encode())
    assert status == 200 and json.loads(posted) == json.loads(got)


async def test_chunked_errors_and_roles(listener: HttpListener) -> None:
    q = urllib.parse.urlencode({"q": "SELECT v FROM cpu GROUP BY host", "chunked": "true"})
    status, _, body = await _ask(listener, f"GET /query?{q} HTTP/1.0\r\n\r\n".encode())
    lines = [json.loads(line) for line in body.splitlines()]
    assert status == 200 and [r["results"][0].get("partial") for r in lines] == [True, None]
    q = urllib.parse.urlencode({"q": "SELECT v FROM"})
    status, _, body = await _ask(listener, f"GET /query?{q} HTTP/1.0\r\n\r\n".encode())
    assert status == 400 and "error parsing query" in json.loads(body)["error"]
    q = urllib.parse.urlencode({"q": "CREATE DATABASE telegraf"})
    status, _, _ = await _ask(listener, f"GET /query?{q} HTTP/1.0\r\n\r\n".encode())
    assert status == 403
    raw = f"GET /query?{q} HTTP/1.0\r\nX-Role: write\r\n\r\n".encode()
    status, _, body = await _ask(listener, raw)
    assert status == 200 and json.loads(body) == {"results": [{"statement_id": 0}]}
