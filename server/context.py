"""What every endpoint of a running server shares: :class:`ServerContext`.

The binary port's op handlers and the HTTP endpoints reach the engine, the
write queue, the query pool, the token checker and the stopping flag through
one object, built once by :mod:`.app` with everything it needs, so no part of
the server is wired up by setting attributes after it was made.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from xtsdb.server.auth import Authenticator
from xtsdb.server.backup import Backups
from xtsdb.server.engine import Engine
from xtsdb.server.engine.wal_records import WriteBatch
from xtsdb.server.write_queue import WriteQueue

if TYPE_CHECKING:  # cluster mode imports nats: never at run time in single-node mode
    from xtsdb.server.cluster.api import Cluster

T = TypeVar("T")
Frame = bytes | list[bytes | memoryview]
"""A response ready to send: one ``bytes``, or pieces for ``transport.writelines``."""
Observer = Callable[[str, Mapping[str, Any], float], None]
"""Called with (op, request, seconds) for every request answered: metrics, slow-request log."""


@dataclass
class ServerContext:
    """The engine and the services around it, for every endpoint of one server."""

    engine: Engine
    writes: WriteQueue
    pool: ThreadPoolExecutor
    max_frame: int
    auth: Authenticator | None = None  # None: no tokens configured, anyone may do anything
    backups: Backups | None = None  # None: the backup op is refused
    auto_create_tags: bool = False
    observe: Observer | None = None
    stopping: bool = False
    requests: Counter[str] = field(default_factory=Counter)  # by op
    errors: Counter[str] = field(default_factory=Counter)  # by error name
    gauges: list[Callable[[], Mapping[str, Any]]] = field(default_factory=list)
    """Endpoints' own counters (connections, HTTP requests), reported by the stats op."""
    new_tags: dict[str, Any] = field(default_factory=dict)
    """Tag names whose auto-creation is under way, with the writes waiting for it."""
    cluster: Cluster | None = None
    """Cluster mode (docs/cluster.md): writes go through the replicated log; None: one node."""

    def tag_id(self, key: int | str) -> int:
        """The id of a tag given by id or by name (:class:`NotFound` for an unknown name)."""
        return key if isinstance(key, int) else self.engine.catalog.resolve(key)

    def read_engine(self) -> Engine:
        """The engine the HTTP reads (InfluxQL, remote read) query: in cluster mode, one
        whose ``query`` reaches tags of every shard, not only this node's."""
        return self.engine if self.cluster is None else self.cluster.read_engine

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the query pool: engine calls block, the event loop must not."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def submit(self, batch: WriteBatch) -> asyncio.Future[int]:
        """Queue a validated write; the future resolves once it is durable.

        One node: the group commit (its WAL LSN). Cluster mode: the replicated
        log (the highest stream sequence of its frames, once JetStream acked
        them all). Not a coroutine: writes keep their arrival order.
        """
        if self.cluster is not None:
            return self.cluster.submit(batch)
        return self.writes.submit(batch)

    async def after_queued_writes(self) -> None:
        """Return once every write queued before this call is committed."""
        # An empty batch goes through the group commit like any write: once it is
        # committed, so is every write queued before it.
        await self.writes.submit(WriteBatch.build(0, np.empty(0, np.int64), np.empty(0)))

    def stats(self) -> dict[str, Any]:
        """The server's counters: endpoints' gauges, requests and errors, the write queue."""
        out: dict[str, Any] = {}
        for gauge in self.gauges:
            out.update(gauge())
        out["requests"] = dict(self.requests)
        out["errors"] = dict(self.errors)
        out.update(self.writes.stats())
        return out
