"""Prometheus' streamed remote read answer (``STREAMED_XOR_CHUNKS``), sans I/O.

The format is Prometheus' published one (``prompb/remote.proto``,
``storage/remote/chunked.go`` and ``codec.go``); the code is xtsdb's. The
HTTP body (content type :data:`CONTENT_TYPE`, not snappy-compressed) is a
sequence of frames, each:

- the message's length as an unsigned varint,
- the CRC32C (Castagnoli) of the message, 4 bytes big-endian,
- the message: a protobuf ``ChunkedReadResponse`` (series' labels, XOR chunks
  of :mod:`.prom_xor`, and ``query_index``: the query of the request it answers).

Frames are cut as Prometheus cuts them, because its client reads only the
first series of each frame (``chunkedSeriesSet.Next`` takes
``ChunkedSeries[0]``): ONE series per frame, a series split over several
frames when its chunks do not fit in :data:`MAX_FRAME` bytes. Series go out
in label order, chunks in time order, queries in request order. Unlike
Prometheus (which may overshoot by one chunk), a frame stays within the limit
unless a single chunk with its labels is larger than it.

The CRC comes from ``google-crc32c`` (Google's C implementation).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import google_crc32c
import numpy as np

from . import prom_messages as pm
from .errors import InvalidInput
from .prom_remote import SeriesSamples
from .prom_xor import encode_chunks

CONTENT_TYPE = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
MAX_FRAME = 1 << 20
"""Largest message in a frame: Prometheus' default ``--storage.remote.read-max-bytes-in-frame``."""


def negotiate(accepted: Sequence[int]) -> int:
    """The answer type: the first of the client's accepted types that is served, as Prometheus does.

    An empty list means SAMPLES (protocol 0.1.0's first clients sent none).
    """
    for kind in accepted or [pm.SAMPLES]:
        if kind in (pm.SAMPLES, pm.STREAMED_XOR_CHUNKS):
            return kind
    raise InvalidInput(
        f"none of the accepted response types {list(accepted)} is served: "
        f"SAMPLES ({pm.SAMPLES}) and STREAMED_XOR_CHUNKS ({pm.STREAMED_XOR_CHUNKS}) are"
    )


def uvarint(n: int) -> bytes:
    """Go's ``PutUvarint`` of a frame length (protobuf's varint, base 128, low group first)."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def frame(message: bytes) -> bytes:
    """One frame of the stream: length, CRC32C big-endian, the message."""
    crc: int = google_crc32c.value(message)
    return uvarint(len(message)) + crc.to_bytes(4, "big") + message


def query_frames(
    query_index: int, series: Sequence[SeriesSamples], max_frame: int = MAX_FRAME
) -> Iterator[bytes]:
    """The frames answering one query: its series' samples as XOR chunks.

    Series without samples send nothing (as in Prometheus); labels go in
    sorted by name.
    """
    counts = np.array([len(s.ts_ms) for s in series], np.int64)
    if not counts.sum():
        return
    chunks = encode_chunks(
        np.concatenate([s.ts_ms for s in series]),
        np.concatenate([s.values for s in series]),
        counts,
    )
    bounds = np.searchsorted(chunks.series, np.arange(len(series) + 1)).tolist()
    for i, s in enumerate(series):
        lo, hi = bounds[i], bounds[i + 1]
        if lo == hi:
            continue
        msg, size = _empty(query_index, s)
        base = size
        for c in range(lo, hi):
            chunk = pm.Chunk(
                min_time_ms=int(chunks.min_ms[c]),
                max_time_ms=int(chunks.max_ms[c]),
                type=pm.CHUNK_XOR,
                data=chunks.chunk(c),
            )
            n = chunk.ByteSize()
            entry = 1 + len(uvarint(n)) + n  # field tag, length, the chunk
            if size > base and size + entry > max_frame:
                yield frame(msg.SerializeToString())
                msg, size = _empty(query_index, s)
            msg.chunked_series[0].chunks.append(chunk)
            size += entry
        yield frame(msg.SerializeToString())


def _empty(query_index: int, s: SeriesSamples) -> tuple[Any, int]:
    """A frame's message with the series' labels and no chunk, and its size bound."""
    msg = pm.ChunkedReadResponse(query_index=query_index)
    cs = msg.chunked_series.add()
    for name, value in sorted(s.labels):
        cs.labels.add(name=name, value=value)
    # The series' length prefix is counted at 1 byte here; it grows to at most
    # 3 while the frame stays under 2 MiB: the 2 bytes are reserved up front.
    return msg, msg.ByteSize() + 2
