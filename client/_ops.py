"""The operations of both clients, each declared once: signature, docstring, plan.

Each function here is a plan (see :mod:`._core`) taking the
:class:`~._core.ClientCore` first; :class:`~._surface.operation` makes it a
method of :class:`~.sync.Client` (blocking) and of
:class:`~.aio.AsyncClient` (a coroutine), with this signature (``self`` for
``core``) and this docstring. ``timeout`` is taken by the client's driver: the
plans only accept it so that it is part of the one signature. The historian
ops (analytics, deletes, the tag catalog) are in :mod:`.historian`.

Adding an op: write its plan function here (or in :mod:`.historian`) and
list it in :class:`Operations`; the transports do not change.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np

from xtsdb.protocol import DEFAULT_MAX_FRAME, FLUSH, PING, QUERY, STATS, int_field
from xtsdb.protocol.cluster import CLUSTER_STATUS
from xtsdb.protocol.declare import Empty
from xtsdb.protocol.ops import BACKUP, LAST, Backup, Last, Query

from . import dataframes
from ._convert import to_us
from ._core import FRAME_OVERHEAD, ClientCore, Plan, Step
from ._surface import operation
from .historian import HistorianOperations, tag_key
from .results import LastResult, QueryResult

T = TypeVar("T")


@operation
def write(
    core: ClientCore,
    /,
    tag: Any,
    timestamps: Any,
    values: Any,
    qualities: Any = None,
    *,
    timeout: float | None = None,
) -> Plan[int]:
    """Write arrays of points; returns the number written once they are durable.

    ``tag`` is one tag id, or an array with a tag id per point. Timestamps
    are int64 microseconds or ``datetime64``. Large writes are split into
    frames under the server's limit and pipelined. Not retried on a lost
    connection unless the client was made with ``retry_writes=True``.
    """
    return core.write_plan([(tag, timestamps, values, qualities)])


@operation
def write_many(
    core: ClientCore, /, items: Iterable[tuple[Any, Any, Any, Any]], *, timeout: float | None = None
) -> Plan[int]:
    """Write several ``(tag, timestamps, values, qualities)`` items, pipelined together."""
    return core.write_plan(items)


@operation
def query(
    core: ClientCore,
    /,
    tag: int | str,
    start: Any,
    end: Any,
    limit: int | None = None,
    *,
    descending: bool = False,
    good_only: bool = False,
    timeout: float | None = None,
) -> Plan[QueryResult]:
    """Points of ``tag`` (id or name) with ``start <= ts < end`` (int us or aware
    datetimes); newest first with ``descending``, only Good ones with ``good_only``."""
    # Fetched in pages that fit a frame. Pages continue after the last timestamp
    # received (oldest first: from it + 1; newest first: up to it, excluded): a
    # tag has one value per timestamp, so nothing is skipped or repeated. The
    # server says whether a page was cut short ("more"), so a page that is
    # exactly full costs no extra request.
    lo, hi = to_us(start, "start"), to_us(end, "end")
    key = tag_key(tag)
    if limit is not None:
        limit = int_field(limit, "limit", 0)
    # A page must fit the server's frames both ways: its max_frame, and the
    # protocol's default limit, which bounds the responses it encodes.
    page = min(core.points_per_frame(17), (DEFAULT_MAX_FRAME - FRAME_OVERHEAD) // 17)
    chunks: list[tuple[Any, Any, Any]] = []
    stats: dict[str, int] = {}
    got = 0
    while True:
        want = page if limit is None else min(page, limit - got)
        ask = Query(
            tag=key, start=lo, end=hi, limit=want, descending=descending, good_only=good_only
        )
        [resp] = yield Step([core.request(QUERY.encode(core.next_id(), ask))], 1)
        page_of = QUERY.parse_answer(resp)
        ts, values, q = page_of.ts, page_of.values, page_of.q
        for name, n in page_of.stats.items():
            stats[name] = stats.get(name, 0) + n
        chunks.append((ts, values, q))
        got += ts.shape[0]
        more = resp.get("more")
        if not isinstance(more, bool):  # a server without "more": a full page may have it
            more = ts.shape[0] >= want
        if not more or ts.shape[0] == 0 or (limit is not None and got >= limit):
            break
        if descending:
            hi = int(ts[-1])
        else:
            lo = int(ts[-1]) + 1
    if len(chunks) == 1:
        ts, values, q = chunks[0]
    else:
        ts, values, q = (np.concatenate(col) for col in zip(*chunks, strict=True))
    return QueryResult(ts, values, q, stats)


@operation
def last(core: ClientCore, /, tags: Any, *, timeout: float | None = None) -> Plan[LastResult]:
    """The latest point of each tag in ``tags`` (an id, a name, or a sequence of them)."""
    got = yield from core.ask(LAST, Last(tags=tags))
    return LastResult(got.tags, got.ts, got.values, got.q, errors=got.errors)


@operation
def stats(core: ClientCore, /, *, timeout: float | None = None) -> Plan[dict[str, Any]]:
    """The server's and engine's counters."""
    return (yield from core.ask(STATS, Empty())).stats


@operation
def ping(core: ClientCore, /, *, timeout: float | None = None) -> Plan[float]:
    """Round trip to the server, in seconds."""
    t0 = time.perf_counter()
    yield from core.ask(PING, Empty())
    return time.perf_counter() - t0


@operation
def flush_server(core: ClientCore, /, *, timeout: float | None = None) -> Plan[None]:
    """Ask the server to seal its in-memory points into blocks (not :meth:`flush`)."""
    yield from core.ask(FLUSH, Empty())


@operation
def backup(core: ClientCore, /, path: str, *, timeout: float | None = None) -> Plan[dict[str, Any]]:
    """Have the server copy its data directory to ``path`` while writes go on.

    ``path`` is on the server's filesystem, inside its ``backup_dir`` (a
    relative path is taken relative to it), and must not exist yet. Returns
    what the server reports: ``path``, ``bytes``, ``checkpoint_lsn``,
    ``wal_last_lsn``, ``seconds``, ... A large database takes a while: pass
    a ``timeout`` that allows for it. Restore by starting a server on the copy.
    """
    # Never retried (backup is not idempotent): a second try would find its
    # destination already there.
    return (yield from core.ask(BACKUP, Backup(path=path))).backup


@operation
def write_df(
    core: ClientCore,
    /,
    df: Any,
    tag_column: str | None = None,
    *,
    timeout: float | None = None,
    **options: Any,
) -> Plan[int]:
    """Write a pandas DataFrame; the number of points, once durable.

    Its ``DatetimeIndex`` must have a time zone. Wide (``tag_column=None``):
    a column per tag, labelled by name (str) or id (int), NaN = no point.
    Long: ``tag_column`` names the tag column; ``value_column`` ("value")
    and ``quality_column`` ("quality", optional) the others. See
    :mod:`xtsdb.client.dataframes`.
    """
    return core.write_plan(dataframes.frame_items(df, tag_column, **options))


@operation
def query_df(
    core: ClientCore,
    /,
    tags: Any,
    start: Any,
    end: Any,
    *,
    layout: str = "wide",
    timeout: float | None = None,
) -> Plan[Any]:
    """Points of ``tags`` (names or ids) in ``[start, end)`` as a DataFrame with a UTC
    ``time`` index: ``wide``, a column per tag (outer join on timestamp, NaN where
    a tag has no point), or ``long``, rows of tag, value and quality."""
    dataframes.pandas()  # before any request: the extra may be missing
    labels = [tags] if isinstance(tags, int | str) else list(tags)
    results: list[Any] = []
    step = core.max_in_flight  # pages in flight at once, as for a pipelined write
    for lo in range(0, len(labels), step):
        plans = [query.plan(core, t, start, end) for t in labels[lo : lo + step]]
        results += yield from gather(plans)
    return dataframes.results_frame(labels, results, layout)


@operation
def cluster_status(core: ClientCore, /, *, timeout: float | None = None) -> Plan[dict[str, Any]]:
    """What the node sees of its cluster: ``node``, ``members``, ``shards``, ``replication``,
    ``stream_last_seq``, ``owners`` (shard -> node ids) and ``replicas`` (node id -> shard ->
    ``{applied_seq, lag}``); :class:`InvalidInput` from a server not in cluster mode."""
    answer = yield from core.ask(CLUSTER_STATUS, Empty())
    return answer.status


def gather(plans: list[Plan[T]]) -> Plan[list[T]]:
    """Run ``plans`` side by side, their requests pipelined: one round trip a step
    for all of them. Each step of each plan must wait for all it sends (a query's
    pages do), so the responses split back by position."""
    results: dict[int, T] = {}
    steps: dict[int, Step] = {}
    try:
        for i, plan in enumerate(plans):
            _advance(plan, i, None, steps, results)
        while steps:
            order = list(steps.items())
            if any(step.wait != len(step.send) for _, step in order):
                raise RuntimeError("gather: a plan kept responses outstanding")
            sends = [req for _, step in order for req in step.send]
            resps = yield Step(sends, len(sends))
            pos = 0
            for i, step in order:
                _advance(plans[i], i, resps[pos : pos + step.wait], steps, results)
                pos += step.wait
        return [results[i] for i in range(len(plans))]
    finally:
        for plan in plans:
            plan.close()


def _advance(
    plan: Plan[T],
    i: int,
    resps: list[dict[str, Any]] | None,
    steps: dict[int, Step],
    results: dict[int, T],
) -> None:
    try:
        steps[i] = next(plan) if resps is None else plan.send(resps)
    except StopIteration as stop:
        steps.pop(i, None)
        results[i] = stop.value


class Operations(HistorianOperations):
    """Every operation of both clients (the transports add connect, close,
    ``write_point`` and ``flush``)."""

    write = write
    write_many = write_many
    query = query
    last = last
    stats = stats
    ping = ping
    flush_server = flush_server
    backup = backup
    write_df = write_df
    query_df = query_df
    cluster_status = cluster_status
