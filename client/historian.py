"""The historian operations of both clients: analytics, deletes and the tag catalog.

Each method only runs a plan of :mod:`._plans` with the client's own
``_drive``: :class:`HistorianMethods` for the blocking :class:`~.sync.Client`,
:class:`AsyncHistorianMethods` for :class:`~.aio.AsyncClient`. The two
differ only by ``await`` -- Python cannot spell "a sync or an async method" in
one definition with its types -- so the docstrings are on the blocking ones.
A tag is an int id or a str name wherever an argument takes one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

import numpy as np
import numpy.typing as npt

from .results import AggregateResult, InterpolateResult, QueryResult, TagInfo

if TYPE_CHECKING:
    from ._core import ClientCore, Plan

T = TypeVar("T")
Tag = int | str
Tags = list[int] | list[str] | list[Tag] | tuple[Tag, ...] | npt.NDArray[np.integer[Any]]
Aggregates = str | Sequence[str]


class HistorianMethods:
    """Mixin of :class:`~xtsdb.client.sync.Client`."""

    _core: ClientCore

    def _drive(self, plan: Plan[T], timeout: float | None) -> T:
        raise NotImplementedError

    @overload
    def aggregate(
        self, tag_or_tags: Tag, start: Any, end: Any, interval: Any,
        aggregates: Aggregates = ..., *, origin: Any = ..., good_only: bool = ...,
        timeout: float | None = ...,
    ) -> AggregateResult: ...  # fmt: skip
    @overload
    def aggregate(
        self, tag_or_tags: Tags, start: Any, end: Any, interval: Any,
        aggregates: Aggregates = ..., *, origin: Any = ..., good_only: bool = ...,
        timeout: float | None = ...,
    ) -> dict[Tag, AggregateResult]: ...  # fmt: skip
    def aggregate(
        self,
        tag_or_tags: Tag | Tags,
        start: Any,
        end: Any,
        interval: Any,
        aggregates: Aggregates = ("avg",),
        *,
        origin: Any = 0,
        good_only: bool = False,
        timeout: float | None = None,
    ) -> AggregateResult | dict[Tag, AggregateResult]:
        """Aggregates per ``interval`` bucket of ``[start, end)``.

        ``aggregates`` are some of count, min, max, sum, avg, first, last,
        twa_step, twa_linear. Buckets start at ``origin + k * interval`` (0:
        epoch-aligned, like InfluxDB's ``GROUP BY time``); ``interval`` is int
        microseconds or a ``timedelta``. One tag gives an
        :class:`AggregateResult`; a list of tags (one request) gives
        ``{tag: AggregateResult}``.
        """
        plan = self._core.aggregate_plan(
            tag_or_tags, start, end, interval, aggregates, origin, good_only
        )
        return self._drive(plan, timeout)

    def interpolate(
        self,
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
    ) -> InterpolateResult:
        """Values at sorted ``times``, or at ``start, start + interval, ... < end``.

        ``method`` is ``previous`` (sample-and-hold) or ``linear``; ``max_gap``
        (microseconds or a ``timedelta``) refuses to bridge longer gaps. Each
        time gets a status (0 ok; 1 no data before; 2 gap; 3 after the last
        point, linear only) and NaN unless the status is 0.
        """
        plan = self._core.interpolate_plan(
            tag, times, start, end, interval, method, max_gap, good_only
        )
        return self._drive(plan, timeout)

    def plot(
        self,
        tag: Tag,
        start: Any,
        end: Any,
        intervals: int,
        *,
        good_only: bool = False,
        timeout: float | None = None,
    ) -> QueryResult:
        """The points that draw ``[start, end)`` on ``intervals`` pixel columns: per
        column its first, last, min and max point (at most 4 per column)."""
        return self._drive(self._core.plot_plan(tag, start, end, intervals, good_only), timeout)

    def delete(self, tag: Tag, start: Any, end: Any, *, timeout: float | None = None) -> int:
        """Delete the points of ``tag`` with ``start <= ts < end``; durable on return.

        Covers every write the server received before the delete; returns its LSN.
        """
        return self._drive(self._core.delete_plan(tag, start, end), timeout)

    def delete_tag(self, tag: Tag, *, timeout: float | None = None) -> int:
        """Delete every point of ``tag`` (its catalog entry stays; see :meth:`remove_tag`)."""
        return self._drive(self._core.delete_tag_plan(tag), timeout)

    def create_tag(self, name: str, *, timeout: float | None = None, **meta: Any) -> TagInfo:
        """Name a new tag; the server picks its id. ``meta``: unit, description,
        value_type (float64, int64, bool, enum), duplicates (last, first,
        reject), retention_us (0: the database's retention)."""
        return self._drive(self._core.create_tag_plan(name, meta), timeout)

    def tag(self, tag: Tag, *, timeout: float | None = None) -> TagInfo:
        """The catalog entry of a tag, by name or id (``NotFound`` if it has none)."""
        return self._drive(self._core.tag_plan(tag), timeout)

    def tags(
        self, pattern: str = "*", *, limit: int | None = None, timeout: float | None = None
    ) -> list[TagInfo]:
        """Tags whose name matches the glob ``pattern``, by name (at most ``limit``,
        default 10,000)."""
        return self._drive(self._core.tags_plan(pattern, limit), timeout)

    def update_tag(self, tag: Tag, *, timeout: float | None = None, **meta: Any) -> TagInfo:
        """Change some metadata of a tag (as for :meth:`create_tag`); others stay."""
        return self._drive(self._core.update_tag_plan(tag, meta), timeout)

    def rename_tag(self, tag: Tag, name: str, *, timeout: float | None = None) -> TagInfo:
        """Give a tag a new name; its id and data stay."""
        return self._drive(self._core.rename_tag_plan(tag, name), timeout)

    def remove_tag(self, tag: Tag, *, timeout: float | None = None) -> TagInfo:
        """Delete a tag's points and its catalog entry; returns the entry removed."""
        return self._drive(self._core.remove_tag_plan(tag), timeout)


class AsyncHistorianMethods:
    """Mixin of :class:`~xtsdb.client.aio.AsyncClient`: see :class:`HistorianMethods`."""

    _core: ClientCore

    def _drive(self, plan: Plan[T], timeout: float | None) -> Awaitable[T]:
        raise NotImplementedError

    @overload
    async def aggregate(
        self, tag_or_tags: Tag, start: Any, end: Any, interval: Any,
        aggregates: Aggregates = ..., *, origin: Any = ..., good_only: bool = ...,
        timeout: float | None = ...,
    ) -> AggregateResult: ...  # fmt: skip
    @overload
    async def aggregate(
        self, tag_or_tags: Tags, start: Any, end: Any, interval: Any,
        aggregates: Aggregates = ..., *, origin: Any = ..., good_only: bool = ...,
        timeout: float | None = ...,
    ) -> dict[Tag, AggregateResult]: ...  # fmt: skip
    async def aggregate(
        self,
        tag_or_tags: Tag | Tags,
        start: Any,
        end: Any,
        interval: Any,
        aggregates: Aggregates = ("avg",),
        *,
        origin: Any = 0,
        good_only: bool = False,
        timeout: float | None = None,
    ) -> AggregateResult | dict[Tag, AggregateResult]:
        plan = self._core.aggregate_plan(
            tag_or_tags, start, end, interval, aggregates, origin, good_only
        )
        return await self._drive(plan, timeout)

    async def interpolate(
        self,
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
    ) -> InterpolateResult:
        plan = self._core.interpolate_plan(
            tag, times, start, end, interval, method, max_gap, good_only
        )
        return await self._drive(plan, timeout)

    async def plot(
        self,
        tag: Tag,
        start: Any,
        end: Any,
        intervals: int,
        *,
        good_only: bool = False,
        timeout: float | None = None,
    ) -> QueryResult:
        plan = self._core.plot_plan(tag, start, end, intervals, good_only)
        return await self._drive(plan, timeout)

    async def delete(self, tag: Tag, start: Any, end: Any, *, timeout: float | None = None) -> int:
        return await self._drive(self._core.delete_plan(tag, start, end), timeout)

    async def delete_tag(self, tag: Tag, *, timeout: float | None = None) -> int:
        return await self._drive(self._core.delete_tag_plan(tag), timeout)

    async def create_tag(self, name: str, *, timeout: float | None = None, **meta: Any) -> TagInfo:
        return await self._drive(self._core.create_tag_plan(name, meta), timeout)

    async def tag(self, tag: Tag, *, timeout: float | None = None) -> TagInfo:
        return await self._drive(self._core.tag_plan(tag), timeout)

    async def tags(
        self, pattern: str = "*", *, limit: int | None = None, timeout: float | None = None
    ) -> list[TagInfo]:
        return await self._drive(self._core.tags_plan(pattern, limit), timeout)

    async def update_tag(self, tag: Tag, *, timeout: float | None = None, **meta: Any) -> TagInfo:
        return await self._drive(self._core.update_tag_plan(tag, meta), timeout)

    async def rename_tag(self, tag: Tag, name: str, *, timeout: float | None = None) -> TagInfo:
        return await self._drive(self._core.rename_tag_plan(tag, name), timeout)

    async def remove_tag(self, tag: Tag, *, timeout: float | None = None) -> TagInfo:
        return await self._drive(self._core.remove_tag_plan(tag), timeout)
