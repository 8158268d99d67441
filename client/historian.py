"""The historian operations of both clients: analytics, deletes and the tag catalog.

Declared once each, like those of :mod:`._ops`: a plan function with the
method's signature and docstring, made a method of both clients by
:class:`~._surface.operation`. Each checks and converts its arguments (times,
durations, tag names) before anything is sent, yields the request and turns
the response into a result type. A tag is an int id or a str name wherever an
argument takes one.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from datetime import timedelta
from typing import Any, Protocol, TypeVar, overload

import numpy as np
import numpy.typing as npt

from xtsdb.protocol.analytics import (
    AGGREGATE,
    INTERPOLATE,
    PLOT,
    Aggregate,
    Interpolate,
    Plot,
    Regular,
)
from xtsdb.protocol.declare import Message, Op
from xtsdb.protocol.errors import InvalidInput, ProtocolError
from xtsdb.protocol.tags import (
    DEFAULT_TAG_LIST,
    DELETE,
    DELETE_TAG,
    TAG_CREATE,
    TAG_GET,
    TAG_LIST,
    TAG_REMOVE,
    TAG_RENAME,
    TAG_SEARCH,
    TAG_UPDATE,
    Delete,
    TagAnswer,
    TagCreate,
    TagList,
    TagRefOnly,
    TagRename,
    TagSearch,
    TagUpdate,
)

from ._convert import timestamps_us, to_us
from ._core import ClientCore, Plan
from ._surface import operation, typed_operation
from .results import AggregateResult, InterpolateResult, QueryResult, TagInfo, TagPage

Tag = int | str
Tags = list[int] | list[str] | list[Tag] | tuple[Tag, ...] | npt.NDArray[np.integer[Any]]
Aggregates = str | Sequence[str]
One = TypeVar("One", covariant=True)
Many = TypeVar("Many", covariant=True)


def duration_us(d: Any, what: str) -> int:
    """A duration as integer microseconds: an int, a ``timedelta`` or a ``numpy.timedelta64``."""
    if isinstance(d, bool):
        raise InvalidInput(f"{what} must be int microseconds or a timedelta, got bool")
    if isinstance(d, int | np.integer):
        return int(d)
    if isinstance(d, timedelta):
        return d // timedelta(microseconds=1)
    if isinstance(d, np.timedelta64):
        if np.isnat(d):
            raise InvalidInput(f"{what} is NaT")
        return int(d.astype("timedelta64[us]").astype(np.int64))
    raise InvalidInput(f"{what} must be int microseconds or a timedelta, got {type(d).__name__}")


def tag_key(tag: Any) -> Tag:
    """A tag as the wire takes it: a name, or an int id (numpy integers too)."""
    if isinstance(tag, str):
        return tag
    if isinstance(tag, int | np.integer) and not isinstance(tag, bool):
        return int(tag)
    raise InvalidInput(f"a tag is an int id or a str name, got {type(tag).__name__}")


# -- analytics ---------------------------------------------------------------------------


class AggregateCall(Protocol[One, Many]):
    """``aggregate``'s two forms, for the type checker: one tag gives ``One``, a
    list of tags ``Many`` (the result types, or coroutines of them)."""

    @overload
    def __call__(
        self,
        tag_or_tags: Tag,
        start: Any,
        end: Any,
        interval: Any,
        aggregates: Aggregates = ...,
        *,
        origin: Any = ...,
        good_only: bool = ...,
        timeout: float | None = ...,
    ) -> One: ...
    @overload
    def __call__(
        self,
        tag_or_tags: Tags,
        start: Any,
        end: Any,
        interval: Any,
        aggregates: Aggregates = ...,
        *,
        origin: Any = ...,
        good_only: bool = ...,
        timeout: float | None = ...,
    ) -> Many: ...


AggregateMany = dict[Tag, AggregateResult]


def _aggregate(
    core: ClientCore,
    /,
    tag_or_tags: Tag | Tags,
    start: Any,
    end: Any,
    interval: Any,
    aggregates: Aggregates = ("avg",),
    *,
    origin: Any = 0,
    good_only: bool = False,
    timeout: float | None = None,
) -> Plan[AggregateResult | dict[Tag, AggregateResult]]:
    """Aggregates per ``interval`` bucket of ``[start, end)``.

    ``aggregates`` are some of count, min, max, sum, avg, first, last,
    twa_step, twa_linear. Buckets start at ``origin + k * interval`` (0:
    epoch-aligned, like InfluxDB's ``GROUP BY time``); ``interval`` is int
    microseconds or a ``timedelta``. One tag gives an
    :class:`AggregateResult`; a list of tags (one request) gives
    ``{tag: AggregateResult}``.
    """
    many = not isinstance(tag_or_tags, str | int | np.integer)
    keys = [tag_key(t) for t in (np.asarray(tag_or_tags).tolist() if many else [tag_or_tags])]
    if many and not keys:
        raise InvalidInput("aggregate needs at least one tag")
    names = [aggregates] if isinstance(aggregates, str) else list(aggregates)
    lo, hi = to_us(start, "start"), to_us(end, "end")
    step, at = duration_us(interval, "interval"), to_us(origin, "origin")
    tags = keys if many else keys[0]
    ask = Aggregate(
        tags=tags, start=lo, end=hi, interval=step, aggregates=names, origin=at, good_only=good_only
    )
    got = (yield from core.ask(AGGREGATE, ask)).result
    results = [
        AggregateResult(b.start, b.values) for b in (got if isinstance(got, list) else [got])
    ]
    if len(results) != len(keys):
        raise ProtocolError(f"aggregate: {len(results)} results for {len(keys)} tags")
    return dict(zip(keys, results, strict=True)) if many else results[0]


aggregate: typed_operation[
    AggregateCall[AggregateResult, AggregateMany],
    AggregateCall[Coroutine[Any, Any, AggregateResult], Coroutine[Any, Any, AggregateMany]],
] = typed_operation(_aggregate)


@operation
def interpolate(
    core: ClientCore,
    /,
    tag: Tag,
    times: Any = None,
    *,
    start: Any = None,
    end: Any = None,
    interval: Any = None,
    method: str = "previous",
    max_gap: Any = None,
    good_only: bool = False,
    timeout: float | None = None,
) -> Plan[InterpolateResult]:
    """Values at sorted ``times``, or at ``start, start + interval, ... < end``.

    ``method`` is ``previous`` (sample-and-hold) or ``linear``; ``max_gap``
    (microseconds or a ``timedelta``) refuses to bridge longer gaps. Each
    time gets a status (0 ok; 1 no data before; 2 gap; 3 after the last
    point, linear only) and NaN unless the status is 0.
    """
    if (times is None) == (None in (start, end, interval)):
        raise InvalidInput("give either times, or all of start, end and interval")
    gap = None if max_gap is None else duration_us(max_gap, "max_gap")
    if times is not None:
        at: Any = timestamps_us(times)
    else:
        at = Regular(to_us(start, "start"), to_us(end, "end"), duration_us(interval, "interval"))
    ask = Interpolate(tag=tag_key(tag), times=at, method=method, max_gap=gap, good_only=good_only)
    got = yield from core.ask(INTERPOLATE, ask)
    return InterpolateResult(got.ts, got.values, got.status)


@operation
def plot(
    core: ClientCore,
    /,
    tag: Tag,
    start: Any,
    end: Any,
    intervals: int,
    *,
    good_only: bool = False,
    timeout: float | None = None,
) -> Plan[QueryResult]:
    """The points that draw ``[start, end)`` on ``intervals`` pixel columns: per
    column its first, last, min and max point (at most 4 per column)."""
    lo, hi = to_us(start, "start"), to_us(end, "end")
    ask = Plot(tag=tag_key(tag), start=lo, end=hi, intervals=intervals, good_only=good_only)
    got = yield from core.ask(PLOT, ask)
    return QueryResult(got.ts, got.values, got.q, got.stats)


# -- deletes ---------------------------------------------------------------------------------


@operation
def delete(
    core: ClientCore, /, tag: Tag, start: Any, end: Any, *, timeout: float | None = None
) -> Plan[int]:
    """Delete the points of ``tag`` with ``start <= ts < end``; durable on return.

    Covers every write the server received before the delete; returns its LSN.
    """
    lo, hi = to_us(start, "start"), to_us(end, "end")
    return (yield from core.ask(DELETE, Delete(tag=tag_key(tag), start=lo, end=hi))).lsn


@operation
def delete_tag(core: ClientCore, /, tag: Tag, *, timeout: float | None = None) -> Plan[int]:
    """Delete every point of ``tag`` (its catalog entry stays; see :meth:`remove_tag`)."""
    return (yield from core.ask(DELETE_TAG, TagRefOnly(tag=tag_key(tag)))).lsn


# -- the tag catalog -------------------------------------------------------------------------


def _tag_info(core: ClientCore, /, op: Op[Any, TagAnswer], req: Message) -> Plan[TagInfo]:
    return TagInfo.from_wire((yield from core.ask(op, req)).tag)


@operation
def create_tag(
    core: ClientCore, /, name: str, *, timeout: float | None = None, **meta: Any
) -> Plan[TagInfo]:
    """Name a new tag; the server picks its id. ``meta``: unit, description,
    value_type (float64, int64, bool, enum), duplicates (last, first,
    reject), retention_us (0: the database's retention)."""
    return _tag_info(core, TAG_CREATE, TagCreate(name=name, meta=meta))


@operation
def tag(core: ClientCore, /, tag: Tag, *, timeout: float | None = None) -> Plan[TagInfo]:
    """The catalog entry of a tag, by name or id (``NotFound`` if it has none)."""
    return _tag_info(core, TAG_GET, TagRefOnly(tag=tag_key(tag)))


@operation
def tags(
    core: ClientCore,
    /,
    pattern: str = "*",
    *,
    limit: int | None = None,
    timeout: float | None = None,
) -> Plan[list[TagInfo]]:
    """Tags whose name matches the glob ``pattern``, by name (at most ``limit``,
    default 10,000)."""
    ask = TagList(pattern=pattern, limit=DEFAULT_TAG_LIST if limit is None else limit)
    return [TagInfo.from_wire(t) for t in (yield from core.ask(TAG_LIST, ask)).tags]


@operation
def search_tags(
    core: ClientCore,
    /,
    text: str = "",
    *,
    after: str | None = None,
    limit: int = 100,
    timeout: float | None = None,
) -> Plan[TagPage]:
    """A page of the tags whose name or description holds ``text`` (ignoring case), by
    name; pass the last name of a page as ``after`` for the next one while ``more``."""
    got = yield from core.ask(TAG_SEARCH, TagSearch(text=text, after=after, limit=limit))
    return TagPage([TagInfo.from_wire(t) for t in got.tags], got.more)


@operation
def update_tag(
    core: ClientCore, /, tag: Tag, *, timeout: float | None = None, **meta: Any
) -> Plan[TagInfo]:
    """Change some metadata of a tag (as for :meth:`create_tag`); others stay."""
    return _tag_info(core, TAG_UPDATE, TagUpdate(tag=tag_key(tag), meta=meta))


@operation
def rename_tag(
    core: ClientCore, /, tag: Tag, name: str, *, timeout: float | None = None
) -> Plan[TagInfo]:
    """Give a tag a new name; its id and data stay."""
    return _tag_info(core, TAG_RENAME, TagRename(tag=tag_key(tag), name=name))


@operation
def remove_tag(core: ClientCore, /, tag: Tag, *, timeout: float | None = None) -> Plan[TagInfo]:
    """Delete a tag's points and its catalog entry; returns the entry removed."""
    return _tag_info(core, TAG_REMOVE, TagRefOnly(tag=tag_key(tag)))


class HistorianOperations:
    """The historian operations of both clients (a mixin of :class:`~._ops.Operations`)."""

    aggregate = aggregate
    interpolate = interpolate
    plot = plot
    delete = delete
    delete_tag = delete_tag
    create_tag = create_tag
    tag = tag
    tags = tags
    search_tags = search_tags
    update_tag = update_tag
    rename_tag = rename_tag
    remove_tag = remove_tag
