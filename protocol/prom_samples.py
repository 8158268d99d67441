"""Samples of remote write/read series as numpy columns, with no Python loop per sample.

A ``Sample`` is a tiny message (a double and a varint); reading them one
attribute at a time from the protobuf runtime is the slow part of a
WriteRequest. Instead, the runtime does all the decoding in bulk:

1. ``TimeSeriesView`` gives each sample as its encoded bytes;
2. the bytes of all samples of a request are joined and parsed once as
   ``SampleColumns``: parsing concatenated messages appends their repeated
   fields, so the runtime returns every value and every timestamp in order;
3. a vectorised check proves each sample's bytes are exactly "value field
   (if not 0.0), then timestamp field (if not 0)", as Prometheus writes them:
   then the i-th value and timestamp belong to the i-th sample, which the
   lengths confirm (a sample of length 10 + len(varint of its timestamp)
   holds nothing else). No varint is decoded here: only its length is
   computed, from the number the runtime decoded.

Any other layout (fields reversed, repeated, unknown fields, non-canonical
varints) is valid protobuf too, and takes the slow path: each sample parsed
on its own. It is correct, only slower (``bench/prom_remote.py`` measures both).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from . import prom_messages as pm
from .errors import InvalidInput

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_TAG_VALUE = 0x09  # field 1, fixed64
_TAG_TS = 0x10  # field 2, varint
_TAG_SAMPLES = 0x12  # TimeSeries field 2, length-delimited
_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)


def varint_len(x: I64) -> I64:
    """How many bytes protobuf's varint encoding of each int64 takes (10 when negative)."""
    n: I64 = 1 + np.searchsorted(_LIMITS, x.view(np.uint64), side="right").astype(np.int64)
    return n


def decode_samples(flat: list[bytes], counts: I64) -> tuple[I64, F64]:
    """``(timestamps_ms, values)`` of encoded samples, ``counts[i]`` of them for series i."""
    n = len(flat)
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    fast = _columns(flat, n)
    return fast if fast is not None else _one_by_one(flat, counts)


def _columns(flat: list[bytes], n: int) -> tuple[I64, F64] | None:
    lens = np.fromiter(map(len, flat), np.int64, n)
    buf = b"".join(flat)
    raw = np.frombuffer(buf, np.uint8)
    offs = np.cumsum(lens) - lens
    b0 = np.zeros(n, np.uint8)
    some = lens > 0
    b0[some] = raw[offs[some]]
    b9 = np.zeros(n, np.uint8)
    long = lens > 9
    b9[long] = raw[offs[long] + 9]
    has_v = (b0 == _TAG_VALUE) & (lens >= 9)
    has_t = np.where(has_v, long & (b9 == _TAG_TS), (b0 == _TAG_TS) & (lens >= 2))
    try:
        cols = pm.SampleColumns.FromString(buf)
    except DecodeError:
        return None  # the slow path names the broken sample
    n_v, n_t = len(cols.value), len(cols.timestamp)
    if n_v != int(has_v.sum()) or n_t != int(has_t.sum()):
        return None
    ts = np.zeros(n, np.int64)
    ts[has_t] = np.asarray(cols.timestamp, np.int64)  # the runtime's __array__: no loop
    expected = np.where(has_v, 9, 0) + np.where(has_t, 1 + varint_len(ts), 0)
    if not np.array_equal(expected, lens):
        return None
    values = np.zeros(n, np.float64)  # proto3 leaves out a value of 0.0
    values[has_v] = np.asarray(cols.value, np.float64)
    return ts, values


def _one_by_one(flat: list[bytes], counts: I64) -> tuple[I64, F64]:
    n = len(flat)
    ts = np.empty(n, np.int64)
    values = np.empty(n, np.float64)
    starts = np.cumsum(counts) - counts
    for k, data in enumerate(flat):
        try:
            s = pm.Sample.FromString(data)
        except DecodeError as exc:
            i = int(np.searchsorted(starts, k, side="right")) - 1
            where = f"series {i}, sample {k - int(starts[i])}"
            raise InvalidInput(f"{where}: not a valid Sample: {exc}") from exc
        ts[k], values[k] = s.timestamp, s.value
    return ts, values


def encode_samples(ts_ms: I64, values: F64) -> bytes:
    """The ``samples`` field (2) of a TimeSeries holding these samples, as wire bytes.

    Each sample is written as Prometheus writes it (value, then timestamp),
    but with the value always present (a 0.0 too; parsers take it). The
    varints come from the protobuf runtime (a packed ``SampleColumns``); only
    the fixed-size tags, lengths and doubles are laid out here, and every
    caller hands the result to the runtime's ``MergeFromString``, which checks it.
    """
    return encode_sample_entries(ts_ms, values)[0]


def encode_sample_entries(ts_ms: I64, values: F64) -> tuple[bytes, I64]:
    """:func:`encode_samples`, and the byte offset where each sample's entry ends."""
    ts_ms = np.ascontiguousarray(ts_ms, np.int64)
    n = int(ts_ms.shape[0])
    if n == 0:
        return b"", np.zeros(0, np.int64)
    vlen = varint_len(ts_ms)
    packed = pm.SampleColumns(timestamp=ts_ms.tolist()).SerializeToString()
    varints = np.frombuffer(packed, np.uint8)[len(packed) - int(vlen.sum()) :]
    size = 12 + vlen  # tag, length, value tag, 8 bytes, timestamp tag, varint
    start = np.cumsum(size) - size
    out = np.zeros(int(size.sum()), np.uint8)
    out[start] = _TAG_SAMPLES
    out[start + 1] = size - 2
    out[start + 2] = _TAG_VALUE
    doubles = np.ascontiguousarray(values, "<f8").view(np.uint8).reshape(n, 8)
    out[start[:, None] + np.arange(3, 11)] = doubles
    out[start + 11] = _TAG_TS
    owner = np.repeat(np.arange(n), vlen)
    within = np.arange(varints.shape[0]) - np.repeat(np.cumsum(vlen) - vlen, vlen)
    out[start[owner] + 12 + within] = varints
    return out.tobytes(), start + size
