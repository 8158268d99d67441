"""The cluster operations, declared: ``cluster_status``.

In cluster mode (docs/cluster.md) any node answers with what it sees of the
cluster: the live members, the owners of each shard and, for every replica
it knows of, the stream sequence it has applied and its lag behind the end
of the write log. A server not in cluster mode refuses the op.
"""

from __future__ import annotations

from typing import Any

from .declare import Empty, Message, Op, Role, message
from .errors import InvalidInput
from .wire import Map, arg


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

CLUSTER_OPS = (CLUSTER_STATUS,)
