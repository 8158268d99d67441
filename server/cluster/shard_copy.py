"""A replica that lost frames of the write log copies its shard from a peer.

When a node must apply a shard from a sequence the log no longer holds (it was
down longer than ``--stream-max-age``, or the shard moved to it after the
log's beginning aged out), replaying alone would leave it without the points
of the missing frames. So it asks a caught-up peer owner for the shard:

1. ``cluster_shard_tags``: the peer's applied sequence ``X`` of the shard,
   taken *before* anything is read, and the shard's tag ids it holds;
2. this node deletes every point it holds of the shard's tags (what it has
   may miss deletes of the lost frames);
3. each tag's points are read from the peer, page by page (a forwarded
   ``query``, answered there from its own engine), and written through this
   node's group commit;
4. the shard's applied sequence becomes ``X`` and applying resumes at X + 1.

The copy reflects at least every frame up to ``X`` and maybe some after it;
replaying frames after ``X`` over it changes nothing (a suffix of the log
applied again in order). A crash during the copy leaves the applied sequence
where it was: the next start copies again. Why not the file backup: it copies
a whole data directory to the peer's own disk, while this needs one shard,
over the network, into a running engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from xtsdb.protocol import QUERY
from xtsdb.protocol.cluster import CLUSTER_SHARD_TAGS, ShardAsk, ShardContents
from xtsdb.protocol.errors import XtsdbError
from xtsdb.protocol.ops import Points, Query
from xtsdb.server.engine.points import TS_LIMIT
from xtsdb.server.engine.wal_records import WriteBatch

if TYPE_CHECKING:
    from xtsdb.server.cluster.node import ClusterNode

log = logging.getLogger("xtsdb.cluster")

PAGE = 1_000_000  # points per read: ~17 MB per forwarded answer
COPY_WAIT = 30.0  # seconds to find a peer that can give the shard


async def copy_shard(node: ClusterNode, shard: int) -> int | None:
    """Copy ``shard`` from the first peer that gives it (caught up on it); its sequence,
    or None when none did within ``COPY_WAIT`` (peers may be catching up themselves)."""
    deadline = asyncio.get_running_loop().time() + COPY_WAIT
    while True:
        for peer in _peers(node, shard):
            address = node.peer(peer).get("address")
            if not address:
                continue
            try:
                ask = ShardAsk(shard=shard, shards=node.shards)
                got = await node.forwarder.ask(address, CLUSTER_SHARD_TAGS, ask, None)
                assert isinstance(got, ShardContents)
                points = await _copy(node, shard, address, got)
            except (XtsdbError, ConnectionError, TimeoutError, OSError) as exc:
                log.info("shard %d: not copied from %s: %r", shard, peer, exc)
                continue
            log.info(
                "shard %d: copied %d tags (%d points) from %s as of sequence %d",
                shard,
                got.tags.shape[0],
                points,
                peer,
                got.applied_seq,
            )
            return int(got.applied_seq)
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(1.0)
    log.error(
        "shard %d: no peer could give it within %.0f s; this replica stays incomplete and "
        "its reads go to other replicas",
        shard,
        COPY_WAIT,
    )
    return None


def _peers(node: ClusterNode, shard: int) -> list[str]:
    """Every other member, owners first, those that report the shard caught up first
    (reports are a heartbeat old: each peer says itself whether it can give the shard)."""
    owners = node.owners(shard)
    ranked = [m for m in owners + sorted(set(node.members) - set(owners)) if m != node.node_id]

    def reported_ready(peer: str) -> bool:
        entry = (node.peer(peer).get("shards") or {}).get(str(shard)) or {}
        return bool(entry.get("ready"))

    return sorted(ranked, key=lambda p: not reported_ready(p))


async def wipe_shard(node: ClusterNode, shard: int) -> None:
    """Delete every point this node holds of ``shard``'s tags (logged tombstones: what is
    written afterwards stays)."""
    engine = node.engine
    for tag in [t for t in await node.run(engine.tag_ids) if t % node.shards == shard]:
        await node.run(engine.delete, tag, -TS_LIMIT, TS_LIMIT)


async def _copy(node: ClusterNode, shard: int, address: str, got: ShardContents) -> int:
    await wipe_shard(node, shard)  # what this node holds may miss deletes of lost frames
    points = 0
    for tag in got.tags.tolist():
        points += await _copy_tag(node, address, int(tag), node.writes.submit)
    return points


async def _copy_tag(
    node: ClusterNode, address: str, tag: int, commit: Callable[[WriteBatch], Awaitable[Any]]
) -> int:
    lo, n = -TS_LIMIT, 0
    while True:
        ask = Query(tag=tag, start=lo, end=TS_LIMIT, limit=PAGE)
        page = await node.forwarder.ask(address, QUERY, ask, None)
        assert isinstance(page, Points)
        if page.ts.shape[0]:
            await commit(WriteBatch.build(tag, page.ts, page.values, page.q))
            n += int(page.ts.shape[0])
        if not page.more or page.ts.shape[0] == 0:
            return n
        lo = int(np.int64(page.ts[-1])) + 1
