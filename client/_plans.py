"""Plans of the historian operations: analytics, deletes and the tag catalog.

A mixin of :class:`~._core.ClientCore`, in the same style as its plans: each
public operation checks and converts its arguments (times, durations, tag
names) before anything is sent, yields the request and turns the response
into a result type. Both transports run these plans unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from xtsdb.protocol.analytics import (
    aggregate_request,
    interpolate_request,
    parse_aggregate_response,
    parse_interpolate_response,
    plot_request,
)
from xtsdb.protocol.errors import InvalidInput, ProtocolError
from xtsdb.protocol.ops import parse_points
from xtsdb.protocol.tags import (
    delete_request,
    delete_tag_request,
    parse_lsn_response,
    parse_tag_list_response,
    parse_tag_response,
    tag_create_request,
    tag_get_request,
    tag_list_request,
    tag_remove_request,
    tag_rename_request,
    tag_update_request,
)

from ._convert import timestamps_us, to_us
from .results import AggregateResult, InterpolateResult, QueryResult, TagInfo

if TYPE_CHECKING:
    from ._core import Plan, Request

TagKey = int | str


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


def tag_key(tag: Any) -> TagKey:
    """A tag as the wire takes it: a name, or an int id (numpy integers too)."""
    if isinstance(tag, str):
        return tag
    if isinstance(tag, int | np.integer) and not isinstance(tag, bool):
        return int(tag)
    raise InvalidInput(f"a tag is an int id or a str name, got {type(tag).__name__}")


class HistorianPlans:
    """Plans of :class:`~._core.ClientCore` for the historian ops."""

    # Provided by ClientCore (declared here for the type checker).
    _ids: Iterator[int]

    def _request(self, msg: dict[str, Any], points: int = 0) -> Request:
        raise NotImplementedError

    def single(self, req: Request) -> Plan[dict[str, Any]]:
        raise NotImplementedError

    def _call(self, msg: dict[str, Any]) -> Plan[dict[str, Any]]:
        """Plan: send one request built from ``msg``; the checked response."""
        return (yield from self.single(self._request(msg)))

    # -- analytics ---------------------------------------------------------------

    def aggregate_plan(
        self,
        tags: Any,
        start: Any,
        end: Any,
        interval: Any,
        aggregates: str | Sequence[str],
        origin: Any,
        good_only: bool,
    ) -> Plan[AggregateResult | dict[TagKey, AggregateResult]]:
        """Plan: an :class:`AggregateResult`, or ``{tag: AggregateResult}`` for a sequence."""
        many = not isinstance(tags, str | int | np.integer)
        keys = [tag_key(t) for t in (np.asarray(tags).tolist() if many else [tags])]
        if many and not keys:
            raise InvalidInput("aggregate needs at least one tag")
        names = [aggregates] if isinstance(aggregates, str) else list(aggregates)
        msg = aggregate_request(
            next(self._ids), keys if many else keys[0], to_us(start, "start"), to_us(end, "end"),
            duration_us(interval, "interval"), names,
            origin=to_us(origin, "origin"), good_only=good_only,
        )  # fmt: skip
        resp = yield from self._call(msg)
        results = [AggregateResult(s, v) for s, v in parse_aggregate_response(resp)]
        if len(results) != len(keys):
            raise ProtocolError(f"aggregate: {len(results)} results for {len(keys)} tags")
        return dict(zip(keys, results, strict=True)) if many else results[0]

    def interpolate_plan(
        self,
        tag: Any,
        times: Any,
        start: Any,
        end: Any,
        interval: Any,
        method: str,
        max_gap: Any,
        good_only: bool,
    ) -> Plan[InterpolateResult]:
        """Plan: an :class:`InterpolateResult` at ``times`` or at regular times."""
        regular = (start, end, interval)
        if (times is None) == (None in regular):
            raise InvalidInput("give either times, or all of start, end and interval")
        gap = None if max_gap is None else duration_us(max_gap, "max_gap")
        if times is not None:
            msg = interpolate_request(
                next(self._ids), tag_key(tag), timestamps_us(times),
                method=method, max_gap=gap, good_only=good_only,
            )  # fmt: skip
        else:
            msg = interpolate_request(
                next(self._ids), tag_key(tag), start=to_us(start, "start"), end=to_us(end, "end"),
                interval=duration_us(interval, "interval"),
                method=method, max_gap=gap, good_only=good_only,
            )  # fmt: skip
        resp = yield from self._call(msg)
        return InterpolateResult(*parse_interpolate_response(resp))

    def plot_plan(
        self, tag: Any, start: Any, end: Any, intervals: int, good_only: bool
    ) -> Plan[QueryResult]:
        """Plan: the :class:`QueryResult` of the points that draw ``[start, end)``."""
        msg = plot_request(
            next(self._ids), tag_key(tag), to_us(start, "start"), to_us(end, "end"), intervals,
            good_only=good_only,
        )  # fmt: skip
        resp = yield from self._call(msg)
        stats = {str(k): int(v) for k, v in (resp.get("stats") or {}).items()}
        return QueryResult(*parse_points(resp), stats)

    # -- deletes -------------------------------------------------------------------

    def delete_plan(self, tag: Any, start: Any, end: Any) -> Plan[int]:
        """Plan: the LSN of a delete of ``[start, end)``."""
        msg = delete_request(
            next(self._ids), tag_key(tag), to_us(start, "start"), to_us(end, "end")
        )
        return parse_lsn_response((yield from self._call(msg)))

    def delete_tag_plan(self, tag: Any) -> Plan[int]:
        msg = delete_tag_request(next(self._ids), tag_key(tag))
        return parse_lsn_response((yield from self._call(msg)))

    # -- the tag catalog -------------------------------------------------------------

    def _tag_info(self, msg: dict[str, Any]) -> Plan[TagInfo]:
        return TagInfo.from_wire(parse_tag_response((yield from self._call(msg))))

    def create_tag_plan(self, name: str, meta: dict[str, Any]) -> Plan[TagInfo]:
        return (yield from self._tag_info(tag_create_request(next(self._ids), name, **meta)))

    def tag_plan(self, tag: Any) -> Plan[TagInfo]:
        return (yield from self._tag_info(tag_get_request(next(self._ids), tag_key(tag))))

    def tags_plan(self, pattern: str, limit: int | None) -> Plan[list[TagInfo]]:
        resp = yield from self._call(tag_list_request(next(self._ids), pattern, limit))
        return [TagInfo.from_wire(t) for t in parse_tag_list_response(resp)]

    def update_tag_plan(self, tag: Any, meta: dict[str, Any]) -> Plan[TagInfo]:
        msg = tag_update_request(next(self._ids), tag_key(tag), **meta)
        return (yield from self._tag_info(msg))

    def rename_tag_plan(self, tag: Any, name: str) -> Plan[TagInfo]:
        msg = tag_rename_request(next(self._ids), tag_key(tag), name)
        return (yield from self._tag_info(msg))

    def remove_tag_plan(self, tag: Any) -> Plan[TagInfo]:
        return (yield from self._tag_info(tag_remove_request(next(self._ids), tag_key(tag))))
