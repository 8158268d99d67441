"""A parsed body of line protocol as columns, assembled from the parts that read it.

Two readers share a body (:mod:`.line_protocol`): the columnar scan takes the
plain lines, the exact parser the others. Each hands over a :class:`Part`
(its points, and per line with points its number and raw timestamp); this
module puts the parts back in line order, converts timestamps to microseconds
once for all, refuses those out of InfluxDB's range, and names only series
that kept a point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["NS_LIMIT", "PRECISIONS", "ParsedBatch", "Part", "assemble"]

I64 = npt.NDArray[np.int64]

PRECISIONS: dict[str, tuple[int, int]] = {
    # name -> (multiply, divide) from the unit to microseconds
    "ns": (1, 1000),
    "n": (1, 1000),
    "us": (1, 1),
    "u": (1, 1),
    "µs": (1, 1),
    "ms": (1000, 1),
    "s": (1_000_000, 1),
    "m": (60_000_000, 1),
    "h": (3_600_000_000, 1),
}
"""Timestamp units of ``precision`` (InfluxDB 1.x's ``n``/``u``/``m``/``h`` too)."""

NS_LIMIT = (1 << 63) - 2
"""InfluxDB's bound on |time| in nanoseconds (inside the engine's +-2**60 us)."""


@dataclass
class ParsedBatch:
    """The points of a body of lines, columnar; ``names[series[i]]`` is point i's tag name."""

    names: list[str]
    series: npt.NDArray[np.uint32]
    ts: I64  # microseconds since the Unix epoch
    values: npt.NDArray[np.float64]
    point_lines: I64  # the line number of each point
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, message)
    lines: int = 0  # data lines seen (not blank, not a comment), good or bad
    kinds: npt.NDArray[np.uint8] = field(default_factory=lambda: np.zeros(0, np.uint8))
    """Each point's field type, an index into ``line_protocol.KINDS``."""

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def series_kinds(self) -> npt.NDArray[np.uint8]:
        """Each series' field type: that of its first point (a later point may differ)."""
        n = self.series.shape[0]
        first = np.full(len(self.names), n, np.int64)  # each series' first point, no sort
        np.minimum.at(first, self.series, np.arange(n))
        out = np.zeros(len(self.names), np.uint8)
        has = first < n
        out[has] = self.kinds[first[has]]
        return out


@dataclass
class Part:
    """Points read by one reader; ``series`` indexes the names given to :func:`assemble`."""

    series: I64
    values: npt.NDArray[np.float64]
    kinds: npt.NDArray[np.uint8]
    line_nos: I64  # per line with points, ascending
    stamps: I64  # its timestamp as written (0 if it had none)
    stamped: npt.NDArray[np.bool_]
    counts: I64  # its number of points


def assemble(
    names: list[str],
    parts: list[Part],
    errors: list[tuple[int, str]],
    lines: int,
    precision: str,
    now_us: int,
) -> ParsedBatch:
    """One batch from the parts, in line order (a line is read whole by one reader)."""
    mul, div = PRECISIONS[precision]
    cat = np.concatenate
    line_nos = cat([p.line_nos for p in parts])
    counts = cat([p.counts for p in parts])
    series, values = cat([p.series for p in parts]), cat([p.values for p in parts])
    kinds = cat([p.kinds for p in parts])
    line_us, stamped = cat([p.stamps for p in parts]), cat([p.stamped for p in parts])
    if len(parts) > 1 and line_nos.shape[0] and (np.diff(line_nos) < 0).any():
        by_line = np.argsort(line_nos, kind="stable")
        by_point = np.argsort(np.repeat(line_nos, counts), kind="stable")
        line_nos, counts = line_nos[by_line], counts[by_line]
        line_us, stamped = line_us[by_line], stamped[by_line]
        series, values, kinds = series[by_point], values[by_point], kinds[by_point]
    # InfluxDB's range: |t| <= 2**63 - 2 ns once converted (checked before
    # converting, which then cannot overflow).
    limit = NS_LIMIT // (mul * 1000 // div)
    bad = stamped & ((line_us < -limit) | (line_us > limit))
    if div > 1:
        line_us = line_us // div  # floor, as for negative (pre-1970) stamps too
    if mul > 1:
        line_us = line_us * mul
    line_us = np.where(stamped, line_us, now_us)
    errors = list(errors)
    if bad.any():
        for no in line_nos[bad].tolist():
            errors.append((no, "timestamp out of range (|t| must be < 2**63 ns)"))
        keep = np.repeat(~bad, counts)
        series, values, kinds = series[keep], values[keep], kinds[keep]
        line_us, counts, line_nos = line_us[~bad], counts[~bad], line_nos[~bad]
    errors.sort()
    # Only series with a stored point are named: a field that was always a
    # string (or malformed) must not make the server create a tag.
    present = np.bincount(series, minlength=len(names)) > 0
    if not present.all():
        names = [name for name, p in zip(names, present.tolist(), strict=True) if p]
        series = (np.cumsum(present) - 1)[series]
    return ParsedBatch(
        names,
        series.astype(np.uint32),
        np.repeat(line_us, counts),
        values,
        np.repeat(line_nos, counts),
        errors,
        lines,
        kinds,
    )
