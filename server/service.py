"""What the server does with one request, independent of sockets.

:meth:`Service.dispatch` takes a decoded request, finds its op in the route
table (:data:`~.routes.ROUTES`), checks the connection's role against the op's
declared one, parses the request with the op's declaration and calls the
op's handler. It returns either the response frame at once (``hello``,
``ping``, ``tag_get`` and every request refused by validation) or a coroutine
producing it (work that waits for the group commit or runs in the pool). The
connection writes the bytes or runs the coroutine as a task; nothing here knows
about transports.

Responses that carry arrays (query, plot, last, aggregate, interpolate) are
framed with ``encode_frame_parts``: pieces whose large arrays are views of the
engine's result, handed to ``transport.writelines`` without being joined.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Coroutine, Mapping
from importlib import metadata
from typing import Any

from xtsdb.protocol import (
    DEFAULT_MAX_FRAME,
    HELLO,
    encode_frame,
    encode_frame_parts,
    error_response,
    parse_request_header,
    readable_id,
)
from xtsdb.protocol.declare import Message, Op
from xtsdb.protocol.errors import (
    AuthenticationFailed,
    FrameTooLarge,
    InternalError,
    ShuttingDown,
    XtsdbError,
)
from xtsdb.protocol.ops import Hello, Welcome, negotiate
from xtsdb.server.auth import PeerAuth, check_op
from xtsdb.server.context import ServerContext
from xtsdb.server.routes import ROUTES, Frame

log = logging.getLogger("xtsdb.server")

try:
    SERVER_VERSION = metadata.version("xtsdb")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    SERVER_VERSION = "0+unknown"
SERVER_NAME = f"xtsdb/{SERVER_VERSION}"

Response = Frame | Coroutine[Any, Any, Frame]


class Service:
    """The binary protocol's request dispatcher over a :class:`ServerContext`."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    @property
    def auth(self) -> Any:
        return self.ctx.auth

    def dispatch(self, msg: Mapping[str, Any], peer: PeerAuth | None = None) -> Response:
        """The response to ``msg``: ready bytes, or a coroutine that makes them.

        ``peer`` is the connection's authentication state; without one the
        request counts as unauthenticated (fail closed).
        """
        ctx = self.ctx
        req_id = readable_id(msg)
        started = time.perf_counter()
        peer = peer if peer is not None else PeerAuth()
        try:
            req_id, name = parse_request_header(msg)
            ctx.requests[name] += 1
            if ctx.stopping and name != "ping":
                raise ShuttingDown("the server is stopping")
            check_op(ctx.auth, peer, name)
            if name == HELLO.name:  # the one op that changes the connection's state
                return self._timed(name, msg, started, self._hello(req_id, msg, peer))
            route = ROUTES[name]
            req = route.op.parse(msg)
            if ctx.cluster is None:
                result = route.handler(ctx, req)
            else:  # reads may be answered by another node, deletes go through the log
                result = ctx.cluster.dispatch(ctx, route.op, route.handler, req, msg)
        except Exception as exc:
            return self.error(req_id, exc)
        if inspect.isawaitable(result):
            return self._finish(req_id, route.op, result, (name, msg, started))
        try:
            frame = self._frame(req_id, route.op, result)
        except Exception as exc:
            return self.error(req_id, exc)
        return self._timed(name, msg, started, frame)

    def error(self, req_id: int | None, exc: BaseException) -> bytes:
        """The error frame for ``exc``; an unexpected exception is logged with its traceback."""
        if isinstance(exc, XtsdbError):
            err: XtsdbError = exc
        else:
            log.error("internal error handling request %s", req_id, exc_info=exc)
            err = InternalError(f"{type(exc).__name__}: {exc}")
        self.ctx.errors[err.name] += 1
        frame: bytes = encode_frame(error_response(req_id, err))
        return frame

    async def _finish(
        self,
        req_id: int,
        op: Op[Any, Any],
        work: Awaitable[Message],
        timing: tuple[str, Mapping[str, Any], float],
    ) -> Frame:
        try:
            return self._frame(req_id, op, await work)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self.error(req_id, exc)
        finally:
            self._observed(*timing)

    def _timed(self, name: str, msg: Mapping[str, Any], started: float, frame: Frame) -> Frame:
        self._observed(name, msg, started)
        return frame

    def _observed(self, name: str, msg: Mapping[str, Any], started: float) -> None:
        if self.ctx.observe is not None:
            self.ctx.observe(name, msg, time.perf_counter() - started)

    def _frame(self, req_id: int, op: Op[Any, Any], resp: Message) -> Frame:
        """The success frame of ``resp``: pieces if it carries arrays (sent uncopied)."""
        answer = op.answer(req_id, resp)
        if not op.bulky:
            frame: bytes = encode_frame(answer, DEFAULT_MAX_FRAME)
            return frame
        try:
            return encode_frame_parts(answer, self.ctx.max_frame)
        except FrameTooLarge:
            raise FrameTooLarge(
                f"the {op.name} result does not fit in one frame of {self.ctx.max_frame} "
                "bytes; ask for a shorter range or pass a limit"
            ) from None

    def _hello(self, req_id: int, msg: Mapping[str, Any], peer: PeerAuth) -> bytes:
        hello: Hello = HELLO.parse(msg)
        version = negotiate(hello.versions)
        auth = self.ctx.auth
        if auth is not None:
            try:
                peer.role = auth.authenticate(hello.token)
            except AuthenticationFailed:
                peer.role, peer.hang_up = None, True  # one guess per connection
                raise
        welcome = Welcome(
            version=version, server=SERVER_NAME, max_frame=self.ctx.max_frame, auth=auth is not None
        )
        frame: bytes = encode_frame(HELLO.answer(req_id, welcome))
        return frame

    def stats(self) -> dict[str, Any]:
        return self.ctx.stats()
