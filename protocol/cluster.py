"""The cluster operations, declared: ``cluster_status``.

In cluster mode (docs/cluster.md) any node answers with what it sees of the
cluster: the live members, the owners of each shard and, for every replica
it knows of, the stream sequence it has applied and its lag behind the end
of the write log. A server not in cluster mode refuses the op.
"""

from __future__ import annotations

from typing import Any

from .declare import Empty, Message, Op, Role, message
from .errors import InvalidInput, Unavailable
from .messages import TAGS_DTYPE
from .wire import Array, Int, Map, arg


@message
class ClusterStatus(Message):
    status: dict[str, Any] = arg(
        Map(),
        "`node` (the answering node), `members` (node id -> `{address, started_us}`), "
        "`shards` (count), `replication`, `stream_last_seq`, `owners` (shard -> node ids), "
        "`replicas` (node id -> shard -> `{applied_seq, lag}`, as each node last reported "
        "it) (keys may grow)",
    )


CLUSTER_STATUS = Op(
    "cluster_status",
    Empty,
    ClusterStatus,
    Role.READ,
    True,
    (InvalidInput,),
    "Members, shard owners and each replica's applied sequence and lag (cluster mode only).",
)


@message
class ShardAsk(Message):
    shard: int = arg(Int(0), "the shard")
    shards: int = arg(Int(1), "the cluster's number of shards (checked against the node's)")


@message
class ShardContents(Message):
    applied_seq: int = arg(
        Int(0), "the stream sequence the node had applied of that shard when it answered"
    )
    tags: Any = arg(
        Array(TAGS_DTYPE, "m", defines=True),
        "every tag id of that shard the node holds points or a name for",
    )


CLUSTER_SHARD_TAGS = Op(
    "cluster_shard_tags",
    ShardAsk,
    ShardContents,
    Role.READ,
    True,
    (InvalidInput, Unavailable),
    "A node's tags of one shard and how far it applied it: what a replica that lost frames "
    "of the write log copies from a peer (cluster mode only).",
)

CLUSTER_OPS = (CLUSTER_STATUS, CLUSTER_SHARD_TAGS)
