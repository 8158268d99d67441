"""The server's HTTP plumbing: a listener, a router, limits and replies.

:class:`HttpListener` serves HTTP/1.1 on the server's own event loop: it
accepts connections (up to a cap), reads each request with
:mod:`xtsdb.server.http_request` under the :class:`HttpLimits` (idle time
before a request, time for a started request, body size, the shared
:class:`~xtsdb.server.limits.ByteBudget`), hands it to a :class:`Router`
((method, path) -> handler, and checks run on a request's head before its
body is read), writes the :class:`HttpReply`, and on :meth:`~HttpListener.close`
lets requests in progress finish within a timeout. An endpoint is a router
with its routes; each endpoint says how its errors look (``error_reply``).

The server's one HTTP port (:mod:`xtsdb.server.http_api`) is an
:class:`HttpListener` with every route on one router.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any, Self

from xtsdb.server.http_request import MAX_HEAD, HttpError, HttpRequest, read_body, read_head
from xtsdb.server.http_request import response as encode_response
from xtsdb.server.limits import ByteBudget

log = logging.getLogger("xtsdb.server")

TEXT = "text/plain; charset=utf-8"


@dataclass
class HttpReply:
    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: Mapping[str, str] = field(default_factory=dict)
    close: bool = False  # hang up once it is sent (a failed authentication)


Handler = Callable[[HttpRequest], Awaitable[HttpReply]]
HeadCheck = Callable[[HttpRequest], None]  # raises HttpError to refuse a request


def route_path(path: str) -> str:
    """The path a route is found by: a trailing slash does not matter (``/write/``)."""
    return path.rstrip("/") or "/"


class Router:
    """Handlers by (method, path); a path it lacks is a 404, a method a path lacks a 405."""

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Handler]] = {}
        self._checks: dict[str, HeadCheck] = {}
        self._encodings: dict[str, frozenset[str]] = {}

    def add(
        self,
        methods: str,
        path: str,
        handler: Handler,
        *,
        check_head: HeadCheck | None = None,
        encodings: frozenset[str] = frozenset(),
    ) -> None:
        """Serve ``methods`` (space-separated: ``"GET HEAD"``) of ``path`` with ``handler``.

        ``check_head`` runs on every request for ``path`` before its body is read
        (credentials: a stranger's body is never read), whatever its method.
        ``encodings``: body encodings the handler decodes itself (Prometheus'
        snappy), handed over as received instead of refused.
        """
        if encodings:
            self._encodings[route_path(path)] = encodings
        by_method = self._routes.setdefault(route_path(path), {})
        for method in methods.split():
            if method in by_method:
                raise ValueError(f"{method} {path} already has a handler")
            by_method[method] = handler
        if check_head is not None:
            self._checks[route_path(path)] = check_head

    def paths(self) -> list[str]:
        return list(self._routes)

    def encodings(self, req: HttpRequest) -> frozenset[str]:
        return self._encodings.get(route_path(req.path), frozenset())

    def check_head(self, req: HttpRequest) -> None:
        check = self._checks.get(route_path(req.path))
        if check is not None:
            check(req)

    async def dispatch(self, req: HttpRequest) -> HttpReply:
        by_method = self._routes.get(route_path(req.path))
        if by_method is None:
            served = ", ".join(self.paths())
            raise HttpError(
                404, f"not found: {req.path} (this endpoint serves {served})", close=False
            )
        handler = by_method.get(req.method)
        if handler is None:
            allowed = list(by_method)
            raise HttpError(
                405,
                f"method {req.method} not allowed here; use {' or '.join(allowed)}",
                close=False,
                headers={"Allow": ", ".join(allowed)},
            )
        return await handler(req)


def text_error(exc: HttpError) -> HttpReply:
    return HttpReply(exc.status, f"{exc}\n".encode(), headers=exc.headers)


@dataclass(frozen=True)
class HttpLimits:
    """What one connection may hold and for how long (None: no time limit)."""

    max_body: int = 64 * 1024  # decompressed
    max_connections: int | None = None  # beyond it a connection is answered 503 and closed
    idle_timeout: float | None = None  # before a request's first byte
    request_timeout: float | None = None  # the rest of the head once begun, then the body
    write_timeout: float | None = None  # sending the answer to a client that does not read
    keep_alive: bool = True  # False: one request per connection
    backlog: int = 256


class HttpListener:
    """One listening HTTP port serving a :class:`Router`: :meth:`start` it, :meth:`close` it.

    An endpoint is a subclass that makes its router of its own methods.
    """

    def __init__(
        self,
        router: Router,
        limits: HttpLimits,
        *,
        name: str,
        budget: ByteBudget | None = None,
        error_reply: Callable[[HttpError], HttpReply] = text_error,
        on_answer: Callable[[int], None] | None = None,
    ) -> None:
        self.router = router
        self.limits = limits
        self.name = name  # what it serves, in log lines
        self.budget = budget  # bodies being received count against it (shared with the binary port)
        self.error_reply = error_reply
        self.on_answer = on_answer  # called with the status of every request answered
        self.host = ""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tls = False
        self._stopping = False  # close() has begun: answers say Connection: close
        self._conns: dict[asyncio.Task[Any], bool] = {}  # handler task -> busy with a request

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}"

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def start(self, host: str, port: int, ssl: SSLContext | None = None) -> Self:
        """Listen; with ``ssl``, HTTPS only (the binary port's certificate and rules)."""
        self._server = await asyncio.start_server(
            self._connection,
            host,
            port,
            limit=MAX_HEAD,
            backlog=self.limits.backlog,
            ssl=ssl,
            # A handshake that never finishes must not hold a socket for long either.
            ssl_handshake_timeout=(self.limits.request_timeout or 60.0) if ssl else None,
        )
        self._tls = ssl is not None
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        self._stopping = False
        log.info("%s on %s (%s)", self.name, self.url, " ".join(self.router.paths()))
        return self

    async def close(self, timeout: float = 0.0) -> None:
        """Stop accepting; let requests in progress finish within ``timeout``; drop idle ones."""
        if self._server is None:
            return
        self._stopping = True
        self._server.close()
        for task, busy in list(self._conns.items()):
            if not busy:
                task.cancel()
        busy_tasks = [t for t, b in self._conns.items() if b]
        if busy_tasks and timeout > 0:
            await asyncio.wait(busy_tasks, timeout=timeout)
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None

    # -- connections -----------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = False
        try:
            cap = self.limits.max_connections
            if cap is not None and len(self._conns) > cap:
                refused = self.error_reply(HttpError(503, f"too many connections ({cap})"))
                writer.write(self._encode(refused, keep_alive=False))
                return
            while await self._one_request(reader, writer, task):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except TimeoutError:
            pass  # idle, or a request that did not arrive in time: just hang up
        except asyncio.CancelledError:
            # close() ends idle connections this way. The task is the connection's own,
            # top level, and asyncio's stream callback logs a cancelled one as an error.
            pass
        except Exception:  # a bug here must cost this connection only
            log.exception("%s failed on a request", self.name)
        finally:
            self._conns.pop(task, None)
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, task: asyncio.Task[Any]
    ) -> bool:
        """Serve one request; whether the connection stays open for another."""
        limits = self.limits
        try:
            # The first byte may take idle_timeout; a head begun must arrive within
            # request_timeout, as a binary frame must (a trickled head is a slow loris).
            req = await read_head(
                reader, idle_timeout=limits.idle_timeout, head_timeout=limits.request_timeout
            )
        except HttpError as exc:
            writer.write(self._encode(self.error_reply(exc), keep_alive=False))
            return False
        if req is None:
            return False
        self._conns[task] = True  # from here on, close() lets it finish
        keep = req.keep_alive and limits.keep_alive
        try:
            try:
                self.router.check_head(req)
                await asyncio.wait_for(
                    read_body(
                        req,
                        reader,
                        writer,
                        limits.max_body,
                        self.budget,
                        self.router.encodings(req),
                    ),
                    limits.request_timeout,
                )
                reply = await self.router.dispatch(req)
            except HttpError as exc:
                reply = self.error_reply(exc)
                keep = keep and not exc.close
            except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                raise
            except Exception as exc:  # a bug: answer it, log it, keep serving others
                log.exception("%s failed on %s %s", self.name, req.method, req.path)
                reply = self.error_reply(HttpError(500, f"internal error: {exc!r}"))
                keep = False
            keep = keep and not reply.close and not self._stopping
            if self.on_answer is not None:
                self.on_answer(reply.status)
            writer.write(self._encode(reply, keep_alive=keep, head_only=req.method == "HEAD"))
            await asyncio.wait_for(writer.drain(), limits.write_timeout)
        finally:
            self._conns[task] = False
            if self.budget is not None:
                self.budget.give(req.reserved)
            req.body = b""
        return keep

    @staticmethod
    def _encode(reply: HttpReply, *, keep_alive: bool, head_only: bool = False) -> bytes:
        return encode_response(
            reply.status,
            reply.body,
            content_type=reply.content_type,
            headers=reply.headers,
            keep_alive=keep_alive,
            head_only=head_only,
        )
