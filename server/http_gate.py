"""What the HTTP routes that read or write data share: credentials, and the gate to the engine.

The HTTP port opens before recovery (so ``/readyz`` can say "not yet"), when
there is no engine to write to. A data route's handler is therefore wrapped by
the :class:`DataGate`: until the server attaches its
:class:`~xtsdb.server.context.ServerContext` it answers 503 ("starting"); once
the server begins to stop, 503 ("stopping"); in between the handler runs with
the context and is counted, so the server can wait for the requests in progress
(and the commits they wait for) before it stops the write queue.

Credentials (:func:`authorize`) are checked on a request's head, before its
body is read, the same way for every data route: ``?u=..&p=TOKEN``,
``Authorization: Basic`` (the password is the token; Telegraf's
``username``/``password``) or ``Authorization: Token|Bearer TOKEN``
(Prometheus' ``authorization``/``bearer_token``). Missing or wrong: 401, and
the connection is closed (one guess per connection; a stranger's body is
never read); a ``read`` token on a route that writes: 403.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from collections.abc import Awaitable, Callable

from xtsdb.protocol.errors import AuthenticationFailed, Overloaded
from xtsdb.server.auth import Authenticator
from xtsdb.server.context import ServerContext
from xtsdb.server.http_endpoint import Handler, HeadCheck, HttpReply
from xtsdb.server.http_request import HttpError, HttpRequest

DataHandler = Callable[[ServerContext, HttpRequest], Awaitable[HttpReply]]
RETRY = {"Retry-After": "1"}


def credentials(req: HttpRequest) -> list[str]:
    """Secrets the request presents, most specific first (any one may match)."""
    out: list[str] = []
    scheme, _, value = req.headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            out.append(base64.b64decode(value, validate=True).decode().partition(":")[2])
    elif scheme.lower() in ("token", "bearer") and value:
        out.append(value)
        if ":" in value:  # InfluxDB 1.8's 2.x compatibility form: Token user:password
            out.append(value.partition(":")[2])
    if req.query.get("p"):
        out.append(req.query["p"])
    return [s for s in out if s]


def authorize(auth: Authenticator | None, req: HttpRequest, need: str) -> None:
    """Set ``req.role`` from its credentials; HttpError 401 or 403 unless it holds ``need``.

    ``need`` is ``"read"`` (any valid token) or ``"write"``. Without tokens
    configured anyone may do anything.
    """
    if auth is None:
        req.role = "write"
        return
    secrets = credentials(req)
    if not secrets:
        raise HttpError(401, "unable to parse authentication credentials", close=False)
    for secret in secrets:
        with contextlib.suppress(AuthenticationFailed):
            req.role = auth.authenticate(secret)
            break
    else:
        raise HttpError(401, "authorization failed", close=False)
    if need == "write" and req.role != "write":
        raise HttpError(
            403, f"{req.method} {req.path} needs a token with the write role", close=False
        )


class DataGate:
    """Credentials and the engine's availability, for every route that reads or writes data."""

    def __init__(
        self, auth: Authenticator | None, *, max_queue_bytes: int, queue_wait: float
    ) -> None:
        self.auth = auth
        self.max_queue_bytes = max_queue_bytes
        self.queue_wait = queue_wait  # longest wait for room in the write queue
        self.ctx: ServerContext | None = None
        self.stopping = False
        self.busy = 0  # data requests being served
        self._idle = asyncio.Event()
        self._idle.set()

    def attach(self, ctx: ServerContext) -> None:
        """The engine is open: data routes serve from now on."""
        self.ctx = ctx

    def check(self, need: str) -> HeadCheck:
        """A head check that authenticates a request and requires the role ``need``."""

        def check(req: HttpRequest) -> None:
            try:
                authorize(self.auth, req, need)
            except HttpError as exc:
                headers = req.headers
                has_body = "content-length" in headers or "transfer-encoding" in headers
                exc.close = exc.close or (has_body and headers.get("content-length") != "0")
                raise

        return check

    def route(self, handler: DataHandler) -> Handler:
        """``handler`` with the server's context, or 503 while starting or stopping."""

        async def gated(req: HttpRequest) -> HttpReply:
            ctx = self.ctx
            if self.stopping or (ctx is not None and ctx.stopping):
                raise HttpError(503, "the server is stopping", close=False)
            if ctx is None:
                raise HttpError(
                    503, "starting: recovery is running; retry shortly", close=False, headers=RETRY
                )
            self.busy += 1
            self._idle.clear()
            try:
                return await handler(ctx, req)
            finally:
                self.busy -= 1
                if not self.busy:
                    self._idle.set()

        return gated

    async def drain(self, timeout: float) -> int:
        """Refuse new data requests, await those running (up to ``timeout``): how many remain."""
        self.stopping = True
        if self.busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        return self.busy

    async def room(self, ctx: ServerContext) -> None:
        """Wait (bounded) while the write queue is over its limit, as binary writers are paused."""
        deadline = time.monotonic() + self.queue_wait
        while ctx.writes.bytes > self.max_queue_bytes:
            if time.monotonic() > deadline:
                raise Overloaded("the write queue is full; retry later")
            await asyncio.sleep(0.01)
