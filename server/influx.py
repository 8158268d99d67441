"""The InfluxDB 1.x API of the HTTP port, so Telegraf, Grafana and Influx clients work unchanged.

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
- ``GET|POST /query``: InfluxQL (:mod:`xtsdb.server.influxql_route`); any
  token may query, ``CREATE DATABASE`` (a no-op) needs the ``write`` role.
- ``GET|HEAD /ping`` (204) and ``GET /health``: liveness, no authentication.

Credentials and the 503 answers while the server starts or stops come from
:mod:`xtsdb.server.http_gate`: the same rules as every data route (a ``read``
token may query, not write). Parsing runs in the query thread pool, a slice
of the body at a time, so a large body neither stalls the event loop nor
holds its parsed form all at once; a slice of 2 MB or more is parsed in the
worker processes (:mod:`.influx_parse`), its tags named here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from xtsdb.protocol.errors import InvalidInput, Overloaded, ShuttingDown, XtsdbError
from xtsdb.protocol.line_protocol import PRECISIONS, SMALL_BODY_BYTES
from xtsdb.server import influxql_route
from xtsdb.server.context import ServerContext
from xtsdb.server.http_endpoint import HttpReply, Router
from xtsdb.server.http_gate import DataGate
from xtsdb.server.http_request import HttpError, HttpRequest
from xtsdb.server.influx_write import (
    Queued,
    partial_write,
    prepare,
    prepare_inline,
    refused_errors,
    slices,
)
from xtsdb.server.service import SERVER_VERSION

log = logging.getLogger("xtsdb.server")

SLICE_BYTES = 4 * 1024 * 1024  # body parsed (and queued) this much at a time
HEADERS = {"X-Influxdb-Version": f"1.8-compatible (xtsdb {SERVER_VERSION})"}


@dataclass
class Counters:
    lines: int = 0
    points: int = 0
    bad_lines: int = 0
    tags_created: int = 0


class InfluxRoutes:
    """``/ping``, ``/health``, ``/write``, ``/api/v2/write`` and ``/query``, behind a gate."""

    def __init__(self, gate: DataGate) -> None:
        self.gate = gate
        self.counters = Counters()

    def add_to(self, router: Router) -> None:
        gate = self.gate
        router.add("GET HEAD", "/ping", self._ping)
        router.add("GET HEAD", "/health", self._health)
        # Credentials come from the head: a stranger's body is never read.
        for path in ("/write", "/api/v2/write"):
            router.add("POST", path, gate.route(self._write), check_head=gate.check("write"))
        router.add("GET POST", "/query", gate.route(self._query), check_head=gate.check("read"))

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "influx_lines": c.lines,
            "influx_points": c.points,
            "influx_bad_lines": c.bad_lines,
            "influx_tags_created": c.tags_created,
        }

    # -- routes ------------------------------------------------------------------

    async def _ping(self, req: HttpRequest) -> HttpReply:
        return _reply(204, None)

    async def _health(self, req: HttpRequest) -> HttpReply:
        return _reply(200, {"name": "xtsdb", "status": "pass", "version": SERVER_VERSION})

    async def _query(self, ctx: ServerContext, req: HttpRequest) -> HttpReply:
        reply = await influxql_route.answer(ctx, req, may_write=req.role == "write")
        reply.headers = {**HEADERS, **reply.headers}
        return reply

    async def _write(self, ctx: ServerContext, req: HttpRequest) -> HttpReply:
        precision = req.param("precision") or "ns"
        if precision not in PRECISIONS:
            raise HttpError(
                400,
                f"invalid precision {precision!r}: one of {', '.join(sorted(PRECISIONS))}",
                close=False,
            )
        loop = asyncio.get_running_loop()
        now_us = time.time_ns() // 1000  # receive time, for lines without a timestamp
        queued: list[tuple[Queued, asyncio.Future[int]]] = []
        errors: list[tuple[int, str]] = []
        lines = points = 0
        refused = False
        try:
            for piece, first_line in slices(req.body, SLICE_BYTES):
                prep = None
                if len(piece) < SMALL_BODY_BYTES:
                    # Read line by line in under half a millisecond: less than the two
                    # thread switches of the pool, which would hold the GIL as long.
                    prep = prepare_inline(ctx.engine, piece, precision, now_us, first_line)
                if prep is None:
                    prep = await loop.run_in_executor(
                        ctx.pool, prepare, ctx.engine, piece, precision, now_us, first_line
                    )
                errors += prep.errors
                lines += prep.lines
                self.counters.tags_created += prep.created
                refused = refused or prep.refused > 0
                for q in prep.batches:
                    await self.gate.room(ctx)
                    queued.append((q, ctx.submit(q.batch)))
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


# -- helpers -----------------------------------------------------------------------


def _error_status(exc: XtsdbError) -> int:
    if isinstance(exc, InvalidInput):
        return 400
    if isinstance(exc, (Overloaded, ShuttingDown)):
        return 503
    return 500  # storage failures: 5xx makes Telegraf keep the batch and retry


def _reply(status: int, body: dict[str, Any] | None) -> HttpReply:
    data = b"" if body is None else json.dumps(body).encode() + b"\n"
    return HttpReply(status, data, content_type="application/json", headers=HEADERS)


def error_reply(exc: HttpError) -> HttpReply:
    """An InfluxDB-style JSON error: how the HTTP port answers a request it refuses."""
    reply = _reply(exc.status, {"error": str(exc)})
    reply.headers = {**HEADERS, **exc.headers}
    reply.close = exc.status == 401  # a failed guess ends the connection, as on the binary port
    return reply
