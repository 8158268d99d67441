"""The shared HTTP plumbing (server/http_endpoint.py): a Router on an HttpListener.

Real sockets on 127.0.0.1; each test starts its own listener with a few routes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from xtsdb.server.http_endpoint import HttpLimits, HttpListener, HttpReply, Router
from xtsdb.server.http_request import HttpError, HttpRequest
from xtsdb.server.limits import ByteBudget


async def _echo(req: HttpRequest) -> HttpReply:
    return HttpReply(200, b"echo:" + req.body)


async def _answer(host: str, port: int, raw: bytes) -> bytes:
    """Send ``raw``, then read until the server closes the connection."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


@pytest.fixture
async def listener() -> AsyncIterator[HttpListener]:
    router = Router()
    router.add("POST", "/echo", _echo)

    def refuse(req: HttpRequest) -> None:
        if req.headers.get("x-key") != "yes":
            raise HttpError(401, "no key", close=False)

    router.add("POST", "/guarded", _echo, check_head=refuse)
    limits = HttpLimits(max_body=1024, idle_timeout=5, request_timeout=5, write_timeout=5)
    srv = await HttpListener(router, limits, name="test endpoint").start("127.0.0.1", 0)
    yield srv
    await srv.close()


async def test_routes_by_method_and_path(listener: HttpListener) -> None:
    host, port = listener.host, listener.port
    ok = await _answer(host, port, b"POST /echo/ HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
    assert ok.startswith(b"HTTP/1.1 200 ") and ok.endswith(b"echo:hi")  # trailing slash ignored
    wrong_method = await _answer(host, port, b"GET /echo HTTP/1.0\r\n\r\n")
    assert wrong_method.startswith(b"HTTP/1.1 405 ") and b"Allow: POST\r\n" in wrong_method
    missing = await _answer(host, port, b"GET /nope HTTP/1.0\r\n\r\n")
    assert missing.startswith(b"HTTP/1.1 404 ") and b"/echo" in missing


async def test_keep_alive_serves_several_requests_on_one_connection(
    listener: HttpListener,
) -> None:
    one = b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\n\r\na"
    last = b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\nb"
    data = await _answer(listener.host, listener.port, one + one + last)
    assert data.count(b"HTTP/1.1 200 ") == 3
    assert data.endswith(b"echo:b")


async def test_head_check_refuses_before_the_body_is_read(listener: HttpListener) -> None:
    # The body is announced but never sent: the answer must not wait for it.
    head = b"POST /guarded HTTP/1.1\r\nContent-Length: 100\r\n\r\n"
    reader, writer = await asyncio.open_connection(listener.host, listener.port)
    writer.write(head)
    status = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status.startswith(b"HTTP/1.1 401 ")
    allowed = await _answer(
        listener.host,
        listener.port,
        b"POST /guarded HTTP/1.0\r\nX-Key: yes\r\nContent-Length: 2\r\n\r\nok",
    )
    assert allowed.startswith(b"HTTP/1.1 200 ") and allowed.endswith(b"echo:ok")


async def test_body_over_the_limit_or_the_budget_is_refused() -> None:
    router = Router()
    router.add("POST", "/echo", _echo)
    budget = ByteBudget(100)
    limits = HttpLimits(max_body=50, request_timeout=5)
    srv = await HttpListener(router, limits, name="t", budget=budget).start("127.0.0.1", 0)
    try:
        big = b"POST /echo HTTP/1.0\r\nContent-Length: 51\r\n\r\n" + b"x" * 51
        assert (await _answer(srv.host, srv.port, big)).startswith(b"HTTP/1.1 413 ")
        budget.take(80)  # others hold most of the budget: 40 more bytes do not fit
        fits_limit = b"POST /echo HTTP/1.0\r\nContent-Length: 40\r\n\r\n" + b"x" * 40
        assert (await _answer(srv.host, srv.port, fits_limit)).startswith(b"HTTP/1.1 503 ")
        budget.give(80)
        assert (await _answer(srv.host, srv.port, fits_limit)).startswith(b"HTTP/1.1 200 ")
        assert budget.used == 0  # every answered request gave its bytes back
    finally:
        await srv.close()


async def test_connection_cap_and_a_close_that_lets_busy_requests_finish() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(req: HttpRequest) -> HttpReply:
        started.set()
        await release.wait()
        return HttpReply(200, b"done")

    router = Router()
    router.add("GET", "/slow", slow)
    srv = await HttpListener(router, HttpLimits(max_connections=1), name="t").start("127.0.0.1", 0)
    busy = asyncio.create_task(_answer(srv.host, srv.port, b"GET /slow HTTP/1.1\r\n\r\n"))
    await asyncio.wait_for(started.wait(), 5)
    # Nothing sent: a request left unread would turn the server's close into a reset.
    refused = await _answer(srv.host, srv.port, b"")
    assert refused.startswith(b"HTTP/1.1 503 ") and b"too many connections (1)" in refused
    closing = asyncio.create_task(srv.close(timeout=5))
    await asyncio.sleep(0.05)
    release.set()
    await closing
    answer = await busy
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"done")
    assert b"Connection: close" in answer  # an HTTP/1.1 request, but the listener is closing


def test_a_route_is_declared_once() -> None:
    router = Router()
    router.add("GET HEAD", "/x", _echo)
    with pytest.raises(ValueError, match="already"):
        router.add("HEAD", "/x/", _echo)
