"""XOR chunks (protocol/prom_xor.py) against an independent decoder written here.

The decoder follows Prometheus' published format (``tsdb/chunkenc/xor.go``,
``docs/bstream.md``) bit by bit in plain Python, sharing nothing with the
numpy encoder: random series must come back bit-exactly (NaN payloads such as
the stale marker, -0.0, infinities), and a few chunks are checked against
bytes worked out by hand from the format.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xtsdb.protocol.prom_xor import MAX_SAMPLES, encode_chunks

STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]


class Bits:
    """A reader of a byte string, most significant bit first."""

    def __init__(self, data: bytes) -> None:
        self.size = len(data) * 8
        self.whole = int.from_bytes(data, "big")
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > self.size:
            raise IndexError("the chunk ends inside a sample")
        self.pos += n
        return (self.whole >> (self.size - self.pos)) & ((1 << n) - 1)

    def uvarint(self) -> int:
        out = shift = 0
        while True:
            b = self.read(8)
            out |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return out


def signed(x: int, n: int) -> int:
    """An n-bit two's complement field as an int."""
    return x - (1 << n) if x >= 1 << (n - 1) else x


def decode_xor(chunk: bytes, spare_byte: bool = False) -> list[tuple[int, int]]:
    """``[(timestamp_ms, value bits)]`` of one XOR chunk; checks its padding and length.

    ``spare_byte``: allow one zero byte after a stream that ends on a byte
    boundary, which Prometheus up to 2.4x writes when its last write was a
    whole byte (its ``bstream.writeByte`` appended the next byte eagerly).
    """
    count = int.from_bytes(chunk[:2], "big")
    r = Bits(chunk[2:])
    out: list[tuple[int, int]] = []
    t = delta = 0
    v = lead = trail = 0
    for i in range(count):
        if i == 0:
            z = r.uvarint()
            t = (z >> 1) ^ -(z & 1)  # zig-zag
            v = r.read(64)
            out.append((t, v))
            continue
        if i == 1:
            delta = signed(r.uvarint(), 64)
        else:
            prefix = 0
            for _ in range(4):
                bit = r.read(1)
                prefix = (prefix << 1) | bit
                if not bit:
                    break
            size = {0b0: 0, 0b10: 14, 0b110: 17, 0b1110: 20, 0b1111: 64}[prefix]
            dod = r.read(size) if size else 0
            if size == 64:
                dod = signed(dod, 64)
            elif size and dod > 1 << (size - 1):  # the format's range: -(2^(n-1)-1)..2^(n-1)
                dod -= 1 << size
            delta += dod
        t += delta
        if r.read(1):
            if r.read(1):
                lead = r.read(5)
                sig = r.read(6) or 64
                trail = 64 - lead - sig
            else:
                sig = 64 - lead - trail
            v ^= r.read(sig) << trail
        out.append((t, v))
    used = (r.pos + 7) // 8
    spare = spare_byte and r.pos % 8 == 0 and chunk[2 + used :] == b"\x00"
    assert len(chunk) - 2 == used + spare, "bytes after the last sample"
    assert r.read((8 - r.pos % 8) % 8) == 0, "padding bits are not zero"
    return out


def bits_of(values: np.ndarray) -> list[int]:
    return [int(x) for x in np.asarray(values, np.float64).view(np.uint64)]


def roundtrip(ts: list[int], vals: list[float], counts: list[int]) -> None:
    t = np.array(ts, np.int64)
    v = np.array(vals, np.float64)
    c = np.array(counts, np.int64)
    got = encode_chunks(t, v, c)
    series_start = np.concatenate([[0], np.cumsum(c)])
    seen: dict[int, list[tuple[int, int]]] = {i: [] for i in range(len(counts))}
    for i in range(len(got)):
        samples = decode_xor(got.chunk(i))
        assert 1 <= len(samples) <= MAX_SAMPLES
        assert (samples[0][0], samples[-1][0]) == (got.min_ms[i], got.max_ms[i])
        seen[int(got.series[i])].extend(samples)
    for s, n in enumerate(counts):
        lo, hi = series_start[s], series_start[s + 1]
        assert seen[s] == list(zip(ts[lo:hi], bits_of(v[lo:hi]), strict=True))
        assert sum(1 for x in got.series if x == s) == -(-n // MAX_SAMPLES)


specials = st.sampled_from([STALE, float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1.0])
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), specials)


@st.composite
def series_sets(draw: st.DrawFn) -> tuple[list[int], list[float], list[int]]:
    counts = draw(st.lists(st.integers(0, 300), min_size=1, max_size=4))
    ts: list[int] = []
    vals: list[float] = []
    for n in counts:
        start = draw(st.integers(-(2**45), 2**45))
        steps = draw(st.sampled_from(["regular", "jitter", "wild"]))
        if steps == "regular":
            gaps = [draw(st.integers(1, 60_000))] * n
        elif steps == "jitter":
            base = draw(st.integers(1, 60_000))
            gaps = draw(st.lists(st.integers(base - 300, base + 300), min_size=n, max_size=n))
        else:  # classes of every width, and steps backwards (the format allows any int64)
            gaps = draw(st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n))
        repeat = draw(st.booleans())
        for g in gaps:
            start += g
            ts.append(start)
            if repeat and vals and draw(st.booleans()):
                vals.append(vals[-1])
            else:
                vals.append(draw(values))
    return ts, vals, counts


@settings(max_examples=80, deadline=None)
@given(series_sets())
def test_random_series_round_trip_bit_exactly(
    case: tuple[list[int], list[float], list[int]],
) -> None:
    roundtrip(*case)


def test_every_dod_class_edge_round_trips() -> None:
    """Deltas of deltas at each class's edges, including the asymmetric ones."""
    dods = [0]
    for n in (14, 17, 20):
        half = 1 << (n - 1)
        dods += [half, half + 1, -(half - 1), -half, 1, -1]
    dods += [2**62, -(2**62)]
    ts = [0, 1000]
    for d in dods:
        ts.append(ts[-1] + (ts[-1] - ts[-2]) + d)
    ts = ts[:MAX_SAMPLES]
    roundtrip(ts, [float(i) for i in range(len(ts))], [len(ts)])


def test_values_bit_exact_through_windows() -> None:
    """Stale markers, NaN payloads, signed zeros, infinities, window growth and reuse."""
    vals = [1.0, 1.0, STALE, STALE, float("nan"), -0.0, 0.0, float("inf"), -float("inf")]
    vals += [2.0**-1074, 1.5, 1.25, 1.125, 3.0e300, -3.0e300, 1.0]
    nan_payload = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000001))[0]
    vals += [nan_payload, 0.1, 0.2, 0.30000000000000004]
    roundtrip(list(range(0, 15 * len(vals), 15)), vals, [len(vals)])


@pytest.mark.parametrize("n", [1, 2, 3, 119, 120, 121, 240, 241])
def test_chunk_cuts_at_120(n: int) -> None:
    roundtrip([1000 * i for i in range(n)], [float(i % 7) for i in range(n)], [n])
    got = encode_chunks(np.arange(n, dtype=np.int64), np.zeros(n), np.array([n]))
    sizes = [int.from_bytes(got.chunk(i)[:2], "big") for i in range(len(got))]
    assert sizes == [MAX_SAMPLES] * (n // MAX_SAMPLES) + (
        [n % MAX_SAMPLES] if n % MAX_SAMPLES else []
    )


def test_empty_series_have_no_chunk() -> None:
    got = encode_chunks(np.array([5], np.int64), np.array([2.5]), np.array([0, 1, 0]))
    assert len(got) == 1 and got.series.tolist() == [1]
    assert len(encode_chunks(np.zeros(0, np.int64), np.zeros(0), np.array([0]))) == 0


def test_known_bytes() -> None:
    """Two chunks worked out by hand from the format, byte for byte."""
    # One sample: count 1, zig-zag varint of 1000 (2000 = 0xd0 0x0f), 1.0's 64 bits.
    one = encode_chunks(np.array([1000], np.int64), np.array([1.0]), np.array([1]))
    assert one.chunk(0) == b"\x00\x01\xd0\x0f" + struct.pack(">d", 1.0)
    # Three samples at t=0,10,20 of value 1.0: count 3, varint 0, 1.0, uvarint 10,
    # '0' (same value), then dod 0 '0' and '0': 2 + 1 + 8 + 1 bytes, padded.
    three = encode_chunks(np.array([0, 10, 20], np.int64), np.ones(3), np.array([3]))
    assert three.chunk(0) == b"\x00\x03\x00" + struct.pack(">d", 1.0) + b"\x0a\x00"


def test_mismatched_columns_are_refused() -> None:
    with pytest.raises(ValueError):
        encode_chunks(np.zeros(3, np.int64), np.zeros(2), np.array([3]))
    with pytest.raises(ValueError):
        encode_chunks(np.zeros(3, np.int64), np.zeros(3), np.array([2]))
