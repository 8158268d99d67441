"""Decoding many small blocks at once, for the common sensor case.

Decoding one block costs ~25 numpy calls whatever its size, so a query over
100 blocks of 700 points spent most of its time in per-call overhead. When
every block in a read has regular timestamps (all delta-of-deltas zero),
decimal-scaled values and a constant quality (what a
sensor sampled at a fixed rate produces), each decoding step runs once over
all of them:

* timestamps: consecutive blocks on one sampling grid are one ramp
  ``t0 + d0 * i``, written in place (a multiply-add, then doubling copies);
* values: the zstd sections are still inflated one by one, but the byte
  planes are gathered and un-zigzagged in single passes; each block's first
  slot gets the step from the previous block's last value (known from the
  per-block sums of deltas), so one running sum over the whole run restores
  every block's integers exactly;
* qualities: one fill per run of blocks with the same constant quality.

Everything is written straight into the caller's columns: a 1 M-point read
makes no full-size temporary (fresh pages cost more than decoding: the kernel
zeroes each one on first touch).

Other blocks are decoded one by one by ``decode_block``, which also gives
damaged bodies their precise error.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from .block_codec import (
    _F_QUAL_CONST,
    _F_VALUE_XOR,
    _HEADER,
    _MAGIC,
    _MAX_K,
    _SCALES,
    _SINT,
    _UINT,
    _WIDTHS,
    CODEC_ZSTD_V1,
    _decompress,
    decode_block,
)
from .membuffer import Columns
from .points import TS_LIMIT

MIN_BLOCKS = 4  # below this the per-block path is as fast
_RAMP = np.arange(1 << 16, dtype=np.int64)  # 0, 1, 2, ...: timestamps are a step times it
_RAMP.flags.writeable = False


Head = tuple[int, int, int, int, int, int, int]  # code, k, q0, ts0, d0, v0, val_len


def decode_blocks(
    bodies: Sequence[bytes], counts: Sequence[int], codecs: Sequence[int], out: Columns
) -> None:
    """Decode ``bodies`` back to back into ``out``: runs of eligible blocks in one pass."""
    heads = [_eligible(b, n, c) for b, n, c in zip(bodies, counts, codecs, strict=True)]
    i = at = 0
    while i < len(bodies):
        j = i
        while j < len(bodies) and heads[j] is not None:
            j += 1
        if j - i >= MIN_BLOCKS:
            n = sum(counts[i:j])
            _decode_run(bodies[i:j], counts[i:j], heads[i:j], _part(out, at, n))  # type: ignore[arg-type]
            at += n
            i = j
            continue
        stop = max(j, i + 1)
        for k in range(i, stop):
            decode_block(bodies[k], counts[k], codecs[k], out=_part(out, at, counts[k]))
            at += counts[k]
        i = stop


def _part(out: Columns, at: int, n: int) -> Columns:
    return out[0][at : at + n], out[1][at : at + n], out[2][at : at + n]


def _eligible(body: bytes, n: int, codec: int) -> Head | None:
    """The header fields when the batch path can decode this body, else None."""
    if codec != CODEC_ZSTD_V1:
        return None
    try:
        magic, flags, k, q0, hn, ts0, d0, v0, ts_len, val_len, q_len = _HEADER.unpack_from(body)
    except struct.error:
        return None
    regular = n >= 3 and not flags & 7 and not ts_len
    plain = not flags & _F_VALUE_XOR and flags & _F_QUAL_CONST and not q_len and k <= _MAX_K
    last = ts0 + d0 * (n - 1)
    in_range = -TS_LIMIT < ts0 < TS_LIMIT and -TS_LIMIT < last < TS_LIMIT
    sized = len(body) == _HEADER.size + val_len and hn == n and magic == _MAGIC
    code = flags >> 3 & 7
    if regular and plain and in_range and sized and code <= 4:
        return (code, k, q0, ts0, d0, v0, val_len)
    return None


def _decode_run(
    bodies: Sequence[bytes], counts: Sequence[int], heads: Sequence[Head], out: Columns
) -> None:
    n = np.array(counts, dtype=np.int64)
    starts = np.zeros(n.shape[0], dtype=np.int64)
    np.cumsum(n[:-1], out=starts[1:])
    ts_out, v_out, q_out = out
    cols = np.array([h[1:6] for h in heads], dtype=np.int64)  # k, q0, ts0, d0, v0
    ks, q0s, ts0s, d0s, v0s = cols.T
    _fill_timestamps(ts_out, starts, n, ts0s, d0s)

    # Each block's first value, then its deltas right after it; blocks of one byte
    # width are inflated, gathered and un-zigzagged together.
    ints = v_out.view(np.int64)
    m = (n - 1).tolist()
    first = starts.tolist()
    codes = [h[0] for h in heads]
    for code in set(codes):
        sel = [i for i, c in enumerate(codes) if c == code]
        if code == 0:  # width 0: every delta is zero
            for i in sel:
                ints[first[i] + 1 : first[i] + 1 + m[i]] = 0
            continue
        signed = _deltas(bodies, heads, sel, m, _WIDTHS[code])
        at = 0
        for i in sel:
            ints[first[i] + 1 : first[i] + 1 + m[i]] = signed[at : at + m[i]]
            at += m[i]
    # Each block's sum of deltas, summed over the widened int64 deltas: reduceat
    # over the narrow ones with dtype=int64 casts piece by piece, 4x slower.
    ints[starts] = 0
    sums = np.add.reduceat(ints, starts)
    # One running sum over the whole run: each block's first slot holds the step
    # from the previous block's last value, so no per-block offset is left to undo.
    lasts = v0s + sums
    ints[starts] = v0s
    ints[starts[1:]] -= lasts[:-1]
    np.cumsum(ints, out=ints)
    for lo, hi, k in _runs(ks, starts, n):
        np.divide(ints[lo:hi], _SCALES[k], out=v_out[lo:hi])
    for lo, hi, q in _runs(q0s, starts, n):
        q_out[lo:hi] = q


def _fill_timestamps(
    ts_out: np.ndarray, starts: np.ndarray, n: np.ndarray, ts0s: np.ndarray, d0s: np.ndarray
) -> None:
    """Regular timestamps of every block, written in place: no full-size temporary.

    Consecutive blocks of one sampling grid (the same step, each starting where
    the grid puts it) form one segment, filled by one ramp: a sensor's blocks
    usually make a single segment, so the cost is a few calls whatever the count.
    """
    grid = ts0s - d0s * starts  # the grid's value at index 0, the same along a segment
    cut = np.flatnonzero((d0s[1:] != d0s[:-1]) | (grid[1:] != grid[:-1])) + 1
    firsts = [0, *cut.tolist()]
    ends = [*cut.tolist(), n.shape[0]]
    for a, b in zip(firsts, ends, strict=True):
        lo, hi = int(starts[a]), int(starts[b - 1] + n[b - 1])
        _ramp(ts_out[lo:hi], int(ts0s[a]), int(d0s[a]))


def _ramp(seg: np.ndarray, t0: int, step: int) -> None:
    """``seg[i] = t0 + step * i`` in place: one multiply-add, then doubling copies."""
    size = seg.shape[0]
    r = min(size, _RAMP.shape[0])
    np.multiply(_RAMP[:r], step, out=seg[:r])
    seg[:r] += t0
    done = r
    while done < size:  # each pass adds step * done to what is filled: log2 passes
        k = min(done, size - done)
        np.add(seg[:k], step * done, out=seg[done : done + k])
        done += k


def _deltas(
    bodies: Sequence[bytes], heads: Sequence[Head], sel: list[int], m: list[int], w: int
) -> np.ndarray:
    """The value deltas of blocks ``sel`` (one byte width ``w``), back to back, signed."""
    count = sum(m[i] for i in sel)
    gathered = np.empty((count, w), np.uint8)
    at = 0
    for i in sel:
        section = memoryview(bodies[i])[_HEADER.size : _HEADER.size + heads[i][6]]
        plane = np.frombuffer(_decompress(section, m[i] * w), np.uint8).reshape(w, m[i])
        for j in range(w):  # column by column: a 2-D transposed copy of bytes is slow
            gathered[at : at + m[i], j] = plane[j]
        at += m[i]
    narrow = gathered.view(_UINT[w]).reshape(count)
    half = narrow >> 1
    np.bitwise_and(narrow, 1, out=narrow)
    np.negative(narrow, out=narrow)
    np.bitwise_xor(half, narrow, out=half)
    return half.view(_SINT[w])


def _runs(col: np.ndarray, starts: np.ndarray, n: np.ndarray) -> list[tuple[int, int, int]]:
    """``(lo, hi, value)`` of each run of consecutive blocks with one value of ``col``."""
    cut = np.flatnonzero(col[1:] != col[:-1]) + 1
    firsts = [0, *cut.tolist()]
    ends = [*cut.tolist(), col.shape[0]]
    return [
        (int(starts[a]), int(starts[b - 1] + n[b - 1]), int(col[a]))
        for a, b in zip(firsts, ends, strict=True)
    ]
