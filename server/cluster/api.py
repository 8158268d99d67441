"""What the server's handlers need of cluster mode, without importing NATS.

:class:`xtsdb.server.cluster.node.ClusterNode` implements it; a single-node
server has ``ctx.cluster is None`` and never loads that module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from xtsdb.protocol.cluster import ShardContents
    from xtsdb.protocol.declare import Message, Op
    from xtsdb.server.context import ServerContext
    from xtsdb.server.engine import Engine
    from xtsdb.server.engine.wal_records import WriteBatch


class Cluster(Protocol):
    @property
    def read_engine(self) -> Engine:
        """The engine for HTTP reads, whose ``query`` reaches every shard."""
        ...

    async def status(self) -> dict[str, Any]:
        """What ``cluster_status`` answers (see :mod:`xtsdb.protocol.cluster`)."""
        ...

    def submit(self, batch: WriteBatch) -> asyncio.Future[int]:
        """Publish a validated write to the replicated log; resolves to its sequence."""
        ...

    def dispatch(
        self,
        ctx: ServerContext,
        op: Op[Any, Any],
        handler: Callable[..., Any],
        req: Message,
        msg: Mapping[str, Any],
    ) -> Any:
        """The handler's result, or a coroutine answering it elsewhere (see ``router``)."""
        ...

    async def close(self) -> None:
        """Leave the cluster: what was queued is published, appliers and heartbeat stop."""
        ...

    async def shard_contents(self, shard: int, shards: int) -> ShardContents:
        """This node's tags of ``shard`` and how far it applied it (a peer copies them)."""
        ...
