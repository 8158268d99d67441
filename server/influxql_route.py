"""The body of the HTTP ``/query`` route (InfluxDB 1.x API), for an HTTP :class:`Router`.

The endpoint that serves ``/query`` authenticates the request as it does
``/write`` (any valid token may query: ``read`` or ``write``), then awaits
:func:`answer` with whether the token holds the ``write`` role (only
``CREATE DATABASE`` needs it). The statements run in the query pool: the
catalog and engine reads block. ``GET`` and ``POST`` (an urlencoded form
body) are the same; ``db``, ``rp``, ``u``/``p`` are the endpoint's concern.
"""

from __future__ import annotations

from functools import partial

from xtsdb.server.context import ServerContext
from xtsdb.server.http_endpoint import HttpReply
from xtsdb.server.http_request import HttpRequest
from xtsdb.server.influxql_exec import execute

PARAMS = ("q", "epoch", "chunked", "chunk_size")
JSON = "application/json"


async def answer(ctx: ServerContext, req: HttpRequest, *, may_write: bool) -> HttpReply:
    """The answer to ``GET|POST /query`` (see :func:`influxql_exec.execute`)."""
    params = {name: req.param(name) for name in PARAMS if req.param(name)}
    status, body = await ctx.run(partial(execute, ctx.read_engine(), params, may_write=may_write))
    return HttpReply(status, body, content_type=JSON)
