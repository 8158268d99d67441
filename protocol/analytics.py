"""The analytics operations, declared: ``aggregate``, ``interpolate`` and ``plot``.

The same shape as :mod:`.ops`. ``plot`` answers with the points of a query
(:class:`~.ops.Points`). The rules the numbers follow (bucket alignment, what
each aggregate means, interpolation statuses) are the engine's;
``docs/historian.md`` states them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .declare import Message, Op, Role, message
from .errors import FrameTooLarge, InvalidInput, NotFound
from .messages import (
    Q_DTYPE,
    TAGS_DTYPE,
    TS_DTYPE,
    VALUES_DTYPE,
    int_field,
    tag_field,
    unpack_array,
    wire_array,
)
from .ops import STORAGE_ERRORS, Points, TagRef
from .wire import Array, Bool, Choice, Int, Kind, Lengths, Tag, arg

AGGREGATES = ("count", "min", "max", "sum", "avg", "first", "last", "twa_step", "twa_linear")
"""Every aggregate the server computes; ``count`` is int64 on the wire, the others float64."""
METHODS = ("previous", "linear")
"""Interpolation methods."""
STATUS_DTYPE = Q_DTYPE
"""Interpolation status codes travel as uint8, like qualities."""
MAX_PLOT_INTERVALS = 100_000

AggregateValues = dict[str, npt.NDArray[Any]]


def _dtype_of(aggregate: str) -> str:
    return TS_DTYPE if aggregate == "count" else VALUES_DTYPE


# -- aggregate ---------------------------------------------------------------------


class OneOrManyTags(Kind):
    """``tag`` (one id or name) or ``tags`` (several, answered together)."""

    one_key = False

    def put(self, out: dict[str, Any], name: str, value: Any, lengths: Lengths) -> None:
        if isinstance(value, str | int | np.integer):
            out["tag"] = tag_field(value)
        else:
            seq = value.tolist() if isinstance(value, np.ndarray) else list(value)
            out["tags"] = [tag_field(t, "tags") for t in seq]

    def take(self, msg: Mapping[str, Any], name: str, lengths: Lengths, default: Any) -> Any:
        has_tag, has_tags = msg.get("tag") is not None, msg.get("tags") is not None
        if has_tag == has_tags:
            raise InvalidInput("an aggregate needs exactly one of 'tag' or 'tags' (an array)")
        if has_tag:
            return tag_field(msg["tag"])
        raw = msg["tags"]
        if isinstance(raw, list):
            tags: list[TagRef] = [tag_field(t, "tags") for t in raw]
        else:
            tags = [int(t) for t in unpack_array(raw, TAGS_DTYPE, "tags").tolist()]
        if not tags:
            raise InvalidInput("'tags' must name at least one tag")
        return tags

    def doc_rows(self, name: str, doc: str, optional: bool) -> list[tuple[str, str, str]]:
        return [
            ("tag", Tag.type_doc, "tag id or name; **exactly one** of `tag`, `tags`"),
            ("tags", "array of int/str, or bin uint32[k]", "several tags, answered together"),
        ]


class AggregateNames(Kind):
    type_doc = "array of str"

    def encode(self, value: Any, name: str, lengths: Lengths) -> list[str]:
        # One name may be given as a str here; the wire always carries an array.
        return list(self.decode([value] if isinstance(value, str) else list(value), name, lengths))

    def decode(self, raw: Any, name: str, lengths: Lengths) -> tuple[str, ...]:
        if isinstance(raw, str) or not isinstance(raw, list | tuple) or not raw:
            raise InvalidInput(f"'aggregates' must be a non-empty array of names from {AGGREGATES}")
        unknown = [a for a in raw if a not in AGGREGATES]
        if unknown:
            raise InvalidInput(f"'aggregates': unknown {unknown[:8]!r}; known: {AGGREGATES}")
        return tuple(dict.fromkeys(raw))  # duplicates would only repeat a map key


@message
class Aggregate(Message):
    tags: TagRef | list[TagRef] = arg(OneOrManyTags(), "")
    start: int = arg(Int(), "first timestamp included (µs)")
    end: int = arg(Int(), "first timestamp excluded (µs)")
    interval: int = arg(Int(1), "bucket length (µs)")
    aggregates: Any = arg(AggregateNames(), "some of " + ", ".join(f"`{a}`" for a in AGGREGATES))
    origin: int = arg(Int(), "a bucket start (µs; default 0: epoch-aligned)", default=0)
    good_only: bool = arg(Bool(), "only points with `q >= 192`", default=False)


class Buckets(NamedTuple):
    """One tag's buckets: their starts, and the values of each aggregate asked for."""

    start: Any
    values: AggregateValues


class BucketResults(Kind):
    """One :class:`Buckets` as the response's own ``start`` and ``values`` (a request with
    ``tag``), or a list of them as ``results`` (a request with ``tags``)."""

    bulky = True
    one_key = False

    def put(self, out: dict[str, Any], name: str, value: Any, lengths: Lengths) -> None:
        if isinstance(value, Buckets):
            out.update(self._encode_one(value))
        else:
            out["results"] = [self._encode_one(b) for b in value]

    def take(self, msg: Mapping[str, Any], name: str, lengths: Lengths, default: Any) -> Any:
        results = msg.get("results")
        if results is None:
            return self._decode_one(msg)
        if not isinstance(results, list):
            raise InvalidInput("'results' must be an array")
        return [self._decode_one(r) for r in results]

    @staticmethod
    def _encode_one(b: Buckets) -> dict[str, Any]:
        start = wire_array(b.start, TS_DTYPE)
        lengths: Lengths = {"b": (start.shape[0], "start")}
        values = {k: Array(_dtype_of(k), "b").encode(v, k, lengths) for k, v in b.values.items()}
        return {"start": start, "values": values}

    @staticmethod
    def _decode_one(res: Any) -> Buckets:
        if not isinstance(res, Mapping):
            raise InvalidInput("an aggregate result must be a map")
        raw = res.get("values")
        if res.get("start") is None or raw is None:
            raise InvalidInput(
                f"missing field {'start' if res.get('start') is None else 'values'!r}"
            )
        start = unpack_array(res["start"], TS_DTYPE, "start")
        if not isinstance(raw, Mapping):
            raise InvalidInput("'values' must be a map of aggregate name -> bin")
        n = start.shape[0]
        return Buckets(
            start, {str(k): unpack_array(v, _dtype_of(str(k)), str(k), n) for k, v in raw.items()}
        )

    def doc_rows(self, name: str, doc: str, optional: bool) -> list[tuple[str, str, str]]:
        return [
            ("start", "bin int64[b]", "bucket starts (a request with `tag`)"),
            (
                "values",
                "map str -> bin",
                "per requested aggregate, `b` values: `count` as int64, "
                "the others float64 (NaN: no value)",
            ),
            (
                "results",
                "array of map",
                'a request with `tags`: one `{"start", "values"}` '
                "map as above per tag, in the order of `tags`",
            ),
        ]


@message
class AggregateAnswer(Message):
    result: Buckets | list[Buckets] = arg(BucketResults(), "")


AGGREGATE = Op(
    "aggregate",
    Aggregate,
    AggregateAnswer,
    Role.READ,
    True,
    (NotFound, FrameTooLarge, *STORAGE_ERRORS),
    "Aggregates of one tag (or of several) per time bucket of `[start, end)`.",
)


# -- interpolate -------------------------------------------------------------------


class Regular(NamedTuple):
    """The times ``start, start + interval, ...`` below ``end``."""

    start: int
    end: int
    interval: int


class Times(Kind):
    type_doc = "bin int64[m], or map"

    def encode(self, value: Any, name: str, lengths: Lengths) -> Any:
        if isinstance(value, Regular):
            return {
                "start": int_field(value.start, "start"),
                "end": int_field(value.end, "end"),
                "interval": int_field(value.interval, "interval", 1),
            }
        return wire_array(np.atleast_1d(np.asarray(value)), TS_DTYPE)

    def decode(self, raw: Any, name: str, lengths: Lengths) -> Any:
        if not isinstance(raw, Mapping):
            return unpack_array(raw, TS_DTYPE, "times")
        for key in ("start", "end", "interval"):
            if raw.get(key) is None:
                raise InvalidInput(f"missing field {key!r}")
        return Regular(
            int_field(raw["start"], "times.start"),
            int_field(raw["end"], "times.end"),
            int_field(raw["interval"], "times.interval", 1),
        )


@message
class Interpolate(Message):
    tag: TagRef = arg(Tag(), "tag id or name")
    times: Any = arg(
        Times(),
        'sorted times (µs); or `{"start", "end", "interval"}` (ints, '
        "`interval >= 1`): the times `start, start + interval, ...` below `end`",
    )
    method: str = arg(
        Choice(METHODS),
        "`previous` (default: sample-and-hold) or `linear`",
        default="previous",
        always=True,
    )
    max_gap: int | None = arg(Int(0), "do not bridge more than this many µs", default=None)
    good_only: bool = arg(Bool(), "only points with `q >= 192`", default=False)


@message
class Interpolated(Message):
    ts: Any = arg(Array(TS_DTYPE, "m", defines=True), "the times")
    values: Any = arg(
        Array(VALUES_DTYPE, "m"), "the value at each time (NaN unless its status is 0)"
    )
    status: Any = arg(
        Array(STATUS_DTYPE, "m"),
        "0 ok, 1 no data before the time, 2 gap longer "
        "than `max_gap`, 3 after the last point (`linear` only)",
    )


INTERPOLATE = Op(
    "interpolate",
    Interpolate,
    Interpolated,
    Role.READ,
    True,
    (NotFound, FrameTooLarge, *STORAGE_ERRORS),
    "Values of one tag at given times.",
)


# -- plot ---------------------------------------------------------------------------


@message
class Plot(Message):
    tag: TagRef = arg(Tag(), "tag id or name")
    start: int = arg(Int(), "first timestamp included (µs)")
    end: int = arg(Int(), "first timestamp excluded (µs)")
    intervals: int = arg(Int(1, MAX_PLOT_INTERVALS), "columns")
    good_only: bool = arg(Bool(), "only points with `q >= 192`", default=False)


PLOT = Op(
    "plot",
    Plot,
    Points,
    Role.READ,
    True,
    (NotFound, *STORAGE_ERRORS),
    "The points that draw `[start, end)` on `intervals` pixel columns.",
)

ANALYTICS_OPS = (AGGREGATE, INTERPOLATE, PLOT)
