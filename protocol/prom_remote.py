"""Prometheus remote write and remote read (protocol 0.1.0), sans I/O.

Bytes in, columns out (and back): the HTTP layer hands over a request body,
these functions return numpy columns or response bytes, or raise an
:class:`~.errors.InvalidInput` / :class:`~.errors.FrameTooLarge` that names
what is wrong, before anything is stored.

Bodies are snappy *block* format (not framed), as Prometheus sends them; the
decompressed size written in the block's header is checked against a limit
before a byte is decompressed, so a small body cannot expand into gigabytes.
Protobuf is decoded by the ``protobuf`` runtime (messages in
:mod:`.prom_messages`); the columnar sample decode is in :mod:`.prom_samples`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cramjam
import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from . import prom_messages as pm
from .errors import FrameTooLarge, InvalidInput
from .messages import TS_LIMIT
from .prom_samples import decode_samples, encode_sample_entries, encode_samples
from .prom_series import SeriesKey as SeriesKey
from .prom_series import label_columns, split_series

MAX_DECOMPRESSED = 64 << 20
"""Largest decompressed body taken by default (Prometheus sends a few MB at most)."""
MAX_QUERIES = 64
MAX_MATCHERS = 64

Labels = list[tuple[str, str]]
"""A series' labels as sent: ``[(name, value), ...]``."""

_WRITE_EXTRA = frozenset({3})  # WriteRequest.metadata: not stored, ignored
_SERIES_EXTRA = frozenset({3, 4})  # exemplars, native histograms: not stored, ignored


@dataclass
class WriteColumns:
    """A decoded WriteRequest: per series its label key and sample count, then columns.

    A series' labels are kept as their encoded bytes (``keys``), decoded by
    :func:`decode_labels`: Prometheus sends the same series again and again,
    so a server caches what it derives from a key (the tag name) and decodes
    only the labels of series it has not seen.

    Series ``i``'s samples are ``ts_us[starts[i]:starts[i + 1]]`` and the same
    slice of ``values`` (as sent, not sorted). Values are bit-exact, so stale
    markers (NaN ``0x7ff0000000000002``) stay what they were.
    """

    keys: list[SeriesKey]
    counts: npt.NDArray[np.int64]
    ts_us: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    ignored: int = 0  # series with exemplars or native histograms (not stored)

    @property
    def labels(self) -> list[Labels]:
        return [decode_labels(k) for k in self.keys]

    @property
    def starts(self) -> npt.NDArray[np.int64]:
        return np.concatenate(([0], np.cumsum(self.counts))).astype(np.int64)

    def __len__(self) -> int:
        return int(self.ts_us.shape[0])


@dataclass(frozen=True)
class Matcher:
    type: int  # prom_messages.EQ, NEQ, RE, NRE
    name: str
    value: str


@dataclass(frozen=True)
class PromQuery:
    start_ms: int
    end_ms: int  # inclusive, as Prometheus means it
    matchers: tuple[Matcher, ...]
    step_ms: int = 0
    func: str = ""


@dataclass(frozen=True)
class ReadQueries:
    queries: list[PromQuery]
    accepted: list[int]  # response types in the client's order of preference


@dataclass
class SeriesSamples:
    """One series of a read answer: its labels, then timestamps (ms) and values."""

    labels: Labels
    ts_ms: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]


# -- snappy -------------------------------------------------------------------


def snappy_decode(body: bytes, limit: int = MAX_DECOMPRESSED) -> bytes:
    """A snappy block body's bytes; its announced size is checked before decompressing."""
    if not body:
        raise InvalidInput("empty body: expected a snappy-compressed protobuf message")
    try:
        size = int(cramjam.snappy.decompress_raw_len(body))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise InvalidInput(f"the body is not snappy block format: {exc}") from exc
    if size > limit:
        raise FrameTooLarge(f"the body decompresses to {size} bytes, more than the {limit} allowed")
    try:
        out = bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:
        raise InvalidInput(f"broken snappy data: {exc}") from exc
    if len(out) != size:  # pragma: no cover - the library checks this itself
        raise InvalidInput("broken snappy data: its length is not the announced one")
    return out


def snappy_encode(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))


def _parse(cls: Any, data: bytes, what: str) -> Any:
    try:
        return cls.FromString(data)
    except DecodeError as exc:
        raise InvalidInput(f"the body is not a valid protobuf {what}: {exc}") from exc


def _unknown(msg: Any, allowed: frozenset[int], what: str) -> bool:
    """Whether ``msg`` holds allowed extra fields; other unknown fields are refused."""
    fields = UnknownFieldSet(msg)
    if not len(fields):
        return False
    for f in (fields[i] for i in range(len(fields))):
        if f.field_number not in allowed:
            raise InvalidInput(
                f"{what}: field {f.field_number} (wire type {f.wire_type}) is not part of "
                "the remote write protocol 0.1.0, or has the wrong type"
            )
    return True


# -- remote write ---------------------------------------------------------------


def decode_write_request(body: bytes, limit: int = MAX_DECOMPRESSED) -> WriteColumns:
    """A snappy-compressed ``WriteRequest`` -> :class:`WriteColumns`.

    Splits series in bulk when they are encoded as Prometheus encodes them
    (:mod:`.prom_series`), else loops over series; never over samples
    (:mod:`.prom_samples`). Labels stay encoded (:attr:`WriteColumns.keys`)
    until :func:`decode_labels`.
    Timestamps are converted from milliseconds to microseconds; one outside
    xtsdb's range refuses the request.
    """
    data = snappy_decode(body, limit)
    top = _parse(pm.WriteRequestBytes, data, "WriteRequest")
    _unknown(top, _WRITE_EXTRA, "WriteRequest")
    split = split_series(top.timeseries[:])
    if split is not None:
        keys, counts, flat = split
        ts_ms, values = decode_samples(flat, counts)
        return WriteColumns(keys, counts, ms_to_us(ts_ms), values)
    return _series_one_by_one(_parse(pm.WriteRequestView, data, "WriteRequest"))


def _series_one_by_one(req: Any) -> WriteColumns:
    """The general path: any valid encoding, exemplars and histograms counted and skipped."""
    keys: list[SeriesKey] = []
    ignored = 0
    flat: list[bytes] = []
    counts = np.zeros(len(req.timeseries), np.int64)
    for i, ts in enumerate(req.timeseries):
        if _unknown(ts, _SERIES_EXTRA, f"series {i}"):
            ignored += 1
        keys.append(tuple(ts.labels))
        samples = ts.samples[:]
        counts[i] = len(samples)
        flat.extend(samples)
    ts_ms, values = decode_samples(flat, counts)
    return WriteColumns(keys, counts, ms_to_us(ts_ms), values, ignored)


def decode_label_sets(keys: list[SeriesKey]) -> list[Labels]:
    """:func:`decode_labels` of many keys, in one parse when Prometheus encoded them."""
    flat = [lb for key in keys for lb in key]
    bulk = label_columns(flat) if flat else None
    if bulk is None:
        return [decode_labels(k) for k in keys]
    pairs = list(zip(_texts(bulk[0]), _texts(bulk[1]), strict=True))
    out = []
    i = 0
    for key in keys:
        j = i + len(key)
        out.append(pairs[i:j])
        i = j
    return out


def _texts(items: list[bytes]) -> list[str]:
    """UTF-8 strings, checked as the runtime checks a string field (here bytes were read)."""
    try:
        joined = b"\x00".join(items)
        if joined.count(0) == len(items) - 1:  # one decode and one split, no NUL inside
            return joined.decode().split("\x00")
        return [b.decode() for b in items]
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"a label is not valid UTF-8: {exc}") from exc


def decode_labels(key: SeriesKey) -> Labels:
    """The ``(name, value)`` labels of a series key, checked as the runtime checks strings."""
    out = []
    for data in key:
        label = _parse(pm.Label, data, "Label")
        _unknown(label, frozenset(), "a label")
        out.append((label.name, label.value))
    return out


def ms_to_us(ts_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Milliseconds -> microseconds, refusing what would leave xtsdb's timestamp range."""
    bound = TS_LIMIT // 1000
    if ts_ms.size and (int(ts_ms.min()) <= -bound or int(ts_ms.max()) >= bound):
        raise InvalidInput(f"a sample timestamp is outside +-{bound} ms")
    return ts_ms * 1000


def encode_write_request(series: list[SeriesSamples]) -> bytes:
    """A snappy-compressed ``WriteRequest`` (what Prometheus sends): for tests and benches."""
    req = pm.WriteRequest()
    for s in series:
        ts = req.timeseries.add()
        ts.labels.extend(pm.Label(name=n, value=v) for n, v in s.labels)
        ts.MergeFromString(encode_samples(s.ts_ms, s.values))
    return snappy_encode(req.SerializeToString())


# -- remote read ----------------------------------------------------------------


def decode_read_request(body: bytes, limit: int = MAX_DECOMPRESSED) -> ReadQueries:
    """A snappy-compressed ``ReadRequest`` -> its queries and accepted response types."""
    req = _parse(pm.ReadRequest, snappy_decode(body, limit), "ReadRequest")
    if len(req.queries) > MAX_QUERIES:
        raise InvalidInput(f"{len(req.queries)} queries in one read request, at most {MAX_QUERIES}")
    _unknown(req, frozenset(), "ReadRequest")
    queries = []
    for i, q in enumerate(req.queries):
        _unknown(q, frozenset(), f"query {i}")
        if len(q.matchers) > MAX_MATCHERS:
            raise InvalidInput(f"query {i}: {len(q.matchers)} matchers, at most {MAX_MATCHERS}")
        if q.end_timestamp_ms < q.start_timestamp_ms:
            raise InvalidInput(f"query {i}: end_timestamp_ms is before start_timestamp_ms")
        matchers = []
        for m in q.matchers:
            if m.type not in (pm.EQ, pm.NEQ, pm.RE, pm.NRE):
                raise InvalidInput(f"query {i}: unknown matcher type {m.type}")
            if not m.name:
                raise InvalidInput(f"query {i}: a matcher without a label name")
            matchers.append(Matcher(int(m.type), m.name, m.value))
        if not matchers:
            raise InvalidInput(f"query {i}: no matchers (Prometheus always sends one)")
        queries.append(
            PromQuery(
                int(q.start_timestamp_ms),
                int(q.end_timestamp_ms),
                tuple(matchers),
                int(q.hints.step_ms),
                q.hints.func,
            )
        )
    accepted = [int(t) for t in req.accepted_response_types] or [pm.SAMPLES]
    return ReadQueries(queries, accepted)


def encode_read_request(queries: list[PromQuery], accepted: list[int] | None = None) -> bytes:
    """A snappy-compressed ``ReadRequest`` (what Prometheus sends): for tests and benches."""
    req = pm.ReadRequest(accepted_response_types=accepted or [])
    for q in queries:
        pq = req.queries.add(start_timestamp_ms=q.start_ms, end_timestamp_ms=q.end_ms)
        pq.hints.step_ms = q.step_ms
        pq.hints.func = q.func
        for m in q.matchers:
            pq.matchers.add(type=m.type, name=m.name, value=m.value)
    return snappy_encode(req.SerializeToString())


def encode_read_response(results: list[list[SeriesSamples]]) -> bytes:
    """The snappy-compressed ``ReadResponse`` (response type SAMPLES), results in query order.

    Labels go in sorted by name, as Prometheus requires of a series.
    """
    every = [s for series in results for s in series]
    counts = np.array([len(s.ts_ms) for s in every], np.int64)
    if every:  # the samples of all series in one vectorised encoding, cut per series
        blob, ends = encode_sample_entries(
            np.concatenate([s.ts_ms for s in every]), np.concatenate([s.values for s in every])
        )
        cuts = np.concatenate([[0], ends[np.cumsum(counts) - 1]])
        cuts[1:][counts == 0] = 0
        bounds = np.maximum.accumulate(cuts).tolist()
    resp = pm.ReadResponse()
    k = 0
    for series in results:
        qr = resp.results.add()
        for s in series:
            ts = qr.timeseries.add()
            for n, v in sorted(s.labels):
                ts.labels.add(name=n, value=v)
            ts.MergeFromString(blob[bounds[k] : bounds[k + 1]])
            k += 1
    return snappy_encode(resp.SerializeToString())


def decode_read_response(body: bytes, limit: int = MAX_DECOMPRESSED) -> list[list[SeriesSamples]]:
    """A SAMPLES ``ReadResponse`` -> series per query: for tests (what Prometheus reads)."""
    resp = _parse(pm.ReadResponse, snappy_decode(body, limit), "ReadResponse")
    out = []
    for qr in resp.results:
        series = []
        for ts in qr.timeseries:
            n = len(ts.samples)
            t = np.fromiter((s.timestamp for s in ts.samples), np.int64, n)
            v = np.fromiter((s.value for s in ts.samples), np.float64, n)
            series.append(SeriesSamples([(lb.name, lb.value) for lb in ts.labels], t, v))
        out.append(series)
    return out
