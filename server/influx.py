"""An InfluxDB 1.x-compatible HTTP endpoint, so Telegraf and Influx clients write unchanged.

- ``POST /write?db=..&precision=..`` (and InfluxDB 2's ``POST /api/v2/write``):
  a body of line protocol (:mod:`xtsdb.protocol.line_protocol`), plain or gzip,
  ``Content-Length`` or chunked. Each series+field is a tag *named*
  ``measurement[,k=v...].field`` (:func:`~xtsdb.protocol.line_protocol.series_name`);
  a name not in the catalog yet is created, always: that is how Telegraf is used.
  The points go through the same group-commit :class:`WriteQueue` as the
  binary protocol, and **204 is sent only once they are committed** (fsynced
  with the default durability). Bad lines are answered 400 with an
  InfluxDB-style ``{"error": "partial write: ..."}`` naming each by line
  number; the good lines of the same request are written all the same (Telegraf
  drops a batch answered 4xx rather than retrying it, which is right: the
  good part is stored). ``db``, ``rp``, ``bucket`` and ``org`` are accepted and
  ignored: a server holds one database.
- ``GET|HEAD /ping`` (204) and ``GET /health``: liveness, no authentication.
- ``/query``: only ``CREATE DATABASE`` (a no-op answered with an empty result,
  so Telegraf starts cleanly); anything else is refused: read with the xtsdb client.

With tokens configured (:mod:`xtsdb.server.auth`) a request must carry one:
``?u=..&p=TOKEN``, ``Authorization: Basic`` (the password is the token;
Telegraf's ``username``/``password``), or ``Authorization: Token|Bearer TOKEN``.
Missing or wrong: 401 and the connection is closed (one guess per connection,
as on the binary port); a ``read`` token: 403. Parsing runs in the query
thread pool, a slice of the body at a time, so a large body neither stalls
the event loop nor holds its parsed form all at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xtsdb.protocol.errors import (
    AuthenticationFailed,
    InvalidInput,
    Overloaded,
    PermissionDenied,
    ShuttingDown,
    XtsdbError,
)
from xtsdb.protocol.line_protocol import PRECISIONS
from xtsdb.server.auth import PeerAuth, check_op
from xtsdb.server.context import ServerContext
from xtsdb.server.http_endpoint import HttpLimits, HttpListener, HttpReply, Router
from xtsdb.server.http_request import HttpError, HttpRequest
from xtsdb.server.influx_write import Queued, partial_write, prepare, refused_errors, slices
from xtsdb.server.limits import ByteBudget
from xtsdb.server.service import SERVER_VERSION

if TYPE_CHECKING:
    from xtsdb.server.config import ServerConfig

log = logging.getLogger("xtsdb.server")

SLICE_BYTES = 4 * 1024 * 1024  # body parsed (and queued) this much at a time
_CREATE_DB = re.compile(r"^\s*create\s+database\b", re.IGNORECASE)
_HEADERS = {"X-Influxdb-Version": f"1.8-compatible (xtsdb {SERVER_VERSION})"}


@dataclass
class Counters:
    requests: Counter[int] = field(default_factory=Counter)  # by status
    lines: int = 0
    points: int = 0
    bad_lines: int = 0
    tags_created: int = 0


class InfluxEndpoint(HttpListener):
    """The listening endpoint: :meth:`start` it, :meth:`close` it before the write queue stops."""

    def __init__(
        self,
        ctx: ServerContext,
        *,
        max_body: int,
        max_connections: int,
        idle_timeout: float,
        request_timeout: float,
        max_queue_bytes: int,
        budget: ByteBudget | None = None,
    ) -> None:
        self.ctx = ctx
        self.engine = ctx.engine
        self.idle_timeout = idle_timeout or None
        self.request_timeout = request_timeout or None
        self.max_queue_bytes = max_queue_bytes
        self.counters = Counters()
        router = Router()
        router.add("GET HEAD", "/ping", self._ping)
        router.add("GET HEAD", "/health", self._health)
        # Credentials come from the head: a stranger's body is never read.
        for path in ("/write", "/api/v2/write"):
            router.add("POST", path, self._write, check_head=self._authorize_head)
        router.add("GET POST", "/query", self._query, check_head=self._authorize_head)
        limits = HttpLimits(
            max_body=max_body,
            max_connections=max_connections,
            idle_timeout=self.idle_timeout,
            request_timeout=self.request_timeout,
            write_timeout=self.request_timeout,
        )
        super().__init__(
            router,
            limits,
            name="InfluxDB line protocol",
            budget=budget,  # shared with the binary port: bodies being received or served
            error_reply=_error_reply,
            on_answer=self._count,
        )
        ctx.gauges.append(self.stats)  # the stats op reports this endpoint's counters too

    @classmethod
    async def from_config(
        cls, ctx: ServerContext, config: ServerConfig, budget: ByteBudget | None = None
    ) -> InfluxEndpoint:
        """Started on ``config.host:config.influx_port``, with the binary port's limits."""
        endpoint = cls(
            ctx,
            max_body=config.max_frame,
            max_connections=config.max_connections,
            idle_timeout=config.idle_timeout,
            request_timeout=config.frame_timeout,
            max_queue_bytes=config.max_queue_bytes,
            budget=budget,
        )
        return await endpoint.start(config.host, config.influx_port)

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "influx_requests": {str(k): v for k, v in c.requests.items()},
            "influx_lines": c.lines,
            "influx_points": c.points,
            "influx_bad_lines": c.bad_lines,
            "influx_tags_created": c.tags_created,
            "influx_connections": self.connections,
        }

    # -- routes ------------------------------------------------------------------

    def _count(self, status: int) -> None:
        self.counters.requests[status] += 1

    async def _ping(self, req: HttpRequest) -> HttpReply:
        return _reply(204, None)

    async def _health(self, req: HttpRequest) -> HttpReply:
        return _reply(200, {"name": "xtsdb", "status": "pass", "version": SERVER_VERSION})

    async def _query(self, req: HttpRequest) -> HttpReply:
        return _query(req.param("q"))

    def _authorize_head(self, req: HttpRequest) -> None:
        """Check the credentials of a request that needs them, before its body is read."""
        try:
            self._authorize(req, "write")
        except HttpError as exc:
            has_body = "content-length" in req.headers or "transfer-encoding" in req.headers
            exc.close = exc.close or (has_body and req.headers.get("content-length") != "0")
            raise

    def _authorize(self, req: HttpRequest, op: str) -> None:
        auth = self.ctx.auth
        if auth is None:
            return
        peer = PeerAuth()
        secrets = _credentials(req)
        if not secrets:
            raise HttpError(401, "unable to parse authentication credentials", close=False)
        for secret in secrets:
            with contextlib.suppress(AuthenticationFailed):
                peer.role = auth.authenticate(secret)
                break
        else:
            raise HttpError(401, "authorization failed", close=False)
        try:
            check_op(auth, peer, op)
        except PermissionDenied as exc:
            raise HttpError(403, str(exc), close=False) from None

    # -- writes ------------------------------------------------------------------

    async def _write(self, req: HttpRequest) -> HttpReply:
        precision = req.param("precision") or "ns"
        if precision not in PRECISIONS:
            raise HttpError(
                400,
                f"invalid precision {precision!r}: one of {', '.join(sorted(PRECISIONS))}",
                close=False,
            )
        if self.ctx.stopping:
            raise HttpError(503, "the server is stopping", close=False)
        loop = asyncio.get_running_loop()
        now_us = time.time_ns() // 1000  # receive time, for lines without a timestamp
        queued: list[tuple[Queued, asyncio.Future[int]]] = []
        errors: list[tuple[int, str]] = []
        lines = points = 0
        refused = False
        try:
            for piece, first_line in slices(req.body, SLICE_BYTES):
                prep = await loop.run_in_executor(
                    self.ctx.pool, prepare, self.engine, piece, precision, now_us, first_line
                )
                errors += prep.errors
                lines += prep.lines
                self.counters.tags_created += prep.created
                refused = refused or prep.refused > 0
                for q in prep.batches:
                    await self._room()
                    queued.append((q, self.ctx.writes.submit(q.batch)))
            # 204 only once every slice is committed: acknowledged means durable.
            done = await asyncio.gather(*(f for _, f in queued), return_exceptions=True)
            for (q, _), result in zip(queued, done, strict=True):
                if isinstance(result, InvalidInput):  # refused alone: its lines are reported
                    errors += refused_errors(q, result)
                    refused = True
                elif isinstance(result, BaseException):
                    raise result
                else:
                    points += q.batch.n_points
        except XtsdbError as exc:
            return _reply(_error_status(exc), {"error": f"{exc.name}: {exc}"})
        c = self.counters
        c.lines += lines
        c.points += points
        bad_lines = len({no for no, _ in errors})
        c.bad_lines += bad_lines
        if not errors:
            return _reply(204, None)
        errors.sort()
        return _reply(400, partial_write(errors, bad_lines, lines, points, refused=refused))

    async def _room(self) -> None:
        """Wait (bounded) while the write queue is over its limit, as binary writers are paused."""
        deadline = time.monotonic() + (self.request_timeout or 30.0)
        while self.ctx.writes.bytes > self.max_queue_bytes:
            if time.monotonic() > deadline:
                raise Overloaded("the write queue is full; retry later")
            await asyncio.sleep(0.01)


# -- helpers -----------------------------------------------------------------------


def _credentials(req: HttpRequest) -> list[str]:
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


def _query(q: str) -> HttpReply:
    statements = [s for s in q.split(";") if s.strip()]
    if statements and all(_CREATE_DB.match(s) for s in statements):
        # There is one database; creating one is a no-op that succeeds.
        return _reply(200, {"results": [{"statement_id": i} for i in range(len(statements))]})
    raise HttpError(
        400,
        "this endpoint only writes (CREATE DATABASE is accepted as a no-op); "
        "read with the xtsdb client or CLI",
        close=False,
    )


def _error_status(exc: XtsdbError) -> int:
    if isinstance(exc, InvalidInput):
        return 400
    if isinstance(exc, (Overloaded, ShuttingDown)):
        return 503
    return 500  # storage failures: 5xx makes Telegraf keep the batch and retry


def _reply(status: int, body: dict[str, Any] | None) -> HttpReply:
    data = b"" if body is None else json.dumps(body).encode() + b"\n"
    return HttpReply(status, data, content_type="application/json", headers=_HEADERS)


def _error_reply(exc: HttpError) -> HttpReply:
    reply = _reply(exc.status, {"error": str(exc)})
    reply.headers = {**_HEADERS, **exc.headers}
    reply.close = exc.status == 401  # a failed guess ends the connection, as on the binary port
    return reply
