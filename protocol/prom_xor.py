"""Prometheus' XOR chunk encoding (Gorilla-style), written as numpy columns, sans I/O.

The format is Prometheus' published one (``tsdb/chunkenc/xor.go``,
``bstream.go``, ``docs/bstream.md``); this is xtsdb's own encoder of it.
A chunk is a big-endian uint16 sample count, then a bit stream written most
significant bit first, zero-padded to a whole byte:

- sample 0: its timestamp as a zig-zag varint (Go's ``PutVarint``), its
  value as 64 raw bits;
- sample 1: ``t1 - t0`` as an unsigned varint, then its value XOR-encoded;
- sample k >= 2: the delta of deltas ``dod`` in one of five classes
  (``0`` / ``10``+14 bits / ``110``+17 / ``1110``+20 / ``1111``+64), class n
  holding ``-(2**(n-1) - 1) <= dod <= 2**(n-1)`` in n bits two's complement,
  then the value XOR-encoded.

A value is XOR-ed with the previous one: ``0`` when equal; else ``10`` and the
significant bits inside the previous window (leading/trailing zero counts)
when they fit in it, else ``11``, 5 bits of leading zeros (at most 31), 6 bits
of significant-bit count (64 written as 0) and those bits. Values are taken
as their 64 bits, so NaN payloads (Prometheus' stale marker), -0.0 and
infinities survive bit-exactly.

The encoder works on many chunks at once. Per sample it computes up to
:data:`_SLOTS` bit fields (value, width), then expands all of them to bits and
packs them in one ``np.packbits``. The one sequential part, the XOR window
(it changes only when a value does not fit the previous window), is a loop
over the position inside a chunk (at most 120 steps), each step vectorised
over every chunk of the batch: no Python loop per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

MAX_SAMPLES = 120
"""Samples per chunk, at most: what Prometheus cuts its head chunks at."""

BATCH = 65_536
"""Samples encoded in one vectorised pass (about 300 bytes of work arrays each)."""

_SLOTS = 16  # header, 10 varint bytes, dod class, dod bits, value control, value bits, pad
_NONE = 255  # no XOR window yet (Prometheus' 0xff)
_DOD_CLASSES = ((14, 0b10, 2), (17, 0b110, 3), (20, 0b1110, 4))  # (bits, prefix, prefix width)


@dataclass
class XorChunks:
    """Encoded chunks: chunk ``i`` is ``data[ends[i-1]:ends[i]]`` (``ends[-1]`` = 0).

    ``series[i]`` is the index of the series chunk ``i`` belongs to; chunks
    come in series order, each series' in time order (as given).
    """

    data: bytes
    ends: I64
    series: I64
    min_ms: I64
    max_ms: I64

    def __len__(self) -> int:
        return int(self.ends.shape[0])

    def chunk(self, i: int) -> bytes:
        lo = int(self.ends[i - 1]) if i else 0
        return self.data[lo : int(self.ends[i])]


def encode_chunks(ts_ms: I64, values: F64, counts: I64, per_chunk: int = MAX_SAMPLES) -> XorChunks:
    """XOR chunks of at most ``per_chunk`` samples of consecutive series (``counts[i]`` each).

    Timestamps are any int64 (Prometheus' arithmetic wraps as Go's does);
    values are kept bit for bit. ``per_chunk`` other than 120 is for
    comparing with chunks Prometheus cut elsewhere (its head may pass 120).
    """
    if not 1 <= per_chunk <= 0xFFFF:
        raise ValueError("a chunk holds 1 to 65535 samples (its count is a uint16)")
    ts_ms = np.ascontiguousarray(ts_ms, np.int64)
    bits = np.ascontiguousarray(values, np.float64).view(np.uint64)
    counts = np.asarray(counts, np.int64)
    if ts_ms.shape != bits.shape or int(counts.sum()) != ts_ms.shape[0] or (counts < 0).any():
        raise ValueError("timestamps, values and counts do not describe the same samples")
    per_series = -(-counts // per_chunk)
    chunk_series = np.repeat(np.arange(counts.shape[0], dtype=np.int64), per_series)
    series_start = np.cumsum(counts) - counts
    first_chunk = np.cumsum(per_series) - per_series
    k = np.arange(chunk_series.shape[0], dtype=np.int64) - first_chunk[chunk_series]
    starts = series_start[chunk_series] + k * per_chunk
    lens = np.minimum(counts[chunk_series] - k * per_chunk, per_chunk)
    parts: list[bytes] = []
    sizes: list[I64] = []
    lo = 0
    while lo < starts.shape[0]:  # batches of whole chunks, about BATCH samples each
        hi = int(np.searchsorted(starts, starts[lo] + BATCH, side="left"))
        hi = max(hi, lo + 1)
        blob, size = _encode_batch(ts_ms, bits, starts[lo:hi], lens[lo:hi])
        parts.append(blob)
        sizes.append(size)
        lo = hi
    ends = np.cumsum(np.concatenate(sizes)) if sizes else np.zeros(0, np.int64)
    last = starts + lens - 1
    return XorChunks(
        b"".join(parts), ends.astype(np.int64), chunk_series, ts_ms[starts], ts_ms[last]
    )


def _encode_batch(ts: I64, vbits: U64, starts: I64, lens: I64) -> tuple[bytes, I64]:
    """Chunks ``[starts[i], starts[i] + lens[i])`` of the samples -> (bytes, size per chunk)."""
    chunk = np.repeat(np.arange(starts.shape[0]), lens)
    idx = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(chunk.shape[0])
    pos = idx - starts[chunk]
    t = ts[idx]
    v = vbits[idx]
    n = t.shape[0]
    prev = np.maximum(idx - 1, 0)
    tdelta = t - ts[prev]  # wraps like Go's uint64(t - prev)
    dod = tdelta - (ts[prev] - ts[np.maximum(idx - 2, 0)])
    xor = v ^ vbits[prev]
    lead, trail, reuse, new = _windows(xor, pos, chunk, lens)

    val = np.zeros((n, _SLOTS), np.uint64)
    width = np.zeros((n, _SLOTS), np.int64)
    first = pos == 0
    val[first, 0] = lens.astype(np.uint64)  # the uint16 count, big-endian
    width[first, 0] = 16
    zigzag = (t << 1) ^ (t >> 63)
    second = pos == 1
    has_varint = first | second  # only the first two samples of a chunk
    varint = np.where(first, zigzag, tdelta)[has_varint].view(np.uint64)
    val[has_varint, 1:11], width[has_varint, 1:11] = _varint_bytes(varint)

    later = pos >= 2
    cls_prefix = np.full(n, 0b1111, np.uint64)  # unless a narrower class holds dod
    cls_pw = np.full(n, 4, np.int64)
    cls_w = np.full(n, 64, np.int64)
    for nbits, prefix, pw in reversed(_DOD_CLASSES):
        fits = (dod >= -((1 << (nbits - 1)) - 1)) & (dod <= (1 << (nbits - 1)))
        cls_prefix[fits], cls_pw[fits], cls_w[fits] = prefix, pw, nbits
    zero = dod == 0
    cls_prefix[zero], cls_pw[zero], cls_w[zero] = 0, 1, 0
    val[:, 11] = cls_prefix
    width[:, 11] = np.where(later, cls_pw, 0)
    mask = np.where(cls_w == 64, ~np.uint64(0), (np.uint64(1) << cls_w.astype(np.uint64)) - 1)
    val[:, 12] = dod.view(np.uint64) & mask
    width[:, 12] = np.where(later, cls_w, 0)

    # The value: 64 raw bits first, then '0', '10' + bits, or '11' + window + bits.
    sig = 64 - lead - trail
    head = (np.uint64(0b11) << np.uint64(11)) | (lead.astype(np.uint64) << np.uint64(6))
    head |= sig.astype(np.uint64) & np.uint64(63)
    ctrl = np.where(new, head, np.where(reuse, np.uint64(0b10), np.uint64(0)))
    val[:, 13] = np.where(first, v, ctrl)  # every operand uint64: no float on the way
    width[:, 13] = np.where(first, 64, np.where(new, 13, np.where(reuse, 2, 1)))
    changed = (reuse | new) & ~first
    val[:, 14] = np.where(changed, xor >> trail.astype(np.uint64), np.uint64(0))
    width[:, 14] = np.where(changed, sig, 0)

    per_chunk = np.bincount(chunk, weights=width.sum(axis=1), minlength=lens.shape[0])
    pad = (-per_chunk.astype(np.int64)) % 8
    last = np.cumsum(lens) - 1
    width[last, 15] = pad
    return _pack(val.ravel(), width.ravel()), (per_chunk.astype(np.int64) + pad) // 8


def _windows(
    xor: U64, pos: I64, chunk: I64, lens: I64
) -> tuple[I64, I64, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Per sample: the XOR window (leading, trailing) written, and whether it is reused or new."""
    nz = xor != 0
    lead_now = np.minimum(_leading_zeros(xor), 31)
    trail_now = _trailing_zeros(xor)
    n = xor.shape[0]
    lead = np.zeros(n, np.int64)
    trail = np.zeros(n, np.int64)
    reuse = np.zeros(n, bool)
    new = np.zeros(n, bool)
    n_chunks = lens.shape[0]
    win_l = np.full(n_chunks, _NONE, np.int64)
    win_t = np.zeros(n_chunks, np.int64)
    chunk_first = np.cumsum(lens) - lens
    for k in range(1, int(lens.max()) if n_chunks else 0):
        live = np.nonzero(lens > k)[0]
        i = chunk_first[live] + k
        wl, wt = win_l[live], win_t[live]
        r = nz[i] & (wl != _NONE) & (lead_now[i] >= wl) & (trail_now[i] >= wt)
        w = nz[i] & ~r
        wl = np.where(w, lead_now[i], wl)
        wt = np.where(w, trail_now[i], wt)
        win_l[live], win_t[live] = wl, wt
        lead[i], trail[i], reuse[i], new[i] = wl, wt, r, w
    return lead, trail, reuse, new


def _leading_zeros(x: U64) -> I64:
    """Leading zero bits of each uint64 (64 for 0), exactly: the top bit isolated, its log2."""
    s = x.copy()
    for shift in (1, 2, 4, 8, 16, 32):
        s |= s >> np.uint64(shift)
    top = s ^ (s >> np.uint64(1))  # a power of two, exact in float64
    with np.errstate(divide="ignore"):
        out = 63 - np.log2(top.astype(np.float64))
    return np.where(x == 0, 64, out).astype(np.int64)


def _trailing_zeros(x: U64) -> I64:
    """Trailing zero bits of each uint64 (64 for 0)."""
    low = x & (~x + np.uint64(1))
    with np.errstate(divide="ignore"):
        out = np.log2(low.astype(np.float64))
    return np.where(x == 0, 64, out).astype(np.int64)


def _varint_bytes(x: U64) -> tuple[U64, I64]:
    """Go's ``PutUvarint`` of each value as 10 byte fields (width 8 or 0)."""
    shifts = (np.arange(10, dtype=np.uint64) * np.uint64(7))[None, :]
    groups = (x[:, None] >> shifts) & np.uint64(0x7F)
    bitlen = 64 - _leading_zeros(x)
    nbytes = np.maximum(1, -(-bitlen // 7))
    j = np.arange(10)[None, :]
    cont = np.where(j < nbytes[:, None] - 1, np.uint64(0x80), np.uint64(0))
    return groups | cont, np.where(j < nbytes[:, None], 8, 0)


def _pack(val: U64, width: I64) -> bytes:
    """Fields of ``width`` bits (MSB first, back to back) -> bytes; total width is whole bytes.

    Each field lands in one or two big-endian 64-bit words (OR-ed per word with
    ``reduceat``: fields are disjoint), so the work is per field, not per bit.
    A field's bits above its width must be zero.
    """
    keep = width > 0
    val, width = val[keep], width[keep]
    if not val.shape[0]:
        return b""
    end = np.cumsum(width)
    total = int(end[-1])
    start = end - width
    word = start // 64
    over = start % 64 + width - 64  # > 0: that many low bits go to the next word
    spill = over > 0
    left = np.clip(-over, 0, 63).astype(np.uint64)
    right = np.clip(over, 0, 63).astype(np.uint64)
    head = np.where(spill, val >> right, val << left)
    tail = val[spill] << (np.uint64(64) - right[spill])
    words = np.zeros(total // 64 + 2, np.uint64)
    for at, parts in ((word, head), (word[spill] + 1, tail)):
        if parts.shape[0]:
            first = np.flatnonzero(np.concatenate(([True], at[1:] != at[:-1])))
            words[at[first]] |= np.bitwise_or.reduceat(parts, first)
    return words.astype(">u8").tobytes()[: total // 8]
