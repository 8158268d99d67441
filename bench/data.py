"""Deterministic benchmark data shared by every benchmark in ``bench/``.

Tag ``i`` is a 1 Hz signal starting at 2026-01-01T00:00:00Z whose values are a
random walk ``round(20 + cumsum(normal(0, 0.05)), 3)`` drawn from a generator
seeded by ``(SEED, i)``, so any subset of tags can be produced independently and
identically on every run and machine. Quality is always 192 (OPC "good").

Two encodings of the same points are provided: columnar numpy frames (what the
xtsdb client sends) and InfluxDB line protocol bodies (what InfluxDB and
VictoriaMetrics ingest). Both are built up front so that formatting cost is never
charged to the system being timed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
INTERVAL_US = 1_000_000  # 1 s sample interval
QUALITY_GOOD = 192
SEED = 20260101
MEASUREMENT = "m"

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def tag_name(tag: int) -> str:
    """Series name used by the line-protocol peers for integer tag id ``tag``."""
    return f"t{tag:04d}"


def timestamps(n: int, offset: int = 0) -> I64:
    """Timestamps (us) of sample indexes ``offset .. offset+n-1``; identical for every tag."""
    return START_US + (np.arange(n, dtype=np.int64) + offset) * INTERVAL_US


def tag_values(tag: int, n: int, offset: int = 0) -> F64:
    """Values of ``tag`` for sample indexes ``offset .. offset+n-1``.

    ``offset == 0`` is the main data set. Later windows (used by the concurrency
    workload for points after the ingested range) are seeded by the offset too, so
    they do not require generating every earlier point; they restart the walk at 20.
    """
    key = [SEED, tag] if offset == 0 else [SEED, tag, offset]
    rng = np.random.default_rng(key)
    walk = 20.0 + np.cumsum(rng.normal(0.0, 0.05, n))
    return np.round(walk, 3)


@dataclass(frozen=True)
class Frame:
    """A multi-tag columnar write: parallel arrays, one entry per point, tag-major order."""

    tags: npt.NDArray[np.uint32]
    timestamps: I64
    values: F64
    qualities: npt.NDArray[np.uint8]

    @property
    def points(self) -> int:
        return int(self.values.size)


def frame(tags: Sequence[int], n: int, offset: int = 0) -> Frame:
    """All points ``offset .. offset+n-1`` of ``tags`` as one columnar frame (no per-point loop)."""
    tag_arr = np.asarray(tags, dtype=np.uint32)
    ts = np.tile(timestamps(n, offset), len(tag_arr))
    vals = np.concatenate([tag_values(int(t), n, offset) for t in tag_arr])
    return Frame(
        tags=np.repeat(tag_arr, n),
        timestamps=ts,
        values=vals,
        qualities=np.full(ts.size, QUALITY_GOOD, dtype=np.uint8),
    )


def _lines(tag: int, n: int, offset: int) -> list[str]:
    """Line-protocol pieces for one tag: [prefix, value, ' ts\\n', prefix, value, ...].

    Values use Python's shortest round-trip repr (``20.017``), which both peers
    parse as a float field. The list is filled with slice assignments and the
    values converted by ``map(repr, ...)``, so there is no Python-level loop per
    point; a plain join of the pieces is the body.
    """
    parts: list[str] = [""] * (3 * n)
    parts[0::3] = [f"{MEASUREMENT},tag={tag_name(tag)} value="] * n
    parts[1::3] = list(map(repr, tag_values(tag, n, offset).tolist()))
    parts[2::3] = _ts_suffixes(n, offset)
    return parts


@functools.lru_cache(maxsize=4)
def _ts_suffixes(n: int, offset: int) -> tuple[str, ...]:
    """' <ts>\\n' strings; every tag shares the same timestamps, so they are formatted once."""
    return tuple(map(" {}\n".format, timestamps(n, offset).tolist()))


def line_batches(
    tags: Sequence[int], n: int, lines_per_batch: int, offset: int = 0
) -> Iterator[bytes]:
    """Line-protocol request bodies (precision: microseconds) of ``lines_per_batch`` lines each.

    Lines are tag-major (one series' points are contiguous and time-ordered), the
    layout both peers ingest fastest; the final batch may be shorter.
    """
    pending: list[str] = []
    pending_lines = 0
    for tag in tags:
        parts = _lines(int(tag), n, offset)
        pos = 0
        while pos < n:
            take = min(n - pos, lines_per_batch - pending_lines)
            pending.extend(parts[3 * pos : 3 * (pos + take)])
            pending_lines += take
            pos += take
            if pending_lines == lines_per_batch:
                yield "".join(pending).encode()
                pending, pending_lines = [], 0
    if pending_lines:
        yield "".join(pending).encode()


def slab_values(tags: Sequence[int], n: int, offset: int) -> F64:
    """Values of ``tags`` (rows) for sample indexes ``offset .. offset+n-1`` (columns)."""
    return np.stack([tag_values(int(t), n, offset) for t in tags])


def slab_frames(tags: Sequence[int], n: int, slab: int, offset: int) -> list[Frame]:
    """``n`` points of ``tags`` cut along time into frames of ``slab`` points per tag.

    Used for writers that keep appending new time to a fixed tag set (the way a
    historian is fed): frame ``k`` holds every tag's points ``k*slab .. (k+1)*slab``.
    """
    tag_arr = np.asarray(tags, dtype=np.uint32)
    vals = slab_values(tags, n, offset)
    ts = timestamps(n, offset)
    out = []
    for k in range(0, n, slab):
        cols = slice(k, min(k + slab, n))
        width = cols.stop - cols.start
        out.append(
            Frame(
                tags=np.repeat(tag_arr, width),
                timestamps=np.tile(ts[cols], len(tag_arr)),
                values=vals[:, cols].ravel(),
                qualities=np.full(width * len(tag_arr), QUALITY_GOOD, dtype=np.uint8),
            )
        )
    return out


def slab_lines(tags: Sequence[int], n: int, slab: int, offset: int) -> list[bytes]:
    """The line-protocol twin of :func:`slab_frames`: one body per time slab, same points."""
    per_tag = [_lines(int(t), n, offset) for t in tags]
    return [
        "".join("".join(parts[3 * k : 3 * min(k + slab, n)]) for parts in per_tag).encode()
        for k in range(0, n, slab)
    ]
