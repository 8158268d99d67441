"""The series of a WriteRequest split into labels and samples in one parse, not one per series.

The protobuf runtime's cost is per message object it hands to Python (a few
microseconds each), and Prometheus sends one or a few samples per series, so
opening each ``TimeSeries`` dominates the decode. Instead:

1. the request is read with ``timeseries`` as raw bytes (one list, no objects);
2. those bytes are joined with a separator holding one marker label and one
   marker sample (``b"\\xff"``, neither a valid Label nor a valid Sample) and
   parsed once as a ``TimeSeriesView``: the runtime appends every label and
   every sample, in order, to two flat lists with the markers in between;
3. the markers cut the lists into series, and the result is *proved*: the
   runtime re-encodes both lists and, laid out series by series (its labels,
   then its samples, then the separator), they must give back the joined
   bytes exactly. So every series was exactly its labels followed by its
   samples, as Prometheus writes it, and nothing was misattributed.

Anything else (fields in another order, exemplars, histograms, a sample that
looks like a marker, broken bytes) returns None, and the caller reads the
series one by one, which also names what is wrong.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from . import prom_messages as pm
from .prom_samples import varint_len

_MARK = 0xFF
_SEP = b"\x0a\x01\xff\x12\x01\xff"  # a label b"\xff", then a sample b"\xff"

SeriesKey = tuple[bytes, ...]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]


def _encoded(items: list[bytes], field: str) -> tuple[U8, I64, I64]:
    """The runtime's encoding of ``items`` as ``field``, its marker entries and their ends."""
    raw = np.frombuffer(pm.TimeSeriesView(**{field: items}).SerializeToString(), np.uint8)
    lens = np.fromiter(map(len, items), np.int64, len(items))
    ends = np.cumsum(1 + varint_len(lens) + lens)
    one = np.flatnonzero(lens == 1)
    marks = one[raw[ends[one] - 1] == _MARK]
    return raw, marks, ends[marks]


def split_series(
    series: list[bytes],
) -> tuple[list[SeriesKey], npt.NDArray[np.int64], list[bytes]] | None:
    """Per series its label key and sample count, and every sample's encoding; or None.

    None: read the series one by one.
    """
    n = len(series)
    if n == 0:
        return [], np.zeros(0, np.int64), []
    joined = _SEP.join(series) + _SEP
    try:
        view = pm.TimeSeriesView.FromString(joined)
    except DecodeError:
        return None
    if len(UnknownFieldSet(view)):
        return None
    labels, samples = view.labels[:], view.samples[:]
    lraw, lm, lend = _encoded(labels, "labels")
    sraw, sm, send = _encoded(samples, "samples")
    if lm.shape[0] != n or sm.shape[0] != n or not _same(joined, lraw, sraw, lend, send):
        return None
    lb = (-1, *lm.tolist())
    keys = [tuple(labels[lb[j] + 1 : lb[j + 1]]) for j in range(n)]
    counts = np.diff(sm, prepend=-1) - 1
    flat = np.delete(np.array(samples, dtype=object), sm).tolist()
    return keys, counts, flat


def _same(
    joined: bytes,
    lraw: U8,
    sraw: U8,
    lend: I64,
    send: I64,
) -> bool:
    """Whether series by series (labels, samples, separator) the encodings give ``joined``."""
    n = lend.shape[0]
    lbeg = np.concatenate([[0], lend[:-1]])
    sbeg = np.concatenate([[0], send[:-1]])
    # Three segments per series: its label entries, its sample entries, the separator.
    sizes = np.stack([lend - 3 - lbeg, send - 3 - sbeg, np.full(n, 6)], axis=1).ravel()
    if int(sizes.sum()) != len(joined) or (sizes < 0).any():
        return False
    part = np.repeat(np.tile(np.arange(3, dtype=np.uint8), n), sizes)
    got = np.frombuffer(joined, np.uint8)
    return (
        np.array_equal(got[part == 0], _without_markers(lraw, lend))
        and np.array_equal(got[part == 1], _without_markers(sraw, send))
        and bool((got[part == 2].reshape(n, 6) == np.frombuffer(_SEP, np.uint8)).all())
    )


def _without_markers(raw: U8, ends: I64) -> U8:
    keep = np.ones(raw.shape[0], bool)
    for k in (1, 2, 3):
        keep[ends - k] = False
    out: U8 = raw[keep]
    return out


def label_columns(flat: list[bytes]) -> tuple[list[bytes], list[bytes]] | None:
    """Names and values of many encoded labels in one parse, or None (decode one by one).

    The same idea as for samples: the joined labels parse as two columns, and
    each label is proved to be exactly "name field, then value field" (its
    first byte the name's tag, the value's tag where the name ends, its length
    the two fields' lengths), so the i-th name and value are the i-th label's.
    Proto3 leaves out an empty string: such a label takes the general path.
    """
    n = len(flat)
    joined = b"".join(flat)
    try:
        cols = pm.LabelColumns.FromString(joined)
    except DecodeError:
        return None
    names, values = cols.name[:], cols.value[:]
    if len(names) != n or len(values) != n or len(UnknownFieldSet(cols)):
        return None
    nlen = np.fromiter(map(len, names), np.int64, n)
    vlen = np.fromiter(map(len, values), np.int64, n)
    name_size = 1 + varint_len(nlen) + nlen
    size = name_size + 1 + varint_len(vlen) + vlen
    lens = np.fromiter(map(len, flat), np.int64, n)
    if not np.array_equal(size, lens):
        return None
    raw = np.frombuffer(joined, np.uint8)
    start = np.cumsum(lens) - lens
    if not ((raw[start] == 0x0A).all() and (raw[start + name_size] == 0x12).all()):
        return None
    return names, values
