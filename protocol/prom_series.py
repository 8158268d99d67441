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


def _markers(items: list[bytes], raw: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    lens = np.fromiter(map(len, items), np.int64, len(items))
    size = 1 + varint_len(lens) + lens
    start = np.cumsum(size) - size
    one = np.flatnonzero(lens == 1)
    out: npt.NDArray[np.int64] = one[raw[start[one] + 2] == _MARK].astype(np.int64)
    return out


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
    lraw = np.frombuffer(pm.TimeSeriesView(labels=labels).SerializeToString(), np.uint8)
    sraw = np.frombuffer(pm.TimeSeriesView(samples=samples).SerializeToString(), np.uint8)
    lm, sm = _markers(labels, lraw), _markers(samples, sraw)
    if lm.shape[0] != n or sm.shape[0] != n:
        return None
    if not _same(joined, lraw, sraw, _ends(labels, lm), _ends(samples, sm)):
        return None
    lb = (-1, *lm.tolist())
    keys = [tuple(labels[lb[j] + 1 : lb[j + 1]]) for j in range(n)]
    counts = np.diff(sm, prepend=-1) - 1
    flat = np.delete(np.array(samples, dtype=object), sm).tolist()
    return keys, counts, flat


def _ends(items: list[bytes], marks: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The byte offset just past each marker entry in the encoded list."""
    lens = np.fromiter(map(len, items), np.int64, len(items))
    ends = np.cumsum(1 + varint_len(lens) + lens)
    out: npt.NDArray[np.int64] = ends[marks]
    return out


def _same(
    joined: bytes,
    lraw: npt.NDArray[np.uint8],
    sraw: npt.NDArray[np.uint8],
    lend: npt.NDArray[np.int64],
    send: npt.NDArray[np.int64],
) -> bool:
    """Whether series by series (labels, samples, separator) the encodings give ``joined``."""
    src = np.concatenate([lraw, sraw])
    lbeg = np.concatenate([[0], lend[:-1]])
    sbeg = np.concatenate([[0], send[:-1]]) + lraw.shape[0]
    send = send + lraw.shape[0]
    # Four segments per series: label entries, sample entries, the two markers.
    starts = np.stack([lbeg, sbeg, lend - 3, send - 3], axis=1).ravel()
    sizes = np.stack(
        [lend - 3 - lbeg, send - 3 - sbeg, np.full_like(lend, 3), np.full_like(send, 3)], axis=1
    ).ravel()
    if int(sizes.sum()) != len(joined) or (sizes < 0).any():
        return False
    out_starts = np.cumsum(sizes) - sizes
    index = np.repeat(starts - out_starts, sizes) + np.arange(int(sizes.sum()))
    return bool(np.array_equal(src[index], np.frombuffer(joined, np.uint8)))
