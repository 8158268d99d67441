"""Prometheus remote write and remote read against an Engine (blocking, no asyncio).

The HTTP routes call :func:`handle_write` (``POST /api/v1/write``) and
:func:`handle_read` (``POST /api/v1/read``) with the request body and headers
and send back the ``(status, headers, body)`` they return; both block (SQLite
catalog, engine reads and commits), so an asyncio server runs them in its
thread pool, and keeps one :class:`SeriesNames` for all write requests. A
server that commits through its write queue calls :func:`media_error` (a 415
answer or None), then :func:`prepare_write` in the thread pool (tags created,
columns returned), commits the columns itself and answers 204, or
:func:`error_response` for an error.

Errors are :mod:`xtsdb.protocol.errors` classes; :func:`error_response`
turns one into the status Prometheus expects (4xx: do not retry, 5xx: retry).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from xtsdb.protocol import prom_messages as pm
from xtsdb.protocol.errors import (
    FrameTooLarge,
    InvalidInput,
    NotFound,
    Overloaded,
    ProtocolError,
    XtsdbError,
)
from xtsdb.protocol.messages import TS_LIMIT
from xtsdb.protocol.prom_remote import (
    PromQuery,
    SeriesKey,
    SeriesSamples,
    decode_label_sets,
    decode_read_request,
    decode_write_request,
    encode_read_response,
)
from xtsdb.protocol.prom_stream import CONTENT_TYPE as STREAM_TYPE
from xtsdb.protocol.prom_stream import negotiate, query_frames
from xtsdb.server.engine import Engine

from .prom_labels import FIELD, parse_name, tag_name
from .prom_match import select

MAX_READ_SAMPLES = 5_000_000
"""Most samples one read answers (Prometheus' own remote_read_sample_limit is 5e7)."""

Response = tuple[int, dict[str, str], bytes]
Series = list[tuple[int, dict[str, str]]]

_PROTOBUF = "application/x-protobuf"


def _header(headers: Mapping[str, str], name: str) -> str:
    for k, v in headers.items():
        if k.lower() == name:
            return v.strip()
    return ""


def media_error(headers: Mapping[str, str], version_header: str) -> Response | None:
    """The 415 answer to a body this endpoint cannot read (type, encoding, version), or None."""
    ctype = _header(headers, "content-type").lower()
    encoding = _header(headers, "content-encoding").lower()
    version = _header(headers, version_header)
    if (ctype and ctype.split(";")[0].strip() != _PROTOBUF) or "proto=io.prometheus" in ctype:
        why = f"content type {ctype!r}: only {_PROTOBUF} (protocol 0.1.0)"
    elif encoding != "snappy":
        why = f"content encoding {encoding!r}: only snappy"
    elif version and not version.startswith("0.1."):
        why = f"{version_header} {version}: only 0.1.0"
    else:
        return None
    return 415, {"Content-Type": "text/plain; charset=utf-8"}, f"{why}\n".encode()


def error_response(exc: XtsdbError) -> Response:
    """The HTTP answer to an error: 4xx for the sender's mistakes, 5xx (retried) otherwise."""
    if isinstance(exc, FrameTooLarge):
        status = 413
    elif isinstance(exc, InvalidInput | ProtocolError | NotFound):
        status = 400
    elif isinstance(exc, Overloaded):
        status = 503
    else:
        status = 500
    return status, {"Content-Type": "text/plain; charset=utf-8"}, f"{exc}\n".encode()


# -- remote write ------------------------------------------------------------------


class SeriesNames:
    """Tag names of series keys (encoded labels) seen before: a bounded cache.

    Prometheus sends each series in every request; decoding its labels and
    building its name once, not every 15 s, is most of the decode time saved
    (``bench/prom_remote.py``). Only a valid key is ever cached, so a hit
    needs no check. Thread-safe enough: a race only computes a name twice.
    """

    def __init__(self, size: int = 200_000) -> None:
        self.size = size
        self._names: dict[SeriesKey, str] = {}

    def names(self, keys: list[SeriesKey]) -> list[str]:
        """Every key's tag name; InvalidInput (nothing cached) if one is bad."""
        cache = self._names
        out = [cache.get(k, "") for k in keys]
        missing = [i for i, name in enumerate(out) if not name]
        new = {}
        for i, labels in zip(missing, decode_label_sets([keys[i] for i in missing]), strict=True):
            out[i] = new[keys[i]] = tag_name(labels)
        if len(cache) + len(new) > self.size:
            cache.clear()  # simpler than LRU: a full cache is rebuilt by the next requests
        cache.update(new)
        return out


def prepare_write(
    engine: Engine, body: bytes, names: SeriesNames | None = None
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """A WriteRequest -> ``(tag id per sample, timestamps_us, values)``, tags created.

    Every series is decoded and named before the first tag is created, so a
    bad request creates and writes nothing.
    """
    cols = decode_write_request(body)
    tag_names = (names or SeriesNames()).names(cols.keys)
    ids = np.array([engine.get_or_create_tag(n) for n in tag_names], dtype=np.uint32)
    return np.repeat(ids, cols.counts), cols.ts_us, cols.values


def handle_write(
    engine: Engine, body: bytes, headers: Mapping[str, str], names: SeriesNames | None = None
) -> Response:
    """``POST /api/v1/write``: 204 once every sample is durable (one commit)."""
    bad = media_error(headers, "x-prometheus-remote-write-version")
    if bad is not None:
        return bad
    try:
        tag_ids, ts_us, values = prepare_write(engine, body, names)
        if ts_us.size:
            engine.write(tag_ids, ts_us, values)
    except XtsdbError as exc:
        return error_response(exc)
    return 204, {}, b""


# -- remote read --------------------------------------------------------------------


def catalog_series(engine: Engine) -> Series:
    """``(tag id, labels)`` of every tag remote read shows, sorted by tag name.

    Two names showing the same label set (``m.value`` and a line-protocol
    ``m`` field written as ``m_value``...): the ``.value`` one is shown.
    """
    seen: dict[tuple[tuple[str, str], ...], tuple[int, bool]] = {}
    for info in sorted(engine.catalog.all(), key=lambda i: i.name):
        labels = parse_name(info.name)
        if labels is None:
            continue
        key = tuple(sorted(labels.items()))
        native = info.name.endswith("." + FIELD) and not info.name.endswith("\\." + FIELD)
        if key not in seen or (native and not seen[key][1]):
            seen[key] = (info.id, native)
    out = [(tid, dict(key)) for key, (tid, _) in seen.items()]
    out.sort(key=lambda s: sorted(s[1].items()))
    return out


def read_query(
    engine: Engine, q: PromQuery, series: Series, budget: int
) -> tuple[list[SeriesSamples], int]:
    """The series matching one query with their Good points in ``[start_ms, end_ms]``.

    Timestamps go out in milliseconds; several points inside one millisecond
    (written by other means than remote write) show as the last of them.
    Returns the series and the budget left; running out refuses the request.
    """
    lo = max(q.start_ms * 1000, -TS_LIMIT + 1)
    hi = min(q.end_ms * 1000 + 1000, TS_LIMIT)
    out: list[SeriesSamples] = []
    if lo >= hi:
        return out, budget
    for tid, labels in select(series, q.matchers):
        pts = engine.query(tid, lo, hi, limit=budget + 1, good_only=True)
        if len(pts) > budget:
            raise InvalidInput(
                f"the read selects more than {MAX_READ_SAMPLES} samples: narrow its matchers "
                "or time range"
            )
        if not len(pts):
            continue
        ms = pts.timestamps // 1000
        last = np.ones(ms.shape[0], bool)
        last[:-1] = ms[1:] != ms[:-1]
        out.append(SeriesSamples(sorted(labels.items()), ms[last], pts.values[last]))
        budget -= int(last.sum())
    return out, budget


def handle_read(engine: Engine, body: bytes, headers: Mapping[str, str]) -> Response:
    """``POST /api/v1/read``: raw samples (SAMPLES) or XOR chunks (STREAMED_XOR_CHUNKS).

    The type is the first of the client's accepted types that is served, as
    Prometheus' own server chooses (:func:`~xtsdb.protocol.prom_stream.negotiate`):
    Debian's Prometheus 2.42 asks for SAMPLES only; 2.55 and later list
    STREAMED_XOR_CHUNKS first. Both answers are bounded by
    :data:`MAX_READ_SAMPLES` and built whole before they are sent (the
    listener's replies are whole bodies), query by query: the points of one
    query are encoded and let go before the next is read.
    """
    bad = media_error(headers, "x-prometheus-remote-read-version")
    if bad is not None:
        return bad
    try:
        req = decode_read_request(body)
        streamed = negotiate(req.accepted) == pm.STREAMED_XOR_CHUNKS
        series = catalog_series(engine)
        budget = MAX_READ_SAMPLES
        results = []
        frames: list[bytes] = []
        for i, q in enumerate(req.queries):
            got, budget = read_query(engine, q, series, budget)
            if streamed:
                frames.extend(query_frames(i, got))
            else:
                results.append(got)
        if streamed:
            return 200, {"Content-Type": STREAM_TYPE}, b"".join(frames)
        data = encode_read_response(results)
    except XtsdbError as exc:
        return error_response(exc)
    headers_out = {"Content-Type": _PROTOBUF, "Content-Encoding": "snappy"}
    return 200, headers_out, data
