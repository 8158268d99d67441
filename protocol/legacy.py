"""TRANSITIONAL: the per-op builder and parser functions, as thin calls of the declarations.

Kept only while callers move to the ops themselves (``QUERY.build``,
``QUERY.parse``, ...); removed before this change lands.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from . import analytics as an
from . import ops
from . import tags as tg
from .errors import InvalidInput
from .messages import PROTOCOL_VERSION, SUPPORTED_VERSIONS


def hello_request(
    req_id: int,
    token: str | None = None,
    client: str | None = None,
    versions: tuple[int, ...] = SUPPORTED_VERSIONS,
) -> dict[str, Any]:
    return ops.HELLO.build(req_id, list(versions), token, client)


def parse_hello(msg: Mapping[str, Any]) -> tuple[int, str | None, str | None]:
    h = ops.HELLO.parse(msg)
    return ops.negotiate(h.versions), h.token, h.client


def hello_response(
    req_id: int, server: str, max_frame: int, auth: bool, version: int = PROTOCOL_VERSION
) -> dict[str, Any]:
    return ops.HELLO.reply(req_id, version, server, max_frame, auth)


def parse_hello_response(resp: Mapping[str, Any]) -> tuple[int, str, int, bool]:
    return tuple(ops.HELLO.parse_answer(resp))


def write_request(
    req_id: int, tags: Any, ts: Any, values: Any, qualities: Any = None
) -> dict[str, Any]:
    return ops.WRITE.build(req_id, tags, ts, values, qualities)


def parse_write(msg: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    return tuple(ops.WRITE.parse(msg))


QueryArgs = ops.Query


def query_request(
    req_id: int,
    tag: Any,
    start: int,
    end: int,
    limit: int | None = None,
    *,
    descending: bool = False,
    good_only: bool = False,
) -> dict[str, Any]:
    return ops.QUERY.build(
        req_id, tag, start, end, limit, descending=descending, good_only=good_only
    )


def parse_query(msg: Mapping[str, Any]) -> ops.Query:
    return ops.QUERY.parse(msg)


def points_response(
    req_id: int, ts: Any, values: Any, q: Any, stats: Any = None, more: bool = False
) -> dict[str, Any]:
    return ops.QUERY.reply(req_id, ts, values, q, stats or {}, bool(more))


def parse_points(resp: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    p = ops.QUERY.parse_answer(resp)
    return p.ts, p.values, p.q


def last_request(req_id: int, tags: Any) -> dict[str, Any]:
    return ops.LAST.build(req_id, tags)


def parse_last(msg: Mapping[str, Any]) -> Any:
    return ops.LAST.parse(msg).tags


def last_response(
    req_id: int, tags: Any, ts: Any, values: Any, q: Any, errors: Any = None
) -> dict[str, Any]:
    return ops.LAST.reply(req_id, tags, ts, values, q, dict(errors or {}))


def parse_last_response(resp: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    r = ops.LAST.parse_answer(resp)
    return r.tags, r.ts, r.values, r.q


def parse_last_errors(resp: Mapping[str, Any]) -> Any:
    return ops.LAST.parse_answer(resp).errors


def backup_request(req_id: int, path: str) -> dict[str, Any]:
    return ops.BACKUP.build(req_id, path)


def parse_backup(msg: Mapping[str, Any]) -> str:
    return ops.BACKUP.parse(msg).path


def parse_backup_response(resp: Mapping[str, Any]) -> dict[str, Any]:
    return ops.BACKUP.parse_answer(resp).backup


def aggregate_request(
    req_id: int,
    tags: Any,
    start: int,
    end: int,
    interval: int,
    aggregates: Any,
    *,
    origin: int = 0,
    good_only: bool = False,
) -> dict[str, Any]:
    return an.AGGREGATE.build(
        req_id, tags, start, end, interval, aggregates, origin=origin, good_only=good_only
    )


def aggregate_result(starts: Any, values: Any) -> an.Buckets:
    return an.Buckets(starts, dict(values))


def aggregate_response(req_id: int, results: list[an.Buckets], many: bool) -> dict[str, Any]:
    return an.AGGREGATE.reply(req_id, results if many else results[0])


def parse_aggregate_response(resp: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    r = an.AGGREGATE.parse_answer(resp).result
    return [tuple(b) for b in (r if isinstance(r, list) else [r])]


def interpolate_request(
    req_id: int,
    tag: Any,
    times: Any = None,
    *,
    start: int | None = None,
    end: int | None = None,
    interval: int | None = None,
    method: str = "previous",
    max_gap: int | None = None,
    good_only: bool = False,
) -> dict[str, Any]:
    regular = (start, end, interval)
    if (times is None) == (None in regular):
        raise InvalidInput("give either times or all of start, end and interval")
    if times is None:
        times = an.Regular(start, end, interval)  # type: ignore[arg-type]
    return an.INTERPOLATE.build(req_id, tag, times, method, max_gap, good_only)


def interpolate_response(req_id: int, ts: Any, values: Any, status: Any) -> dict[str, Any]:
    return an.INTERPOLATE.reply(req_id, ts, values, status)


def parse_interpolate_response(resp: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    return tuple(an.INTERPOLATE.parse_answer(resp))


def plot_request(
    req_id: int, tag: Any, start: int, end: int, intervals: int, *, good_only: bool = False
) -> dict[str, Any]:
    return an.PLOT.build(req_id, tag, start, end, intervals, good_only)


def tag_create_request(req_id: int, name: str, **meta: Any) -> dict[str, Any]:
    return tg.TAG_CREATE.build(req_id, name, meta)


def tag_get_request(req_id: int, tag: Any) -> dict[str, Any]:
    return tg.TAG_GET.build(req_id, tag)


def tag_list_request(
    req_id: int, pattern: str | None = None, limit: int | None = None
) -> dict[str, Any]:
    return tg.TAG_LIST.build(req_id, pattern, limit)


def tag_update_request(req_id: int, tag: Any, **meta: Any) -> dict[str, Any]:
    return tg.TAG_UPDATE.build(req_id, tag, meta)


def tag_rename_request(req_id: int, tag: Any, name: str) -> dict[str, Any]:
    return tg.TAG_RENAME.build(req_id, tag, name)


def tag_remove_request(req_id: int, tag: Any) -> dict[str, Any]:
    return tg.TAG_REMOVE.build(req_id, tag)


def tag_response(req_id: int, info: Mapping[str, Any]) -> dict[str, Any]:
    return tg.TAG_GET.reply(req_id, dict(info))


def tag_list_response(req_id: int, infos: list[Mapping[str, Any]]) -> dict[str, Any]:
    return tg.TAG_LIST.reply(req_id, [dict(i) for i in infos])


def parse_tag_response(resp: Mapping[str, Any]) -> dict[str, Any]:
    return tg.TAG_GET.parse_answer(resp).tag


def parse_tag_list_response(resp: Mapping[str, Any]) -> list[dict[str, Any]]:
    return tg.TAG_LIST.parse_answer(resp).tags


def delete_request(req_id: int, tag: Any, start: int, end: int) -> dict[str, Any]:
    return tg.DELETE.build(req_id, tag, start, end)


def delete_tag_request(req_id: int, tag: Any) -> dict[str, Any]:
    return tg.DELETE_TAG.build(req_id, tag)


def parse_lsn_response(resp: Mapping[str, Any]) -> int:
    return tg.DELETE.parse_answer(resp).lsn


class AggregateArgs(NamedTuple):
    tags: list[Any]
    many: bool
    start: int
    end: int
    interval: int
    aggregates: tuple[str, ...]
    origin: int = 0
    good_only: bool = False


def parse_aggregate(msg: Mapping[str, Any]) -> AggregateArgs:
    a = an.AGGREGATE.parse(msg)
    many = isinstance(a.tags, list)
    tags = a.tags if isinstance(a.tags, list) else [a.tags]
    return AggregateArgs(
        tags, many, a.start, a.end, a.interval, a.aggregates, a.origin, a.good_only
    )


class InterpolateArgs(NamedTuple):
    tag: Any
    times: Any
    regular: Any
    method: str = "previous"
    max_gap: int | None = None
    good_only: bool = False


def parse_interpolate(msg: Mapping[str, Any]) -> InterpolateArgs:
    a = an.INTERPOLATE.parse(msg)
    regular = tuple(a.times) if isinstance(a.times, an.Regular) else None
    times = None if regular is not None else a.times
    return InterpolateArgs(a.tag, times, regular, a.method, a.max_gap, a.good_only)


def parse_plot(msg: Mapping[str, Any]) -> an.Plot:
    return an.PLOT.parse(msg)


def parse_tag_create(msg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    r = tg.TAG_CREATE.parse(msg)
    return r.name, r.meta


def parse_tag_ref(msg: Mapping[str, Any]) -> Any:
    return tg.TAG_GET.parse(msg).tag


def parse_tag_list(msg: Mapping[str, Any]) -> tuple[str, int]:
    r = tg.TAG_LIST.parse(msg)
    return r.pattern, r.limit


def parse_tag_update(msg: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    r = tg.TAG_UPDATE.parse(msg)
    return r.tag, r.meta


def parse_tag_rename(msg: Mapping[str, Any]) -> tuple[Any, str]:
    r = tg.TAG_RENAME.parse(msg)
    return r.tag, r.name


def parse_delete(msg: Mapping[str, Any]) -> tuple[Any, int, int]:
    return tuple(tg.DELETE.parse(msg))
