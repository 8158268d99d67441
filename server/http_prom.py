"""Prometheus remote write and remote read on the HTTP port (``/api/v1/write``, ``/api/v1/read``).

The codecs and the engine work are :mod:`xtsdb.server.prom_remote`'s; this
module puts them behind the :class:`~xtsdb.server.http_gate.DataGate` and
commits writes the way every other write is committed:

- ``POST /api/v1/write`` (``write`` role): the body is decoded and its series
  named and created in the query pool (:func:`prom_remote.prepare_write`; a
  bad body creates and stores nothing), packed into ONE ``WriteBatch`` and
  submitted to the group-commit queue. 204 is sent only once that batch is
  committed (fsynced with the default durability): acknowledged means
  durable. A batch the engine refuses (a tag's duplicate policy) is 400,
  which Prometheus does not retry; a full queue or a stopping server 503,
  which it retries.
- ``POST /api/v1/read`` (any token): :func:`prom_remote.handle_read` in the
  query pool.

Content type, encoding and version are checked before anything is decoded
(415); the snappy body's announced size is checked before it is decompressed
(the codec does it); the body itself is bounded by the listener's limits.
"""

from __future__ import annotations

from typing import Any

from xtsdb.protocol.errors import XtsdbError
from xtsdb.server.context import ServerContext
from xtsdb.server.engine import Engine
from xtsdb.server.engine.wal_records import WriteBatch
from xtsdb.server.http_endpoint import HttpReply, Router
from xtsdb.server.http_gate import DataGate
from xtsdb.server.http_request import HttpRequest
from xtsdb.server.prom_remote import (
    Response,
    SeriesNames,
    error_response,
    handle_read,
    media_error,
    prepare_write,
)

WRITE_VERSION = "x-prometheus-remote-write-version"
SNAPPY = frozenset({"snappy"})


class PromRoutes:
    """The two remote storage routes, behind a gate; counts what they did."""

    def __init__(self, gate: DataGate) -> None:
        self.gate = gate
        self.names = SeriesNames()  # series key -> tag name, across requests
        self.samples_written = 0
        self.reads = 0

    def add_to(self, router: Router) -> None:
        gate = self.gate
        for path, handler, need in (
            ("/api/v1/write", self._write, "write"),
            ("/api/v1/read", self._read, "read"),
        ):
            # The codec decompresses snappy, after checking the size its header announces.
            router.add(
                "POST", path, gate.route(handler), check_head=gate.check(need), encodings=SNAPPY
            )

    def stats(self) -> dict[str, Any]:
        return {"prom_samples_written": self.samples_written, "prom_reads": self.reads}

    def _batch(self, engine: Engine, body: bytes) -> WriteBatch:
        """The request as one batch (blocking: decode, catalog, packing)."""
        tag_ids, ts_us, values = prepare_write(engine, body, self.names)
        return WriteBatch.build(tag_ids, ts_us, values)

    async def _write(self, ctx: ServerContext, req: HttpRequest) -> HttpReply:
        bad = media_error(req.headers, WRITE_VERSION)
        if bad is not None:
            return _reply(bad)
        try:
            batch = await ctx.run(self._batch, ctx.engine, req.body)
            if batch.n_points:
                await self.gate.room(ctx)
                await ctx.submit(batch)  # resolves once committed
        except XtsdbError as exc:
            return _reply(error_response(exc))
        self.samples_written += batch.n_points
        return HttpReply(204)

    async def _read(self, ctx: ServerContext, req: HttpRequest) -> HttpReply:
        self.reads += 1
        return _reply(await ctx.run(handle_read, ctx.read_engine(), req.body, req.headers))


def _reply(response: Response) -> HttpReply:
    status, headers, body = response
    headers = dict(headers)
    content_type = headers.pop("Content-Type", "text/plain; charset=utf-8")
    return HttpReply(status, body, content_type=content_type, headers=headers)
