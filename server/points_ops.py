"""Handlers of the core ops: ping, write, query, last, flush, stats, backup.

Each takes the server's context and a request parsed by its op's declaration
(:mod:`xtsdb.protocol.ops`), and returns the response message or an awaitable
of it. Engine calls run in the query pool (:meth:`ServerContext.run`), except
a query or ``last`` that :mod:`.inline_calls` knows to be small: answered on
the loop, without the two thread hand-offs.

A write is submitted to the group commit when it is dispatched, not when its
coroutine first runs: pipelined writes on a connection are committed in the
order they arrived, and a write whose connection goes away still commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import numpy as np

from xtsdb.protocol.declare import Empty
from xtsdb.protocol.errors import NotFound, PermissionDenied, ShuttingDown
from xtsdb.protocol.ops import (
    Backup,
    BackupReport,
    Last,
    Latest,
    Points,
    Query,
    Stats,
    Write,
    Written,
)
from xtsdb.server.context import ServerContext
from xtsdb.server.engine import Engine
from xtsdb.server.engine.wal_records import WriteBatch
from xtsdb.server.inline_calls import CALLS

Columns = tuple[Any, Any, Any]


def ping(ctx: ServerContext, req: Empty) -> Empty:
    return Empty()


def write(ctx: ServerContext, req: Write) -> Awaitable[Written]:
    tags = req.tags
    if isinstance(tags, str):
        target = _write_target(ctx, tags)
        if isinstance(target, NewTag):
            # Validation on the loop: a bad write is refused before it waits for
            # (or causes) the creation of a tag; 0 stands in for the id to come.
            n = WriteBatch.build(0, req.ts, req.values, req.q).n_points
            return _after_new_tag(n, target.queue((req.ts, req.values, req.q)))
        tags = target
    batch = WriteBatch.build(tags, req.ts, req.values, req.q)
    return _written(batch.n_points, ctx.submit(batch))


async def _written(n: int, fut: asyncio.Future[int]) -> Written:
    return Written(n=n, lsn=await fut)


async def _after_new_tag(n: int, queued: asyncio.Future[asyncio.Future[int]]) -> Written:
    return await _written(n, await queued)


class NewTag:
    """Writes to a name whose auto-creation is under way, in arrival order."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Columns, asyncio.Future[asyncio.Future[int]]]] = []

    def queue(self, cols: Columns) -> asyncio.Future[asyncio.Future[int]]:
        """A future of the write-queue future this write gets once its tag exists."""
        fut: asyncio.Future[asyncio.Future[int]] = asyncio.get_running_loop().create_future()
        self._waiting.append((cols, fut))
        return fut

    def release(self, ctx: ServerContext, created: asyncio.Future[int]) -> None:
        """Submit every waiting write (or fail it with the creation's error), in order."""
        error = created.exception() if not created.cancelled() else ShuttingDown()
        for cols, fut in self._waiting:
            # A write whose requester went away is queued all the same, as a write
            # already in the queue still commits when its connection closes.
            try:
                if error is not None:
                    raise error
                result: asyncio.Future[int] | BaseException = ctx.submit(
                    WriteBatch.build(created.result(), *cols)
                )
            except Exception as exc:  # the creation failed, or the queue is stopping
                result = exc
            if fut.done():
                if isinstance(result, asyncio.Future):
                    result.add_done_callback(_consume)
            elif isinstance(result, asyncio.Future):
                fut.set_result(result)
            else:
                fut.set_exception(result)
        self._waiting.clear()


def _consume(fut: asyncio.Future[int]) -> None:
    """Retrieve the outcome of a write nobody waits for (no 'never retrieved' warning)."""
    if not fut.cancelled():
        fut.exception()


def _write_target(ctx: ServerContext, name: str) -> int | NewTag:
    """The id of a named write's tag, or the auto-creation its write must wait for."""
    pending: NewTag | None = ctx.new_tags.get(name)
    if pending is not None:
        return pending
    info = ctx.engine.catalog.get(name)
    if info is not None:
        return info.id
    if not ctx.auto_create_tags:
        raise NotFound(f"no tag named {name!r} (the server does not auto-create tags)")
    new = ctx.new_tags[name] = NewTag()
    task = asyncio.ensure_future(ctx.run(ctx.engine.get_or_create_tag, name))

    def created(t: asyncio.Future[int]) -> None:
        # One callback queues every waiting write, in arrival order, and only then
        # lets later writes find the name in the catalog: nothing can run between.
        ctx.new_tags.pop(name, None)
        new.release(ctx, t)

    task.add_done_callback(created)
    return new


def query(ctx: ServerContext, req: Query) -> Points | Awaitable[Points]:
    tag = ctx.tag_id(req.tag)

    def run() -> Points:
        return query_answer(ctx.engine, tag, req)

    way = CALLS.read(ctx.engine, tag, req.start, req.end)
    if way.inline:  # small and in memory: answered on the loop (inline_calls)
        return run()
    return ctx.run(way.pooled(run))


def query_answer(engine: Engine, tag: int, req: Query) -> Points:
    """The engine's points of ``tag`` for ``req``, as the ``query`` answer."""
    pts = engine.query(
        tag, req.start, req.end, req.limit, descending=req.descending, good_only=req.good_only
    )
    return Points(
        ts=pts.timestamps,
        values=pts.values,
        q=pts.qualities,
        stats=pts.stats.as_dict(),
        more=pts.more,
    )


def last(ctx: ServerContext, req: Last) -> Latest | Awaitable[Latest]:
    tags = req.tags
    ids = np.asarray([ctx.tag_id(t) for t in tags] if isinstance(tags, list) else tags, np.uint32)

    def run() -> Latest:
        got = ctx.engine.last(ids)
        return Latest(
            tags=got.tag_ids,
            ts=got.timestamps,
            values=got.values,
            q=got.qualities,
            errors=got.errors,
        )

    if CALLS.last(ctx.engine, ids.tolist()).inline:  # every value cached (inline_calls)
        return run()
    return ctx.run(run)


async def flush(ctx: ServerContext, req: Empty) -> Empty:
    await ctx.run(ctx.engine.flush)
    return Empty()


async def stats(ctx: ServerContext, req: Empty) -> Stats:
    engine_stats = await ctx.run(ctx.engine.stats)
    return Stats(stats={"engine": engine_stats, "server": ctx.stats()})


async def backup(ctx: ServerContext, req: Backup) -> BackupReport:
    backups = ctx.backups
    if backups is None:
        raise PermissionDenied("backups are disabled on this server: set backup_dir")
    report = await ctx.run(backups.run, req.path, lambda: ctx.stopping)
    return BackupReport(backup=report)
