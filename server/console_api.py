"""The web console's JSON API (``GET /api/console/...``) over the engine's own operations.

Each route turns its query string into the request message of a binary op,
checked by that op's declaration (``OP.parse``: the same field checks as the
wire), and awaits the same handler the binary protocol dispatches to
(:mod:`xtsdb.server.historian`, :mod:`xtsdb.server.points_ops`): there is no
second query path. What the console adds is bounds a browser needs and the
wire leaves to the client: a range must lie in ``[1970, 9999]`` with ``start <
end`` and span at most :data:`MAX_SPAN_US`; at most :data:`MAX_TAGS` tags per
request; plot widths, point and bucket counts capped. A refusal is
``{"error": "..."}`` with a 4xx status, and changes nothing.

Several tags travel as one ``tags`` parameter holding a JSON array of names
(a tag name may hold any printable character, commas included).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from xtsdb.protocol.analytics import AGGREGATE, PLOT
from xtsdb.protocol.declare import Empty, Op
from xtsdb.protocol.errors import (
    FrameTooLarge,
    InvalidInput,
    NotFound,
    Overloaded,
    ShuttingDown,
    XtsdbError,
)
from xtsdb.protocol.ops import LAST, QUERY, Points
from xtsdb.protocol.tags import TAG_SEARCH
from xtsdb.server import historian, points_ops
from xtsdb.server.context import ServerContext
from xtsdb.server.http_endpoint import HttpReply
from xtsdb.server.http_request import HttpRequest
from xtsdb.server.inline_calls import answered

JSON = "application/json"
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
MAX_TAGS = 20  # tags per trend request (a chart with more lines is unreadable)
MAX_SEARCH = 200  # tags per page of the tag browser
MAX_WIDTH = 4000  # plot columns: wider than any screen
MAX_POINTS = 10_000  # raw points per tag in one query answer
MAX_BUCKETS = 10_000  # aggregate buckets per tag
YEAR_US = 31_556_952_000_000  # a Gregorian year (365.2425 days) in µs
MAX_SPAN_US = 100 * YEAR_US
MAX_TS_US = 253_402_300_800_000_000  # 10000-01-01T00:00:00Z: the date picker's last year

Route = Callable[[ServerContext, HttpRequest], Awaitable[dict[str, Any]]]


def reply(status: int, body: dict[str, Any]) -> HttpReply:
    data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    return HttpReply(status, data, content_type=JSON, headers=NO_STORE)


def _status(exc: XtsdbError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, InvalidInput | FrameTooLarge):
        return 400
    if isinstance(exc, Overloaded | ShuttingDown):
        return 503
    return 500


def guarded(route: Route) -> Callable[[ServerContext, HttpRequest], Awaitable[HttpReply]]:
    """``route`` answering JSON; an xtsdb error as ``{"error": ...}`` with its status."""

    async def run(ctx: ServerContext, req: HttpRequest) -> HttpReply:
        try:
            return reply(200, await route(ctx, req))
        except XtsdbError as exc:
            return reply(_status(exc), {"error": str(exc), "kind": type(exc).__name__})

    return run


# -- parameters -------------------------------------------------------------------


def int_param(req: HttpRequest, name: str, default: int | None = None) -> int:
    raw = req.param(name)
    if not raw:
        if default is None:
            raise InvalidInput(f"missing parameter {name!r}")
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"{name!r} must be an integer, got {raw[:40]!r}") from None


def tags_param(req: HttpRequest) -> list[str]:
    """The ``tags`` parameter: a JSON array of 1 .. MAX_TAGS names."""
    raw = req.param("tags")
    try:
        tags = json.loads(raw) if raw else None
    except ValueError:
        tags = None
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise InvalidInput("'tags' must be a JSON array of tag names, e.g. [\"boiler.temp\"]")
    if not tags:
        raise InvalidInput("'tags' names no tag")
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"{len(tags):,} tags asked for; at most {MAX_TAGS} per request")
    return list(dict.fromkeys(tags))


def time_range(req: HttpRequest) -> tuple[int, int]:
    """``start`` and ``end`` (µs since 1970): a range a person could mean, else InvalidInput."""
    start, end = int_param(req, "start"), int_param(req, "end")
    if start < 0:
        raise InvalidInput("'start' is before 1970: timestamps are µs since 1970-01-01 UTC")
    if end > MAX_TS_US:
        raise InvalidInput("'end' is after the year 9999")
    if start >= end:
        raise InvalidInput(f"'start' ({start}) must be before 'end' ({end})")
    if end - start > MAX_SPAN_US:
        years = (end - start) / YEAR_US
        raise InvalidInput(f"a range of {years:,.0f} years; at most {MAX_SPAN_US // YEAR_US}")
    return start, end


def flag(req: HttpRequest, name: str) -> bool:
    return req.param(name) in ("1", "true")


# -- answers ----------------------------------------------------------------------


def floats(values: Any) -> list[float | None]:
    """A float column as JSON numbers, NaN (a missing value) as null."""
    arr = np.asarray(values, np.float64)
    finite = np.isfinite(arr)
    if finite.all():
        out: list[float | None] = arr.tolist()
        return out
    boxed = arr.astype(object)
    boxed[~finite] = None
    out = boxed.tolist()
    return out


def series(name: str, pts: Points) -> dict[str, Any]:
    return {
        "tag": name,
        "ts": np.asarray(pts.ts, np.int64).tolist(),
        "values": floats(pts.values),
        "q": np.asarray(pts.q, np.uint8).tolist(),
    }


async def each_tag(
    ctx: ServerContext, tags: list[str], one: Callable[[str], Awaitable[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """``one(tag)`` for every tag, concurrently (each runs in the query pool)."""
    for tag in tags:
        ctx.tag_id(tag)  # NotFound for the first unknown name before any work
    return list(await asyncio.gather(*(one(t) for t in tags)))


async def routed(ctx: ServerContext, op: Op[Any, Any], handler: Any, req: Any) -> Any:
    """A read handler's answer; in cluster mode through the router (docs/cluster.md), so
    the console sees the tags of every shard, not only this node's."""
    if ctx.cluster is None:
        return await answered(handler(ctx, req))
    return await answered(ctx.cluster.dispatch(ctx, op, handler, req, {}))


# -- routes -----------------------------------------------------------------------


async def tags(ctx: ServerContext, req: HttpRequest) -> dict[str, Any]:
    """A page of the catalog search, with each tag's latest point."""
    limit = min(int_param(req, "limit", 50), MAX_SEARCH)
    msg: dict[str, Any] = {"text": req.param("q"), "limit": limit}
    if req.param("after"):
        msg["after"] = req.param("after")
    page = await historian.tag_search(ctx, TAG_SEARCH.parse(msg))
    found = page.tags
    latest: dict[int, tuple[int, float | None, int]] = {}
    if found:
        asked = LAST.parse({"tags": [t["id"] for t in found]})
        got = await routed(ctx, LAST, points_ops.last, asked)
        values = floats(got.values)
        for i, tag_id in enumerate(np.asarray(got.tags).tolist()):
            latest[tag_id] = (int(got.ts[i]), values[i], int(got.q[i]))
    out = []
    for t in found:
        last = latest.get(t["id"])
        out.append(
            {
                "id": t["id"],
                "name": t["name"],
                "unit": t["unit"],
                "description": t["description"],
                "last": None if last is None else {"ts": last[0], "value": last[1], "q": last[2]},
            }
        )
    return {"tags": out, "more": page.more}


async def plot(ctx: ServerContext, req: HttpRequest) -> dict[str, Any]:
    """Plot mode over ``width`` pixel columns, per tag: at most 4 points a column."""
    names = tags_param(req)
    start, end = time_range(req)
    width = int_param(req, "width", 1000)
    if not 1 <= width <= MAX_WIDTH:
        raise InvalidInput(f"'width' must be 1..{MAX_WIDTH} pixel columns")
    good = flag(req, "good_only")

    async def one(name: str) -> dict[str, Any]:
        msg = {"tag": name, "start": start, "end": end, "intervals": width, "good_only": good}
        pts = await routed(ctx, PLOT, historian.plot, PLOT.parse(msg))
        info = ctx.engine.catalog.get(name)  # for the y-axis: one per unit
        return {**series(name, pts), "unit": info.unit if info is not None else ""}

    return {"start": start, "end": end, "width": width, "series": await each_tag(ctx, names, one)}


async def query(ctx: ServerContext, req: HttpRequest) -> dict[str, Any]:
    """Raw points, at most ``limit`` (<= MAX_POINTS) per tag, newest first with ``desc``."""
    names = tags_param(req)
    start, end = time_range(req)
    limit = int_param(req, "limit", MAX_POINTS)
    if not 1 <= limit <= MAX_POINTS:
        raise InvalidInput(f"'limit' must be 1..{MAX_POINTS}")
    desc, good = flag(req, "desc"), flag(req, "good_only")

    async def one(name: str) -> dict[str, Any]:
        msg = {"tag": name, "start": start, "end": end, "limit": limit}
        asked = QUERY.parse({**msg, "descending": desc, "good_only": good})
        pts = await routed(ctx, QUERY, points_ops.query, asked)
        return {**series(name, pts), "more": bool(pts.more)}

    return {"start": start, "end": end, "series": await each_tag(ctx, names, one)}


async def aggregate(ctx: ServerContext, req: HttpRequest) -> dict[str, Any]:
    """Aggregates per ``interval`` µs, at most MAX_BUCKETS buckets per tag."""
    names = tags_param(req)
    start, end = time_range(req)
    interval = int_param(req, "interval")
    if interval < 1:
        raise InvalidInput("'interval' must be at least 1 µs")
    if math.ceil((end - start) / interval) > MAX_BUCKETS:
        raise InvalidInput(f"more than {MAX_BUCKETS:,} buckets: ask for a longer 'interval'")
    wanted = [a for a in req.param("aggregates", "min,max,avg").split(",") if a]
    msg = {"start": start, "end": end, "interval": interval, "aggregates": wanted}
    parsed = AGGREGATE.parse({**msg, "tags": names, "good_only": flag(req, "good_only")})
    answer = await routed(ctx, AGGREGATE, historian.aggregate, parsed)
    results = answer.result if isinstance(answer.result, list) else [answer.result]
    out = []
    for name, b in zip(names, results, strict=True):
        cols = {
            k: (np.asarray(v).tolist() if k == "count" else floats(v)) for k, v in b.values.items()
        }
        out.append({"tag": name, "start": np.asarray(b.start, np.int64).tolist(), "values": cols})
    return {"start": start, "end": end, "interval": interval, "series": out}


async def last(ctx: ServerContext, req: HttpRequest) -> dict[str, Any]:
    """Each tag's latest point (null for a tag with none)."""
    names = tags_param(req)
    ids = [ctx.tag_id(n) for n in names]
    got = await routed(ctx, LAST, points_ops.last, LAST.parse({"tags": ids}))
    values = floats(got.values)
    by_id = {
        tag_id: {"ts": int(got.ts[i]), "value": values[i], "q": int(got.q[i])}
        for i, tag_id in enumerate(np.asarray(got.tags).tolist())
    }
    return {"last": [{"tag": n, "point": by_id.get(i)} for n, i in zip(names, ids, strict=True)]}


async def stats(ctx: ServerContext, req: HttpRequest) -> dict[str, Any]:
    """What the ``stats`` op answers."""
    answer = await points_ops.stats(ctx, Empty())
    plain: dict[str, Any] = json.loads(json.dumps(answer.stats, default=str))  # JSON types only
    return plain


ROUTES: dict[str, Route] = {
    "tags": tags,
    "plot": plot,
    "query": query,
    "aggregate": aggregate,
    "last": last,
    "stats": stats,
}
