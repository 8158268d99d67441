"""Builders and parsers of the analytics ops: ``aggregate``, ``interpolate`` and ``plot``.

The same shape as :mod:`.ops`: ``*_request`` builders for clients, ``parse_*``
for the server (:class:`InvalidInput` naming the field), ``*_response`` for the
server's answers (numpy arrays in wire dtypes, sent uncopied by
``encode_frame_parts``) and ``parse_*_response`` for clients. ``plot`` answers
with the points of a query (``points_response`` / ``parse_points``).

The rules the numbers follow (bucket alignment, what each aggregate means,
interpolation statuses) are the engine's; ``docs/historian.md`` states them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .errors import InvalidInput
from .messages import (
    Q_DTYPE,
    TS_DTYPE,
    VALUES_DTYPE,
    bool_field,
    int_field,
    ok_response,
    optional_int_field,
    request,
    required,
    str_field,
    tag_field,
    unpack_array,
    wire_array,
)
from .ops import Float64Array, Int64Array, UInt8Array, checked_response, parse_tags, wire_n

AGGREGATES = ("count", "min", "max", "sum", "avg", "first", "last", "twa_step", "twa_linear")
"""Every aggregate the server computes; ``count`` is int64 on the wire, the others float64."""
METHODS = ("previous", "linear")
"""Interpolation methods."""
STATUS_DTYPE = Q_DTYPE
"""Interpolation status codes travel as uint8, like qualities."""
MAX_PLOT_INTERVALS = 100_000

TagRef = int | str
AggregateValues = dict[str, npt.NDArray[Any]]


def _tag_or_tags(tags: Any) -> dict[str, Any]:
    """``{"tag": one}`` for an id or a name, ``{"tags": [...]}`` for a sequence of them."""
    if isinstance(tags, str | int | np.integer):
        return {"tag": tag_field(tags)}
    seq = tags.tolist() if isinstance(tags, np.ndarray) else list(tags)
    return {"tags": [tag_field(t, "tags") for t in seq]}


def _aggregate_names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise InvalidInput(f"'aggregates' must be a non-empty array of names from {AGGREGATES}")
    unknown = [a for a in value if a not in AGGREGATES]
    if unknown:
        raise InvalidInput(f"'aggregates': unknown {unknown[:8]!r}; known: {AGGREGATES}")
    return tuple(dict.fromkeys(value))  # duplicates would only repeat a map key


def _dtype_of(aggregate: str) -> str:
    return TS_DTYPE if aggregate == "count" else VALUES_DTYPE


# -- aggregate --------------------------------------------------------------------


class AggregateArgs(NamedTuple):
    """A parsed aggregate request; ``many`` if it named its tags with ``tags``."""

    tags: list[TagRef]
    many: bool
    start: int
    end: int
    interval: int
    aggregates: tuple[str, ...]
    origin: int = 0
    good_only: bool = False


def aggregate_request(
    req_id: int,
    tags: TagRef | Sequence[TagRef] | npt.NDArray[Any],
    start: int,
    end: int,
    interval: int,
    aggregates: Sequence[str],
    *,
    origin: int = 0,
    good_only: bool = False,
) -> dict[str, Any]:
    """Aggregates per ``interval`` bucket of ``[start, end)`` for one tag or several."""
    fields = _tag_or_tags(tags)
    fields.update(
        start=int_field(start, "start"),
        end=int_field(end, "end"),
        interval=int_field(interval, "interval", 1),
        # One name may be given as a str here; the wire always carries an array.
        aggregates=list(
            _aggregate_names([aggregates] if isinstance(aggregates, str) else list(aggregates))
        ),
    )
    if origin:
        fields["origin"] = int_field(origin, "origin")
    if good_only:
        fields["good_only"] = True
    return request("aggregate", req_id, **fields)


def parse_aggregate(msg: Mapping[str, Any]) -> AggregateArgs:
    has_tag, has_tags = msg.get("tag") is not None, msg.get("tags") is not None
    if has_tag == has_tags:
        raise InvalidInput("an aggregate needs exactly one of 'tag' or 'tags' (an array)")
    if has_tag:
        tags: list[TagRef] = [tag_field(msg["tag"])]
    else:
        raw = parse_tags(msg["tags"])
        tags = raw if isinstance(raw, list) else [int(t) for t in raw.tolist()]
        if not tags:
            raise InvalidInput("'tags' must name at least one tag")
    return AggregateArgs(
        tags,
        has_tags,
        int_field(required(msg, "start"), "start"),
        int_field(required(msg, "end"), "end"),
        int_field(required(msg, "interval"), "interval", 1),
        _aggregate_names(required(msg, "aggregates")),
        optional_int_field(msg, "origin") or 0,
        bool_field(msg, "good_only"),
    )


def aggregate_result(starts: npt.ArrayLike, values: Mapping[str, npt.ArrayLike]) -> dict[str, Any]:
    """One tag's buckets: ``{"start": bin int64, "values": {name: bin}}``."""
    start = wire_array(starts, TS_DTYPE)
    n = start.shape[0]
    return {
        "start": start,
        "values": {k: wire_n(v, _dtype_of(k), k, n, "start") for k, v in values.items()},
    }


def aggregate_response(req_id: int, results: list[dict[str, Any]], many: bool) -> dict[str, Any]:
    """``results`` are :func:`aggregate_result` maps, one per requested tag, in order.

    A request with ``tag`` is answered with that one result's fields; one with
    ``tags`` with ``{"results": [...]}``.
    """
    if many:
        return ok_response(req_id, results=results)
    if len(results) != 1:
        raise InvalidInput("a single-tag aggregate response holds exactly one result")
    return ok_response(req_id, **results[0])


def _parse_result(res: Any) -> tuple[Int64Array, AggregateValues]:
    if not isinstance(res, Mapping):
        raise InvalidInput("an aggregate result must be a map")
    start = unpack_array(required(res, "start"), TS_DTYPE, "start")
    raw = required(res, "values")
    if not isinstance(raw, Mapping):
        raise InvalidInput("'values' must be a map of aggregate name -> bin")
    n = start.shape[0]
    values = {str(k): unpack_array(v, _dtype_of(str(k)), str(k), n) for k, v in raw.items()}
    return start, values


def parse_aggregate_response(resp: Mapping[str, Any]) -> list[tuple[Int64Array, AggregateValues]]:
    """``[(bucket starts, {aggregate: values})]``: one entry, or one per tag of ``tags``."""

    def parse() -> list[tuple[Int64Array, AggregateValues]]:
        results = resp.get("results")
        if results is None:
            return [_parse_result(resp)]
        if not isinstance(results, list):
            raise InvalidInput("'results' must be an array")
        return [_parse_result(r) for r in results]

    return checked_response(resp, "aggregate", parse)


# -- interpolate -------------------------------------------------------------------


class InterpolateArgs(NamedTuple):
    """A parsed interpolate request: explicit ``times``, or ``regular`` (start, end, interval)."""

    tag: TagRef
    times: Int64Array | None
    regular: tuple[int, int, int] | None
    method: str = "previous"
    max_gap: int | None = None
    good_only: bool = False


def interpolate_request(
    req_id: int,
    tag: TagRef,
    times: npt.ArrayLike | None = None,
    *,
    start: int | None = None,
    end: int | None = None,
    interval: int | None = None,
    method: str = "previous",
    max_gap: int | None = None,
    good_only: bool = False,
) -> dict[str, Any]:
    """Values of ``tag`` at ``times`` (sorted) or at ``start, start + interval, ... < end``."""
    regular = (start, end, interval)
    if (times is None) == (None in regular):
        raise InvalidInput("give either times or all of start, end and interval")
    fields: dict[str, Any] = {"tag": tag_field(tag)}
    if times is not None:
        fields["times"] = wire_array(np.atleast_1d(np.asarray(times)), TS_DTYPE).tobytes()
    else:
        fields["times"] = {
            "start": int_field(start, "start"),
            "end": int_field(end, "end"),
            "interval": int_field(interval, "interval", 1),
        }
    if method not in METHODS:
        raise InvalidInput(f"'method' must be one of {METHODS}, got {method!r}")
    fields["method"] = method
    if max_gap is not None:
        fields["max_gap"] = int_field(max_gap, "max_gap", 0)
    if good_only:
        fields["good_only"] = True
    return request("interpolate", req_id, **fields)


def parse_interpolate(msg: Mapping[str, Any]) -> InterpolateArgs:
    tag = tag_field(required(msg, "tag"))
    raw = required(msg, "times")
    times: Int64Array | None = None
    regular: tuple[int, int, int] | None = None
    if isinstance(raw, Mapping):
        regular = (
            int_field(required(raw, "start"), "times.start"),
            int_field(required(raw, "end"), "times.end"),
            int_field(required(raw, "interval"), "times.interval", 1),
        )
    else:
        times = unpack_array(raw, TS_DTYPE, "times")
    method = str_field(msg, "method") or "previous"
    if method not in METHODS:
        raise InvalidInput(f"'method' must be one of {METHODS}, got {method[:32]!r}")
    max_gap = optional_int_field(msg, "max_gap", 0)
    return InterpolateArgs(tag, times, regular, method, max_gap, bool_field(msg, "good_only"))


def interpolate_response(
    req_id: int, ts: npt.ArrayLike, values: npt.ArrayLike, status: npt.ArrayLike
) -> dict[str, Any]:
    ts_arr = wire_array(ts, TS_DTYPE)
    n = ts_arr.shape[0]
    return ok_response(
        req_id,
        ts=ts_arr,
        values=wire_n(values, VALUES_DTYPE, "values", n, "ts"),
        status=wire_n(status, STATUS_DTYPE, "status", n, "ts"),
    )


def parse_interpolate_response(
    resp: Mapping[str, Any],
) -> tuple[Int64Array, Float64Array, UInt8Array]:
    """``(times, values, status)`` of an interpolate response."""

    def parse() -> tuple[Int64Array, Float64Array, UInt8Array]:
        ts = unpack_array(required(resp, "ts"), TS_DTYPE, "ts")
        n = ts.shape[0]
        return (
            ts,
            unpack_array(required(resp, "values"), VALUES_DTYPE, "values", n),
            unpack_array(required(resp, "status"), STATUS_DTYPE, "status", n),
        )

    return checked_response(resp, "interpolate", parse)


# -- plot ---------------------------------------------------------------------------


class PlotArgs(NamedTuple):
    tag: TagRef
    start: int
    end: int
    intervals: int
    good_only: bool = False


def plot_request(
    req_id: int, tag: TagRef, start: int, end: int, intervals: int, *, good_only: bool = False
) -> dict[str, Any]:
    """The points that draw ``[start, end)`` in ``intervals`` pixel columns."""
    fields: dict[str, Any] = {
        "tag": tag_field(tag),
        "start": int_field(start, "start"),
        "end": int_field(end, "end"),
        "intervals": int_field(intervals, "intervals", 1, MAX_PLOT_INTERVALS),
    }
    if good_only:
        fields["good_only"] = True
    return request("plot", req_id, **fields)


def parse_plot(msg: Mapping[str, Any]) -> PlotArgs:
    return PlotArgs(
        tag_field(required(msg, "tag")),
        int_field(required(msg, "start"), "start"),
        int_field(required(msg, "end"), "end"),
        int_field(required(msg, "intervals"), "intervals", 1, MAX_PLOT_INTERVALS),
        bool_field(msg, "good_only"),
    )
