"""Where a request is answered in cluster mode.

- Reads of tags (``query``, ``interpolate``, ``plot``, ``aggregate``,
  ``last``): answered from this node's engine for the shards it applies and has
  caught up on, forwarded to another owner of the shard otherwise; a request
  over tags of several shards is split by node and the answers merged in
  request order. A forwarded request (``fwd`` in its envelope) is always
  answered locally, so a request is forwarded at most once.
- ``min_seq`` in a read's envelope: the answering replica first waits until it
  has applied the tag's shard up to that stream sequence (read your writes).
- Deletes go through the write log, like writes, so every replica applies them
  in the same order; tag settings changes and removals go through the shared
  catalog's log (:mod:`.catalog_log`), like creations and renames;
  everything else is local to this node.
- A tag name this node's catalog does not know yet (created through another
  node a moment ago, not applied here yet) is looked up again once this node
  applied the whole catalog log, before the request is refused as not found.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from xtsdb.protocol.analytics import AggregateAnswer
from xtsdb.protocol.declare import Message, Op
from xtsdb.protocol.errors import (
    AuthenticationFailed,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unavailable,
    XtsdbError,
)
from xtsdb.protocol.messages import int_field
from xtsdb.protocol.ops import Latest
from xtsdb.protocol.tags import Deleted, TagAnswer
from xtsdb.server.engine.points import TS_LIMIT
from xtsdb.server.engine.wal_records import DeleteRecord

if TYPE_CHECKING:
    from xtsdb.server.cluster.node import ClusterNode
    from xtsdb.server.context import ServerContext

READY_WAIT = 10.0  # seconds a read waits for a replica to catch up before giving up
SINGLE_TAG = ("query", "interpolate", "plot")
MANY_TAGS = ("aggregate", "last")
LOCAL = "local"


class Router:
    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    def dispatch(
        self,
        ctx: ServerContext,
        op: Op[Any, Any],
        handler: Callable[..., Any],
        req: Any,
        msg: Mapping[str, Any],
    ) -> Any:
        name = op.name
        if name in ("delete", "delete_tag"):
            return self._delete(ctx, req, name == "delete_tag")
        if name == "tag_update":
            return self._update(req)
        if name == "tag_remove":
            return self._remove(ctx, req)
        if name == "tag_rename":
            return self._rename(req)
        if name not in SINGLE_TAG and name not in MANY_TAGS:
            return handler(ctx, req)
        keys = _tag_keys(name, req)
        if not keys:  # nothing to route: the handler gives the empty answer (or the error)
            return handler(ctx, req)
        min_seq = int_field(msg.get("min_seq", 0), "min_seq", 0)
        return self._read(ctx, op, handler, req, keys, bool(msg.get("fwd")), min_seq)

    # -- deletes --------------------------------------------------------------------

    async def _tag_id(self, ctx: ServerContext, key: int | str) -> int:
        try:
            return ctx.tag_id(key)
        except NotFound:
            if isinstance(key, int):
                raise
            return await self.node.catalog.lookup(key)

    async def _delete(self, ctx: ServerContext, req: Any, whole: bool) -> Deleted:
        tag = await self._tag_id(ctx, req.tag)
        start, end = (-TS_LIMIT, TS_LIMIT) if whole else (req.start, req.end)
        DeleteRecord.build(tag, start, end)  # refuses a bad range before it is logged
        return Deleted(lsn=await self.node.delete(tag, start, end))

    async def _update(self, req: Any) -> TagAnswer:
        info = await self.node.catalog.update(req.tag, req.meta)
        return TagAnswer(tag=info.as_dict())

    async def _rename(self, req: Any) -> TagAnswer:
        info = await self.node.catalog.rename(req.tag, req.name)
        return TagAnswer(tag=info.as_dict())

    async def _remove(self, ctx: ServerContext, req: Any) -> TagAnswer:
        """The points through the log (every replica deletes them in order), then the name."""
        info = ctx.engine.catalog.get(req.tag)
        if info is None:
            raise NotFound(f"no tag {req.tag!r} in the catalog")
        await self.node.delete(info.id, -TS_LIMIT, TS_LIMIT)
        removed = await self.node.catalog.remove(info.id)
        return TagAnswer(tag=removed.as_dict())

    # -- reads ----------------------------------------------------------------------

    async def _read(
        self,
        ctx: ServerContext,
        op: Op[Any, Any],
        handler: Callable[..., Any],
        req: Any,
        keys: list[int | str],
        forwarded: bool,
        min_seq: int,
    ) -> Message:
        shards = self.node.shards
        ids = [await self._tag_id(ctx, k) for k in keys]
        tag_shards = [i % shards for i in ids]
        targets = {s: self.targets(s, forwarded) for s in set(tag_shards)}
        first = {s: t[0] for s, t in targets.items()}
        if len(set(first.values())) == 1:  # one node answers all of it
            return await self._ask(
                ctx, op, handler, req, targets[tag_shards[0]], min_seq, set(tag_shards)
            )
        # Several nodes: one sub-request each, over its tags, merged in request order.
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(tag_shards):
            groups.setdefault(first[s], []).append(i)
        parts = await asyncio.gather(
            *(
                self._ask(
                    ctx,
                    op,
                    handler,
                    dataclasses.replace(req, tags=[keys[i] for i in idx]),
                    targets[tag_shards[idx[0]]],
                    min_seq,
                    {tag_shards[i] for i in idx},
                )
                for idx in groups.values()
            )
        )
        return _merge(op.name, ids, list(groups.values()), parts)

    def targets(self, shard: int, forwarded: bool) -> list[str]:
        """Who may answer for ``shard``, best first: ``LOCAL`` or peers' node ids."""
        node = self.node
        owners = node.owners(shard)
        mine = node.appliers.get(shard)
        if forwarded:  # the forwarding node chose us: answer here or say why not
            if mine is None or not mine.complete:
                raise Unavailable(f"node {node.node_id} does not hold shard {shard} now")
            return [LOCAL]
        if mine is not None and mine.ready and mine.complete:
            return [LOCAL]
        ready: list[str] = []
        others: list[str] = []
        for peer in owners:
            if peer == node.node_id:
                continue
            entry = (node.peer(peer).get("shards") or {}).get(str(shard)) or {}
            (ready if entry.get("ready") else others).append(peer)
        out = ready + ([LOCAL] if mine is not None and mine.complete else []) + others
        if not out:
            raise Unavailable(f"no live node holds shard {shard} (owners: {owners or 'none'})")
        return out

    async def _ask(
        self,
        ctx: ServerContext,
        op: Op[Any, Any],
        handler: Callable[..., Any],
        req: Any,
        targets: Sequence[str],
        min_seq: int,
        shards: set[int],
    ) -> Message:
        async def local() -> Message:
            result = handler(ctx, req)
            answer: Message = await result if inspect.isawaitable(result) else result
            return answer

        return await self.ask(op, req, targets, min_seq, shards, local)

    async def ask(
        self,
        op: Op[Any, Any],
        req: Any,
        targets: Sequence[str],
        min_seq: int,
        shards: set[int],
        local: Callable[[], Awaitable[Message]],
    ) -> Message:
        """The answer of the first target that gives one (a peer may have just gone)."""
        error: XtsdbError | None = None
        for target in targets:
            if target == LOCAL:
                await self._local_ready(shards, min_seq)
                return await local()
            address = self.node.peer(target).get("address")
            if not address:
                continue
            try:
                return await self.node.forwarder.ask(address, op, req, min_seq)
            except (NotFound, InvalidInput):
                raise  # the peer's verdict on the request itself
            except (AuthenticationFailed, PermissionDenied) as exc:
                error = Unavailable(
                    f"node {target} refused this node's forwarded read ({exc}): give every "
                    "node a --peer-token the others accept (docs/cluster.md)"
                )
            except (Unavailable, ConnectionError, TimeoutError, OSError) as exc:
                error = Unavailable(f"node {target} could not answer: {exc}")
        raise error or Unavailable(f"no node could answer for shards {sorted(shards)}")

    async def _local_ready(self, shards: set[int], min_seq: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_WAIT
        for shard in shards:
            applier = self.node.appliers.get(shard)
            if applier is None:
                raise Unavailable(f"node {self.node.node_id} does not hold shard {shard} now")
            while not applier.ready:
                if loop.time() > deadline:
                    raise Unavailable(
                        f"shard {shard} on node {self.node.node_id} has not caught up with "
                        f"the write log within {READY_WAIT:.0f} s"
                    )
                await asyncio.sleep(0.05)
            if min_seq:
                await applier.wait_applied(min_seq, max(0.1, deadline - loop.time()))


def _tag_keys(name: str, req: Any) -> list[int | str]:
    if name in SINGLE_TAG:
        return [req.tag]
    tags = req.tags
    if isinstance(tags, np.ndarray):
        return [int(t) for t in tags.tolist()]
    return list(tags) if isinstance(tags, list) else [tags]


def _merge(name: str, ids: list[int], groups: list[list[int]], parts: Sequence[Message]) -> Message:
    """Sub-answers over ``groups`` (positions in the request) as one answer in request order."""
    if name == "aggregate":
        out: list[Any] = [None] * len(ids)
        for idx, part in zip(groups, parts, strict=True):
            assert isinstance(part, AggregateAnswer) and isinstance(part.result, list)
            for i, buckets in zip(idx, part.result, strict=True):
                out[i] = buckets
        return AggregateAnswer(result=out)
    latest = [p for p in parts if isinstance(p, Latest)]
    # Each sub-answer lists the tags of its group that have data, in the group's
    # order: walking both gives each answered tag its position in the request.
    positions: list[int] = []
    for idx, part in zip(groups, latest, strict=True):
        answered = part.tags.tolist()
        j = 0
        for pos in idx:
            if j < len(answered) and answered[j] == ids[pos]:
                positions.append(pos)
                j += 1
        if j != len(answered):
            raise InvalidInput("a node answered last for tags it was not asked for")
    order = np.argsort(np.asarray(positions, np.int64), kind="stable")
    errors: dict[int, XtsdbError] = {}
    for p in latest:
        errors.update(p.errors)
    return Latest(
        tags=np.concatenate([p.tags for p in latest])[order],
        ts=np.concatenate([p.ts for p in latest])[order],
        values=np.concatenate([p.values for p in latest])[order],
        q=np.concatenate([p.q for p in latest])[order],
        errors=errors,
    )
