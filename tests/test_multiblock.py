"""The many-block decoder must give exactly what decoding block by block gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from xtsdb.server.engine.block_codec import CODEC_ZSTD_V1, decode_block, encode_block
from xtsdb.server.engine.multiblock import decode_blocks


def _block(kind: str, n: int, t0: int, rng: np.random.Generator) -> tuple[bytes, int]:
    ts = t0 + np.arange(n, dtype=np.int64) * 1_000_000
    q = np.full(n, 192, np.uint8)
    if kind == "walk":  # 1-2 byte deltas: the batch path
        v = np.round(20 + np.cumsum(rng.normal(0, 0.5, n)), 3)
    elif kind == "wide":  # 4-byte deltas: batch path, another width group
        v = np.round(rng.normal(0, 1e5, n), 2)
    elif kind == "const":  # width 0
        v = np.full(n, 7.25)
    elif kind == "negzero":  # -0.0 forces XOR mode: per-block path
        v = np.round(rng.normal(0, 0.0004, n), 3)
        v[0] = -0.0
    elif kind == "jitter":  # irregular timestamps: per-block path
        ts = ts + rng.integers(0, 1000, n)
        v = rng.random(n)
    else:  # varying qualities: per-block path
        v = np.round(rng.random(n), 3)
        q = rng.integers(0, 256, n).astype(np.uint8)
    return encode_block(ts, v, q), n


def _assert_batch_equals_per_block(bodies: list[bytes], counts: list[int]) -> None:
    """Decoding all at once gives, bit for bit, what decoding block by block gives."""
    total = sum(counts)
    got = (np.empty(total, np.int64), np.empty(total), np.empty(total, np.uint8))
    decode_blocks(bodies, counts, [CODEC_ZSTD_V1] * len(bodies), got)
    want = [decode_block(b, n) for b, n in zip(bodies, counts, strict=True)]
    assert np.array_equal(got[0], np.concatenate([w[0] for w in want]))
    assert np.array_equal(
        got[1].view(np.uint64), np.concatenate([w[1] for w in want]).view(np.uint64)
    )
    assert np.array_equal(got[2], np.concatenate([w[2] for w in want]))


KINDS = ["walk", "wide", "const", "negzero", "jitter", "quality"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(KINDS), st.integers(1, 900)), min_size=1, max_size=30),
    st.integers(0, 2**32),
)
def test_batch_decode_equals_per_block(spec: list[tuple[str, int]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    bodies, counts, t0 = [], [], -(10**12)
    for kind, n in spec:
        body, n = _block(kind, n, t0, rng)
        bodies.append(body)
        counts.append(n)
        t0 += n * 1_000_000 + 5
    _assert_batch_equals_per_block(bodies, counts)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 1000, 1_000_000]),  # step
            st.integers(0, 3),  # decimals: blocks of one run with different exponents
            st.sampled_from([0, 192, 64]),  # constant quality
            st.integers(3, 40_000),
            st.booleans(),  # continue the previous block's grid, or jump
        ),
        min_size=4,
        max_size=12,
    ),
    st.integers(0, 2**32),
)
def test_blocks_on_one_grid_fill_as_one_ramp(
    spec: list[tuple[int, int, int, int, bool]], seed: int
) -> None:
    # Consecutive blocks of one sampling grid are filled as one segment (ramps
    # longer than the 65,536-point table are doubled): the result must equal
    # decoding block by block, bit for bit, whatever the steps, exponents and qualities.
    rng = np.random.default_rng(seed)
    bodies, counts, t0 = [], [], 10**15
    for step, k, quality, n, same_grid in spec:
        if not same_grid:
            t0 += int(rng.integers(1, 10**6))
        ts = t0 + np.arange(n, dtype=np.int64) * step
        v = np.round(1000 + np.cumsum(rng.normal(0, 1, n)), k)  # no -0.0: all eligible
        bodies.append(encode_block(ts, v, np.full(n, quality, np.uint8)))
        counts.append(n)
        t0 = int(ts[-1]) + step
    _assert_batch_equals_per_block(bodies, counts)
