"""The engine as the HTTP reads see it in cluster mode: ``query`` of any tag.

InfluxQL ``/query`` and Prometheus remote read call ``engine.query`` from the
query pool, one tag at a time. In cluster mode they get this view instead: a
tag of a shard this node applies (and has caught up on) is read from the local
engine; any other is fetched from an owner over the binary protocol, page by
page, by a coroutine run on the event loop while the pool thread waits. Every
other attribute is the local engine's (the catalog is the same on every node).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from xtsdb.protocol import QUERY
from xtsdb.protocol.declare import Message
from xtsdb.protocol.errors import Unavailable
from xtsdb.protocol.ops import Points as WirePoints
from xtsdb.protocol.ops import Query
from xtsdb.server.engine import Engine
from xtsdb.server.engine.points import Points, ReadStats
from xtsdb.server.points_ops import query_answer

if TYPE_CHECKING:
    from xtsdb.server.cluster.node import ClusterNode

REMOTE_TIMEOUT = 60.0
PAGE = 1_000_000  # points per forwarded page: ~17 MB, under the default frame limit


class RoutedEngine:
    def __init__(self, node: ClusterNode, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self._node = node
        self._engine = engine
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def query(
        self,
        tag_id: int,
        start_us: int,
        end_us: int,
        limit: int | None = None,
        *,
        descending: bool = False,
        good_only: bool = False,
    ) -> Points:
        shard = tag_id % self._node.shards
        applier = self._node.appliers.get(shard)
        if applier is not None and applier.ready and applier.complete:
            return self._engine.query(
                tag_id, start_us, end_us, limit, descending=descending, good_only=good_only
            )
        ask = Query(
            tag=tag_id,
            start=start_us,
            end=end_us,
            limit=limit,
            descending=descending,
            good_only=good_only,
        )
        fut = asyncio.run_coroutine_threadsafe(self._remote(shard, ask), self._loop)
        try:
            return fut.result(REMOTE_TIMEOUT)
        except TimeoutError:
            fut.cancel()
            raise Unavailable(
                f"no owner of shard {shard} answered within {REMOTE_TIMEOUT:.0f} s"
            ) from None

    async def _remote(self, shard: int, ask: Query) -> Points:
        """Every page of ``ask`` from the first owner that answers (pages as the SDK's)."""
        router = self._node.router
        targets = router.targets(shard, forwarded=False)
        chunks: list[Any] = []
        stats = ReadStats()
        want, got, more = ask.limit, 0, True
        lo, hi = ask.start, ask.end
        while more:
            page = PAGE if want is None else min(PAGE, want - got)
            req = Query(
                tag=ask.tag,
                start=lo,
                end=hi,
                limit=page,
                descending=ask.descending,
                good_only=ask.good_only,
            )
            ans = await router.ask(QUERY, req, targets, 0, {shard}, partial(self._local, req))
            assert isinstance(ans, WirePoints)
            chunks.append((ans.ts, ans.values, ans.q))
            for name, n in ans.stats.items():
                setattr(stats, name, getattr(stats, name, 0) + n)
            got += ans.ts.shape[0]
            more = bool(ans.more) and ans.ts.shape[0] > 0
            if want is not None and got >= want:
                break
            if more:  # the next page starts after the last timestamp received
                if ask.descending:
                    hi = int(ans.ts[-1])
                else:
                    lo = int(ans.ts[-1]) + 1
        ts, values, q = (np.concatenate(col) for col in zip(*chunks, strict=True))
        return Points(ts, values, q, stats, more=bool(more) and want is not None)

    async def _local(self, req: Query) -> Message:
        tag = int(req.tag)  # an id: the HTTP reads resolved names already
        return await self._node.run(query_answer, self._engine, tag, req)
