"""Decoding many small blocks at once, for the common sensor case.

Decoding one block costs ~25 numpy calls whatever its size, so a query over
100 blocks of 700 points spent most of its time in per-call overhead. When
every block in a read has regular timestamps (all delta-of-deltas zero),
decimal-scaled values and a constant quality (what a
sensor sampled at a fixed rate produces), each decoding step runs once over
all of them:

* timestamps: ``ts[g] = (ts0_b - d0_b * s_b) + d0_b * g`` for global index g
  in block b starting at s_b, one multiply-add over the whole result;
* values: the zstd sections are still inflated one by one, but the byte
  planes are gathered, un-zigzagged and summed in single passes; a running sum
  over all blocks minus each block's offset is a per-block running sum
  (int64 arithmetic wraps, and the subtraction undoes the wrap exactly);
* qualities: one repeat.

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
    nb = n.shape[0]
    starts = np.zeros(nb, dtype=np.int64)
    np.cumsum(n[:-1], out=starts[1:])
    total = int(n.sum())
    ts_out, v_out, q_out = out
    cols = np.array([h[1:6] for h in heads], dtype=np.int64)  # k, q0, ts0, d0, v0
    ks, q0s, ts0s, d0s, v0s = cols.T

    g = np.arange(total, dtype=np.int64)
    np.multiply(np.repeat(d0s, n), g, out=ts_out)
    ts_out += np.repeat(ts0s - d0s * starts, n)

    # Each block's first value, then its deltas right after it; blocks of one byte
    # width are inflated, gathered and un-zigzagged together.
    ints = v_out.view(np.int64)
    ints[starts] = v0s
    m = (n - 1).tolist()
    first = starts.tolist()
    codes = [h[0] for h in heads]
    for code in set(codes):
        sel = [i for i, c in enumerate(codes) if c == code]
        if code == 0:  # width 0: every delta is zero
            for i in sel:
                ints[first[i] + 1 : first[i] + 1 + m[i]] = 0
            continue
        w = _WIDTHS[code]
        planes = []
        for i in sel:
            section = memoryview(bodies[i])[_HEADER.size : _HEADER.size + heads[i][6]]
            planes.append(np.frombuffer(_decompress(section, m[i] * w), np.uint8))
        count = sum(m[i] for i in sel)
        gathered = np.empty((count, w), np.uint8)
        for j in range(w):
            gathered[:, j] = np.concatenate(
                [p[j * m[i] : (j + 1) * m[i]] for p, i in zip(planes, sel, strict=True)]
            )
        narrow = gathered.view(_UINT[w]).reshape(count)
        half = narrow >> 1
        np.bitwise_and(narrow, 1, out=narrow)
        np.negative(narrow, out=narrow)
        np.bitwise_xor(half, narrow, out=half)
        signed = half.view(_SINT[w])
        at = 0
        for i in sel:
            ints[first[i] + 1 : first[i] + 1 + m[i]] = signed[at : at + m[i]]
            at += m[i]
    np.cumsum(ints, out=ints)
    before = np.zeros(n.shape[0], dtype=np.int64)
    before[1:] = ints[starts[1:] - 1]
    ints -= np.repeat(before, n)
    if bool((ks == ks[0]).all()):
        np.divide(ints, _SCALES[int(ks[0])], out=v_out)
    else:
        np.divide(ints, np.repeat(np.array(_SCALES)[ks], n), out=v_out)
    q_out[:] = np.repeat(q0s.astype(np.uint8), n)
