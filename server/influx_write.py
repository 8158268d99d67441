"""A ``/write`` body turned into write batches, and the InfluxDB-style answer to bad lines.

:func:`prepare` runs in the query thread pool (parsing and the SQLite catalog
block), or on the event loop for a small slice whose tags all exist
(:func:`prepare_inline`): it parses one slice of a body (a large one in the
worker processes, :mod:`.influx_parse`), names (creates) its tags here, in the server process,
and cuts its points into batches for the write queue. Points of a tag whose duplicate
policy is ``reject`` go in a batch of their own per tag, after the points
that would be refused (a timestamp already stored, or repeated in the body)
are set aside as errors of their lines. The check here is only a filter: the
engine checks again under its write lock, so a write racing in between is
still refused -- and then only that tag's batch fails (the write queue makes
a refused write fail alone) and its lines are reported.

:func:`prepare` also gives a new tag the field type its first point has
(``value_type``: float -> ``float64``, integer and unsigned -> ``int64``,
boolean -> ``bool``), and refuses, as InfluxDB's "field type conflict", every
line with a point a tag's type does not take (the whole line, as InfluxDB
drops the whole point). An ``int64`` tag takes integers, a ``bool`` tag
booleans; a ``float64`` tag takes every type, unlike InfluxDB, because tags
made before field types were recorded are all ``float64`` whatever was
written to them: refusing there would drop the writes of every integer field
after an upgrade. An ``enum`` tag takes numbers.

:func:`partial_write` is InfluxDB 1.x's answer to a body it stored in part:
``400 {"error": "partial write: REASON dropped=N"}``, here with every bad line
named and ``N`` the number of lines not stored (whole or in part).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from xtsdb.protocol.errors import InvalidInput
from xtsdb.protocol.line_protocol import KINDS
from xtsdb.server.engine import Engine
from xtsdb.server.engine.catalog import TagInfo
from xtsdb.server.engine.wal_records import WriteBatch
from xtsdb.server.influx_parse import PARSE_IN_WORKERS_BYTES, parse_body
from xtsdb.server.influxql_names import split_name

MAX_LISTED_ERRORS = 100  # bad lines named in one response
VALUE_TYPES = ("float64", "int64", "bool", "enum")  # the catalog's, as codes for _TAKES
_NEW_TYPE = np.array([0, 1, 1, 2], np.uint8)  # by KINDS code: the value_type of a new tag
# _TAKES[value type, kind]: whether a tag of that type takes a point of that kind
_TAKES = np.array(
    [
        [True, True, True, True],  # float64: every kind (see the module docstring)
        [False, True, True, False],  # int64: integers
        [False, False, False, True],  # bool: booleans
        [True, True, True, False],  # enum: numbers
    ]
)
_INFLUX_TYPES = {"float64": "float", "int64": "integer", "bool": "boolean", "enum": "integer"}


@dataclass
class Queued:
    """A batch for the write queue and the body line of each of its points."""

    batch: WriteBatch
    lines: npt.NDArray[np.int64]
    strict: str = ""  # the tag name if the batch is one 'reject' tag's points


@dataclass
class Prepared:
    """One slice of a body, parsed and resolved to tag ids, ready for the write queue."""

    batches: list[Queued] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    lines: int = 0
    created: int = 0
    refused: int = 0  # points set aside for a 'reject' tag


def prepare(
    engine: Engine,
    data: bytes,
    precision: str,
    now_us: int,
    first_line: int,
    parse_min_bytes: int = PARSE_IN_WORKERS_BYTES,
) -> Prepared:
    """Parse a slice, name its tags, and cut it into batches (see the module docstring).

    A slice of ``parse_min_bytes`` or more is parsed in the engine's worker
    processes, if it has some (-1: never).
    """
    out = _prepare(engine, data, precision, now_us, first_line, parse_min_bytes, False)
    assert out is not None  # only an inline call declines
    return out


def prepare_inline(
    engine: Engine, data: bytes, precision: str, now_us: int, first_line: int
) -> Prepared | None:
    """:func:`prepare` for the event loop: ``None`` instead of anything that may wait for
    the disk (creating a tag, reading a ``reject`` tag's stored points), which the caller
    then leaves to the pool."""
    return _prepare(engine, data, precision, now_us, first_line, PARSE_IN_WORKERS_BYTES, True)


def _prepare(
    engine: Engine,
    data: bytes,
    precision: str,
    now_us: int,
    first_line: int,
    parse_min_bytes: int,
    inline: bool,
) -> Prepared | None:
    # The engine's pool: the one process pool of the server (workers.pool_for).
    parsed = parse_body(engine._procs, data, precision, now_us, parse_min_bytes)
    out = Prepared(errors=[(first_line + no, msg) for no, msg in parsed.errors])
    out.lines = parsed.lines
    ids = np.zeros(len(parsed.names), dtype=np.uint32)
    types = np.zeros(len(parsed.names), dtype=np.uint8)  # codes into VALUE_TYPES
    refused: list[int] = []
    strict: list[int] = []
    new_types = _NEW_TYPE[parsed.series_kinds()].tolist()
    infos: list[TagInfo | InvalidInput | None] = [engine.catalog.get(n) for n in parsed.names]
    missing = [i for i, info in enumerate(infos) if info is None]
    if inline and (missing or any(getattr(i, "duplicates", "") == "reject" for i in infos)):
        return None
    if missing:  # all of them in one catalog transaction: one fsync, not one per name
        items = [(parsed.names[i], {"value_type": VALUE_TYPES[new_types[i]]}) for i in missing]
        for i, made in zip(missing, engine.create_tags(items), strict=True):
            infos[i] = made
            out.created += not isinstance(made, InvalidInput)
    for i, info in enumerate(infos):  # a loop per series, not per point
        if not isinstance(info, TagInfo):  # a bad name (or no ids left): its lines say why
            refused.append(i)
            lines = np.unique(parsed.point_lines[parsed.series == i]).tolist()
            name = parsed.names[i]
            out.errors += [(first_line + no, f"tag {name!r}: {info}") for no in lines]
            continue
        ids[i] = info.id
        types[i] = VALUE_TYPES.index(info.value_type)
        if info.duplicates == "reject":
            strict.append(i)
    series, ts, values = parsed.series, parsed.ts, parsed.values
    point_lines = parsed.point_lines + first_line
    ok = _conflicts(parsed.names, types, series, parsed.kinds, point_lines, out)
    series, ts, values, point_lines = series[ok], ts[ok], values[ok], point_lines[ok]
    plain = ~np.isin(series, refused + strict)
    if plain.any():
        keep = np.flatnonzero(plain)
        if len(parsed.names) <= 1 << 16:
            # Grouped by series here, stably: numpy sorts 16-bit keys by radix, where
            # WriteBatch.build would sort the lines' interleaved tag ids by comparison.
            keep = keep[np.argsort(series[keep].astype(np.uint16), kind="stable")]
        batch = WriteBatch.build(ids[series[keep]], ts[keep], values[keep])
        out.batches.append(Queued(batch, point_lines[keep]))
    for i in strict:
        name = parsed.names[i]
        mine = np.flatnonzero(series == i)
        t = ts[mine]
        # Refused here: a timestamp repeated in the body (the first one is kept) or
        # already stored; the engine would refuse the whole batch for either.
        first = np.zeros(t.shape[0], dtype=bool)
        first[np.unique(t, return_index=True)[1]] = True
        stored = engine.query(int(ids[i]), int(t.min()), int(t.max()) + 1).timestamps
        clash = ~first | np.isin(t, stored)
        out.refused += int(clash.sum())
        out.errors += [(int(no), _refused(name)) for no in point_lines[mine[clash]]]
        keep = mine[~clash]
        if keep.shape[0]:
            batch = WriteBatch.build(int(ids[i]), ts[keep], values[keep])
            out.batches.append(Queued(batch, point_lines[keep], name))
    out.errors.sort()
    return out


def _conflicts(
    names: list[str],
    types: npt.NDArray[np.uint8],
    series: npt.NDArray[np.uint32],
    kinds: npt.NDArray[np.uint8],
    point_lines: npt.NDArray[np.int64],
    out: Prepared,
) -> npt.NDArray[np.bool_]:
    """Which points to keep: none of a line with a point its tag's type does not take.

    Each such line is an error, worded as InfluxDB's (its first bad point named).
    """
    if not types.any():  # every tag float64, which takes every type
        return np.ones(series.shape[0], bool)
    bad = ~_TAKES[types[series], kinds]
    if not bad.any():
        return ~bad
    lines, first = np.unique(point_lines[bad], return_index=True)
    where = np.flatnonzero(bad)[first]
    for no, i in zip(lines.tolist(), where.tolist(), strict=True):
        m, _tags, fld = split_name(names[series[i]])
        have = _INFLUX_TYPES[VALUE_TYPES[types[series[i]]]]
        out.errors.append(
            (
                no,
                f'field type conflict: input field "{fld}" on measurement "{m}" is type '
                f"{KINDS[kinds[i]]}, already exists as type {have}",
            )
        )
    drop = np.isin(point_lines, lines)
    out.refused += int(drop.sum())
    return ~drop


def _refused(name: str) -> str:
    return f"tag {name!r} refuses duplicate timestamps (duplicate policy 'reject')"


def refused_errors(queued: Queued, exc: InvalidInput) -> list[tuple[int, str]]:
    """The errors of a batch the engine refused: each of its lines, with the reason."""
    reason = _refused(queued.strict) if queued.strict else f"{exc.name}: {exc}"
    return [(int(no), reason) for no in np.unique(queued.lines)]


def slices(body: bytes, size: int) -> list[tuple[bytes, int]]:
    """``body`` cut after a newline about every ``size`` bytes; with each piece's line offset."""
    out: list[tuple[bytes, int]] = []
    start = lines_before = 0
    while start < len(body):  # every turn moves start forward by at least size bytes or to the end
        cut = body.find(b"\n", start + size)
        end = len(body) if cut < 0 else cut + 1
        piece = body[start:end]
        out.append((piece, lines_before))
        lines_before += piece.count(b"\n")
        start = end
    return out


def partial_write(
    errors: list[tuple[int, str]], bad_lines: int, lines: int, points: int, *, refused: bool
) -> dict[str, Any]:
    """The 400 body for a request with bad lines (``points`` of the others were stored).

    ``refused``: some lines were refused by a tag rather than unparsable.
    """
    shown = errors[:MAX_LISTED_ERRORS]
    more = f"; ... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
    listed = "; ".join(f"line {no}: {msg}" for no, msg in shown)
    kind = "partial write" if points or refused else "unable to parse"
    return {
        "error": f"{kind}: {bad_lines} of {lines} lines had errors and were not written "
        f"(whole or in part); {points} points from the other lines were written: {listed}{more}"
        f" dropped={bad_lines}",
        "lines": [{"line": no, "error": msg} for no, msg in shown],
    }
