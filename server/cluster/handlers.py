"""The ``cluster_status`` op's handler; imports nothing of NATS (single-node servers load it)."""

from __future__ import annotations

from xtsdb.protocol.cluster import ClusterStatus, ShardAsk, ShardContents
from xtsdb.protocol.declare import Empty
from xtsdb.protocol.errors import InvalidInput
from xtsdb.server.context import ServerContext


async def cluster_status(ctx: ServerContext, req: Empty) -> ClusterStatus:
    if ctx.cluster is None:
        raise InvalidInput("this server is not in cluster mode (start it with --cluster)")
    return ClusterStatus(status=await ctx.cluster.status())


async def cluster_shard_tags(ctx: ServerContext, req: ShardAsk) -> ShardContents:
    if ctx.cluster is None:
        raise InvalidInput("this server is not in cluster mode (start it with --cluster)")
    return await ctx.cluster.shard_contents(req.shard, req.shards)
