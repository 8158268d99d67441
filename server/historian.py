"""The historian ops, a mixin of :class:`~xtsdb.server.service.Service`.

Analytics (``aggregate``, ``interpolate``, ``plot``), deletes (``delete``,
``delete_tag``) and the tag catalog (``tag_*``): each handler parses its
request on the event loop (a bad field is refused before any work), resolves
tag names through the catalog (:meth:`Service.tag_id`), runs the engine call
in the thread pool and builds the answer there too. Answers that carry arrays
are framed as pieces (``Service._parts``) so they reach the socket uncopied.

Deletes and ``tag_remove`` first wait for every write already queued for the
group commit, so a delete covers each write the server received before it,
pipelined or not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from xtsdb.protocol.analytics import (
    aggregate_response,
    aggregate_result,
    interpolate_response,
    parse_aggregate,
    parse_interpolate,
    parse_plot,
)
from xtsdb.protocol.errors import FrameTooLarge, InvalidInput, NotFound
from xtsdb.protocol.frames import encode_frame
from xtsdb.protocol.ops import points_response
from xtsdb.protocol.tags import (
    parse_delete,
    parse_tag_create,
    parse_tag_list,
    parse_tag_ref,
    parse_tag_rename,
    parse_tag_update,
    tag_list_response,
    tag_response,
)
from xtsdb.server.engine.aggregate import Buckets, regular_times
from xtsdb.server.engine.catalog import Catalog, TagInfo
from xtsdb.server.engine.points import LastPoints, Points
from xtsdb.server.engine.wal_records import WriteBatch

if TYPE_CHECKING:
    from xtsdb.server.write_queue import WriteQueue

Frame = bytes | list[bytes | memoryview]
"""A response ready to send: one ``bytes``, or pieces for ``transport.writelines``."""
T = TypeVar("T")
_BYTES_PER_TIME = 17  # an interpolated value on the wire: int64 time, float64 value, u1 status


class EngineLike(Protocol):
    """The engine methods the server calls (all blocking)."""

    catalog: Catalog

    def write_batches(self, batches: list[WriteBatch]) -> int: ...
    def query(
        self,
        tag_id: int,
        start_us: int,
        end_us: int,
        limit: int | None = None,
        *,
        descending: bool = False,
        good_only: bool = False,
    ) -> Points: ...
    def last(self, tag_ids: Any) -> LastPoints: ...
    def flush(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def aggregate(
        self,
        tag_id: int,
        start_us: int,
        end_us: int,
        interval_us: int,
        aggregates: Sequence[str],
        *,
        origin_us: int = 0,
        good_only: bool = False,
    ) -> Buckets: ...
    def interpolate(
        self,
        tag_id: int,
        at_us: Any,
        method: str = "previous",
        *,
        good_only: bool = False,
        max_gap_us: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    def plot(
        self, tag_id: int, start_us: int, end_us: int, intervals: int, *, good_only: bool = False
    ) -> Points: ...
    def delete(self, tag_id: int, start_us: int, end_us: int) -> int: ...
    def delete_tag(self, tag_id: int) -> int: ...
    def create_tag(self, name: str, **meta: Any) -> TagInfo: ...
    def update_tag(self, key: int | str, **meta: Any) -> TagInfo: ...
    def remove_tag(self, key: int | str) -> TagInfo: ...


def _too_large(what: str, size: int, max_frame: int) -> FrameTooLarge:
    return FrameTooLarge(
        f"the result ({what}, about {size:,} bytes) would not fit in one frame of "
        f"{max_frame:,} bytes; ask for fewer buckets, times or tags"
    )


class HistorianOps:
    """Handlers for the historian ops; :class:`Service` provides the attributes below."""

    engine: EngineLike
    writes: WriteQueue
    max_frame: int

    def tag_id(self, key: int | str) -> int:
        raise NotImplementedError

    def _ok(self, req_id: int, **fields: Any) -> bytes:
        raise NotImplementedError

    def _parts(self, msg: Mapping[str, Any], what: str) -> list[bytes | memoryview]:
        raise NotImplementedError

    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    # -- analytics ---------------------------------------------------------------

    async def _op_aggregate(self, req_id: int, msg: Mapping[str, Any]) -> Frame:
        a = parse_aggregate(msg)
        ids = [self.tag_id(t) for t in a.tags]
        if a.end > a.start:  # refuse an answer that cannot be sent before computing it
            buckets = (a.end - a.start) // a.interval + 2
            size = buckets * 8 * (1 + len(a.aggregates)) * len(ids)
            if size > self.max_frame:
                raise _too_large(f"{buckets:,} buckets x {len(ids)} tags", size, self.max_frame)

        def run() -> Frame:
            results = []
            for tag in ids:  # one engine call per tag: each is columnar over its points
                b = self.engine.aggregate(
                    tag, a.start, a.end, a.interval, a.aggregates,
                    origin_us=a.origin, good_only=a.good_only,
                )  # fmt: skip
                results.append(aggregate_result(b.start, b.values))
            return self._parts(aggregate_response(req_id, results, a.many), "aggregate")

        return await self._in_pool(run)

    async def _op_interpolate(self, req_id: int, msg: Mapping[str, Any]) -> Frame:
        a = parse_interpolate(msg)
        tag = self.tag_id(a.tag)
        times = a.times
        if a.regular is not None:
            start, end, interval = a.regular
            n = max(0, -((start - end) // interval))
            if n * _BYTES_PER_TIME > self.max_frame:
                raise _too_large(f"{n:,} times", n * _BYTES_PER_TIME, self.max_frame)
            try:
                times = regular_times(start, end, interval)
            except ValueError as exc:
                raise InvalidInput(f"'times': {exc}") from None

        def run() -> Frame:
            ts, values, status = self.engine.interpolate(
                tag, times, a.method, good_only=a.good_only, max_gap_us=a.max_gap
            )
            return self._parts(interpolate_response(req_id, ts, values, status), "interpolate")

        return await self._in_pool(run)

    async def _op_plot(self, req_id: int, msg: Mapping[str, Any]) -> Frame:
        a = parse_plot(msg)
        tag = self.tag_id(a.tag)

        def run() -> Frame:
            pts = self.engine.plot(tag, a.start, a.end, a.intervals, good_only=a.good_only)
            resp = points_response(
                req_id, pts.timestamps, pts.values, pts.qualities, pts.stats.as_dict()
            )
            return self._parts(resp, f"{len(pts)} points")

        return await self._in_pool(run)

    # -- deletes -------------------------------------------------------------------

    async def _after_queued_writes(self) -> None:
        # An empty batch goes through the group commit like any write: once it is
        # committed, so is every write queued before it.
        await self.writes.submit(WriteBatch.build(0, np.empty(0, np.int64), np.empty(0)))

    async def _op_delete(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        key, start, end = parse_delete(msg)
        tag = self.tag_id(key)
        await self._after_queued_writes()
        lsn = await self._in_pool(self.engine.delete, tag, start, end)
        return self._ok(req_id, lsn=lsn)

    async def _op_delete_tag(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        tag = self.tag_id(parse_tag_ref(msg))
        await self._after_queued_writes()
        lsn = await self._in_pool(self.engine.delete_tag, tag)
        return self._ok(req_id, lsn=lsn)

    # -- the tag catalog -------------------------------------------------------------

    def _info(self, key: int | str) -> TagInfo:
        info = self.engine.catalog.get(key)
        if info is None:
            raise NotFound(f"no tag {key!r} in the catalog")
        return info

    def _tag_frame(self, req_id: int, info: TagInfo) -> bytes:
        frame: bytes = encode_frame(tag_response(req_id, info.as_dict()), self.max_frame)
        return frame

    async def _op_tag_create(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        name, meta = parse_tag_create(msg)
        info = await self._in_pool(lambda: self.engine.create_tag(name, **meta))
        return self._tag_frame(req_id, info)

    def _op_tag_get(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        # The catalog's reads come from memory: answered at once, on the loop.
        return self._tag_frame(req_id, self._info(parse_tag_ref(msg)))

    async def _op_tag_list(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        pattern, limit = parse_tag_list(msg)
        infos = await self._in_pool(self.engine.catalog.find, pattern, limit)
        resp = tag_list_response(req_id, [i.as_dict() for i in infos])
        frame: bytes = encode_frame(resp, self.max_frame)
        return frame

    async def _op_tag_update(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        key, meta = parse_tag_update(msg)
        info = await self._in_pool(lambda: self.engine.update_tag(key, **meta))
        return self._tag_frame(req_id, info)

    async def _op_tag_rename(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        key, name = parse_tag_rename(msg)
        info = await self._in_pool(self.engine.catalog.rename, key, name)
        return self._tag_frame(req_id, info)

    async def _op_tag_remove(self, req_id: int, msg: Mapping[str, Any]) -> bytes:
        key = parse_tag_ref(msg)
        self._info(key)  # NotFound at once, not after waiting for the write queue
        await self._after_queued_writes()
        info = await self._in_pool(self.engine.remove_tag, key)
        return self._tag_frame(req_id, info)
