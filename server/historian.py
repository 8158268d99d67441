"""Handlers of the historian ops: analytics, deletes and the tag catalog.

Each parses nothing itself (its op's declaration did, on the event loop, so a
bad field is refused before any work), resolves tag names through the catalog
(:meth:`ServerContext.tag_id`), and runs the engine call in the query pool,
or on the loop when :mod:`.inline_calls` knows it is small (aggregates).

Deletes and ``tag_remove`` first wait for every write already queued for the
group commit, so a delete covers each write the server received before it,
pipelined or not.
"""

from __future__ import annotations

from collections.abc import Awaitable

from xtsdb.protocol.analytics import (
    Aggregate,
    AggregateAnswer,
    Buckets,
    Interpolate,
    Interpolated,
    Plot,
    Regular,
)
from xtsdb.protocol.errors import FrameTooLarge, InvalidInput, NotFound
from xtsdb.protocol.ops import Points
from xtsdb.protocol.tags import (
    Delete,
    Deleted,
    TagAnswer,
    TagCreate,
    TagList,
    TagListAnswer,
    TagPage,
    TagRefOnly,
    TagRename,
    TagSearch,
    TagUpdate,
)
from xtsdb.server.context import ServerContext
from xtsdb.server.engine.aggregate import regular_times
from xtsdb.server.engine.catalog import TagInfo
from xtsdb.server.inline_calls import CALLS

_BYTES_PER_TIME = 17  # an interpolated value on the wire: int64 time, float64 value, u1 status


def _too_large(what: str, size: int, max_frame: int) -> FrameTooLarge:
    return FrameTooLarge(
        f"the result ({what}, about {size:,} bytes) would not fit in one frame of "
        f"{max_frame:,} bytes; ask for fewer buckets, times or tags"
    )


# -- analytics --------------------------------------------------------------------


def aggregate(ctx: ServerContext, req: Aggregate) -> AggregateAnswer | Awaitable[AggregateAnswer]:
    many = isinstance(req.tags, list)
    ids = [ctx.tag_id(t) for t in (req.tags if isinstance(req.tags, list) else [req.tags])]
    if req.end > req.start:  # refuse an answer that cannot be sent before computing it
        buckets = (req.end - req.start) // req.interval + 2
        size = buckets * 8 * (1 + len(req.aggregates)) * len(ids)
        if size > ctx.max_frame:
            raise _too_large(f"{buckets:,} buckets x {len(ids)} tags", size, ctx.max_frame)

    def run() -> AggregateAnswer:
        out = []
        for tag in ids:  # one engine call per tag: each is columnar over its points
            b = ctx.engine.aggregate(
                tag,
                req.start,
                req.end,
                req.interval,
                req.aggregates,
                origin_us=req.origin,
                good_only=req.good_only,
            )
            out.append(Buckets(b.start, b.values))
        return AggregateAnswer(result=out if many else out[0])

    way = CALLS.aggregate(ctx.engine, ids, req.start, req.end, req.aggregates)
    if way.inline:  # small and in memory: answered on the loop (inline_calls)
        return run()
    return ctx.run(way.pooled(run))


async def interpolate(ctx: ServerContext, req: Interpolate) -> Interpolated:
    tag = ctx.tag_id(req.tag)
    times = req.times
    if isinstance(times, Regular):
        n = max(0, -((times.start - times.end) // times.interval))
        if n * _BYTES_PER_TIME > ctx.max_frame:
            raise _too_large(f"{n:,} times", n * _BYTES_PER_TIME, ctx.max_frame)
        try:
            times = regular_times(times.start, times.end, times.interval)
        except ValueError as exc:
            raise InvalidInput(f"'times': {exc}") from None
    ts, values, status = await ctx.run(
        lambda: ctx.engine.interpolate(
            tag, times, req.method, good_only=req.good_only, max_gap_us=req.max_gap
        )
    )
    return Interpolated(ts=ts, values=values, status=status)


async def plot(ctx: ServerContext, req: Plot) -> Points:
    tag = ctx.tag_id(req.tag)
    pts = await ctx.run(
        lambda: ctx.engine.plot(tag, req.start, req.end, req.intervals, good_only=req.good_only)
    )
    return Points(ts=pts.timestamps, values=pts.values, q=pts.qualities, stats=pts.stats.as_dict())


# -- deletes ----------------------------------------------------------------------


async def delete(ctx: ServerContext, req: Delete) -> Deleted:
    tag = ctx.tag_id(req.tag)
    await ctx.after_queued_writes()
    return Deleted(lsn=await ctx.run(ctx.engine.delete, tag, req.start, req.end))


async def delete_tag(ctx: ServerContext, req: TagRefOnly) -> Deleted:
    tag = ctx.tag_id(req.tag)
    await ctx.after_queued_writes()
    return Deleted(lsn=await ctx.run(ctx.engine.delete_tag, tag))


# -- the tag catalog ----------------------------------------------------------------


def _info(ctx: ServerContext, key: int | str) -> TagInfo:
    info = ctx.engine.catalog.get(key)
    if info is None:
        raise NotFound(f"no tag {key!r} in the catalog")
    return info


def _answer(info: TagInfo) -> TagAnswer:
    return TagAnswer(tag=info.as_dict())


async def tag_create(ctx: ServerContext, req: TagCreate) -> TagAnswer:
    return _answer(await ctx.run(lambda: ctx.engine.create_tag(req.name, **req.meta)))


def tag_get(ctx: ServerContext, req: TagRefOnly) -> TagAnswer:
    # The catalog's reads come from memory: answered at once, on the loop.
    return _answer(_info(ctx, req.tag))


async def tag_list(ctx: ServerContext, req: TagList) -> TagListAnswer:
    infos = await ctx.run(ctx.engine.catalog.find, req.pattern or "*", req.limit)
    return TagListAnswer(tags=[i.as_dict() for i in infos])


async def tag_search(ctx: ServerContext, req: TagSearch) -> TagPage:
    infos, more = await ctx.run(ctx.engine.catalog.search, req.text, req.limit, req.after)
    return TagPage(tags=[i.as_dict() for i in infos], more=more)


async def tag_update(ctx: ServerContext, req: TagUpdate) -> TagAnswer:
    return _answer(await ctx.run(lambda: ctx.engine.update_tag(req.tag, **req.meta)))


async def tag_rename(ctx: ServerContext, req: TagRename) -> TagAnswer:
    return _answer(await ctx.run(ctx.engine.catalog.rename, req.tag, req.name))


async def tag_remove(ctx: ServerContext, req: TagRefOnly) -> TagAnswer:
    _info(ctx, req.tag)  # NotFound at once, not after waiting for the write queue
    await ctx.after_queued_writes()
    return _answer(await ctx.run(ctx.engine.remove_tag, req.tag))
