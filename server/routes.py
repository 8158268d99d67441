"""The route table: which handler answers each op of the binary protocol.

One line per op, op declaration to handler. A handler takes the server's
context and the request as its declaration parsed it, and returns the
response message, or an awaitable of it when the work waits for the group
commit or the query pool. ``hello`` is not here: it changes the connection's
own state, so :class:`~.service.Service` answers it itself. A test checks that
every declared op but ``hello`` has a route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from xtsdb.protocol import analytics, cluster, ops, tags
from xtsdb.protocol.declare import Message, Op
from xtsdb.server import historian, points_ops
from xtsdb.server.cluster import handlers as cluster_ops
from xtsdb.server.context import Frame as Frame
from xtsdb.server.context import ServerContext

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


@dataclass(frozen=True)
class Route(Generic[Req, Resp]):
    """An op and its handler; the type checker holds them to the same messages."""

    op: Op[Req, Resp]
    handler: Callable[[ServerContext, Req], Resp | Awaitable[Resp]]


def _table(*routes: Route[Any, Any]) -> dict[str, Route[Any, Any]]:
    return {r.op.name: r for r in routes}


ROUTES = _table(
    Route(ops.PING, points_ops.ping),
    Route(ops.WRITE, points_ops.write),
    Route(ops.QUERY, points_ops.query),
    Route(ops.LAST, points_ops.last),
    Route(ops.FLUSH, points_ops.flush),
    Route(ops.STATS, points_ops.stats),
    Route(ops.BACKUP, points_ops.backup),
    Route(analytics.AGGREGATE, historian.aggregate),
    Route(analytics.INTERPOLATE, historian.interpolate),
    Route(analytics.PLOT, historian.plot),
    Route(tags.DELETE, historian.delete),
    Route(tags.DELETE_TAG, historian.delete_tag),
    Route(tags.TAG_CREATE, historian.tag_create),
    Route(tags.TAG_GET, historian.tag_get),
    Route(tags.TAG_LIST, historian.tag_list),
    Route(tags.TAG_SEARCH, historian.tag_search),
    Route(tags.TAG_UPDATE, historian.tag_update),
    Route(tags.TAG_RENAME, historian.tag_rename),
    Route(tags.TAG_REMOVE, historian.tag_remove),
    Route(cluster.CLUSTER_STATUS, cluster_ops.cluster_status),
    Route(cluster.CLUSTER_SHARD_TAGS, cluster_ops.cluster_shard_tags),
)
