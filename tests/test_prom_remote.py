"""Prometheus remote write/read codecs: round trips against the protobuf runtime, bad input."""

from __future__ import annotations

import struct

import cramjam
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xtsdb.protocol import prom_messages as pm
from xtsdb.protocol import prom_remote as pr
from xtsdb.protocol import prom_samples as ps
from xtsdb.protocol.errors import FrameTooLarge, InvalidInput

STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
MS = st.integers(-(1 << 50), 1 << 50)  # inside xtsdb's range once in microseconds
BITS = st.integers(0, (1 << 64) - 1)  # any double, NaN payloads included


def _f(bits: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", bits))[0])


def _request(series: list[tuple[list[tuple[str, str]], list[tuple[float, int]]]]) -> bytes:
    """A WriteRequest built sample by sample with the protobuf runtime, as Prometheus would."""
    req = pm.WriteRequest()
    for labels, samples in series:
        ts = req.timeseries.add()
        for n, v in labels:
            ts.labels.add(name=n, value=v)
        for value, t in samples:
            ts.samples.add(value=value, timestamp=t)
    return bytes(req.SerializeToString())


def _bits(a: np.ndarray) -> list[int]:
    return [int(x) for x in np.asarray(a, np.float64).view(np.uint64)]


SERIES = st.lists(
    st.tuples(
        st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), max_size=3),
        st.lists(
            st.tuples(st.one_of(BITS.map(_f), st.sampled_from([0.0, STALE, -0.0])), MS),
            max_size=6,
        ),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(SERIES)
def test_write_request_decodes_to_the_runtimes_values_bit_exactly(series):
    cols = pr.decode_write_request(pr.snappy_encode(_request(series)))
    assert cols.labels == [labels for labels, _ in series]
    assert cols.counts.tolist() == [len(s) for _, s in series]
    want = [(v, t) for _, s in series for v, t in s]
    assert _bits(cols.values) == _bits([v for v, _ in want])
    assert cols.ts_us.tolist() == [t * 1000 for _, t in want]


def test_stale_marker_survives_write_and_read_encodings():
    series = [([("__name__", "up")], [(STALE, 1000), (1.5, 2000), (STALE, 3000)])]
    cols = pr.decode_write_request(pr.snappy_encode(_request(series)))
    assert _bits(cols.values) == [0x7FF0000000000002, _bits([1.5])[0], 0x7FF0000000000002]
    out = pr.SeriesSamples([("__name__", "up")], cols.ts_us // 1000, cols.values)
    back = pr.decode_read_response(pr.encode_read_response([[out]]))
    assert _bits(back[0][0].values) == _bits(cols.values)
    assert back[0][0].ts_ms.tolist() == [1000, 2000, 3000]


def test_the_columnar_path_is_taken_for_prometheus_encoding_and_not_for_others():
    series = [([("__name__", "a")], [(1.5, 7), (0.0, 8), (2.0, 0), (0.0, 0)])]
    view = pm.WriteRequestView.FromString(_request(series))
    payloads = [list(ts.samples) for ts in view.timeseries]
    fast = ps._columns(payloads[0], 4)
    assert fast is not None
    assert fast[0].tolist() == [7, 8, 0, 0] and fast[1].tolist() == [1.5, 0.0, 2.0, 0.0]
    # Valid protobuf written another way: timestamp first, a value written twice
    # (the last wins), a non-canonical varint. Decoded right, one sample at a time.
    odd = [
        b"\x10\x05\x09" + struct.pack("<d", 3.0),
        b"\x09" + struct.pack("<d", 9.0) + b"\x09" + struct.pack("<d", 4.0) + b"\x10\x06",
        b"\x09" + struct.pack("<d", 5.0) + b"\x10\x87\x00",
    ]
    assert ps._columns(odd, 3) is None
    ts, values = ps.decode_samples(odd, np.array([3]))
    assert ts.tolist() == [5, 6, 7] and values.tolist() == [3.0, 4.0, 5.0]


def test_a_varint_running_into_the_next_sample_is_not_taken_as_aligned():
    # Sample 0 ends in a continuation byte; joined, its varint eats sample 1's
    # first byte and the rest still parses: one value, two timestamps, as the
    # flags expect. Only the lengths show the samples are not aligned.
    tricky = [b"\x09" + struct.pack("<d", 1.0) + b"\x10\x80", b"\x10\x10\x05"]
    cols = pm.SampleColumns.FromString(b"".join(tricky))
    assert list(cols.value) == [1.0] and list(cols.timestamp) == [2048, 5]
    assert ps._columns(tricky, 2) is None
    with pytest.raises(InvalidInput, match="series 0, sample 0"):
        ps.decode_samples(tricky, np.array([2]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(BITS.map(_f), INT64), max_size=20))
def test_encoded_samples_parse_back_with_the_runtime(samples):
    values = np.array([v for v, _ in samples], np.float64)
    ts = np.array([t for _, t in samples], np.int64)
    msg = pm.TimeSeries()
    msg.MergeFromString(ps.encode_samples(ts, values))
    assert [s.timestamp for s in msg.samples] == ts.tolist()
    assert _bits([s.value for s in msg.samples]) == _bits(values)
    if all(v != 0 and t != 0 for v, t in zip(_bits(values), ts.tolist(), strict=True)):
        # the runtime writes every field then, so the bytes are the same
        ref = pm.TimeSeries()
        for v, t in samples:
            ref.samples.add(value=v, timestamp=t)
        assert ref.SerializeToString() == ps.encode_samples(ts, values)


def test_read_request_round_trip():
    q = pr.PromQuery(
        10, 20, (pr.Matcher(pm.EQ, "__name__", "up"), pr.Matcher(pm.NRE, "job", "a|b")), 15, "rate"
    )
    got = pr.decode_read_request(pr.encode_read_request([q], [pm.STREAMED_XOR_CHUNKS, pm.SAMPLES]))
    assert got.queries == [q]
    assert got.accepted == [pm.STREAMED_XOR_CHUNKS, pm.SAMPLES]
    assert pr.decode_read_request(pr.encode_read_request([q])).accepted == [pm.SAMPLES]


def test_read_response_matches_the_runtimes_message():
    s = pr.SeriesSamples([("job", "x"), ("__name__", "up")], np.array([1, 2]), np.array([0.0, 3.0]))
    resp = pm.ReadResponse.FromString(
        bytes(cramjam.snappy.decompress_raw(pr.encode_read_response([[s], []])))
    )
    assert len(resp.results) == 2 and len(resp.results[1].timeseries) == 0
    ts = resp.results[0].timeseries[0]
    assert [(lb.name, lb.value) for lb in ts.labels] == [("__name__", "up"), ("job", "x")]
    assert [(x.timestamp, x.value) for x in ts.samples] == [(1, 0.0), (2, 3.0)]


# -- bad input -------------------------------------------------------------------


def test_broken_snappy_is_invalid_input():
    body = pr.snappy_encode(_request([([("__name__", "a")], [(1.0, 1)])]))
    for bad in (b"", b"\xff\xff\xff\xff\xff\xff", body[:-3], b"\x10abc"):
        with pytest.raises(InvalidInput, match=r"snappy|empty"):
            pr.decode_write_request(bad)


def test_a_body_announcing_a_huge_size_is_refused_before_decompressing():
    # The header says 1 GiB; only a few bytes follow.
    huge = bytes([0x80, 0x80, 0x80, 0x80, 0x04]) + b"\x00" * 10
    with pytest.raises(FrameTooLarge, match="1073741824"):
        pr.decode_write_request(huge)
    small = pr.snappy_encode(b"\x0a\x00" * 1000)
    with pytest.raises(FrameTooLarge):
        pr.decode_write_request(small, limit=100)


def test_broken_protobuf_is_invalid_input():
    for bad in (b"\xff\xff", b"\x0a\x05\x0a\x02", b"\x0a\x04\x0a\x02\xff\xfe"):
        with pytest.raises(InvalidInput, match="protobuf"):
            pr.decode_write_request(pr.snappy_encode(bad)).labels  # noqa: B018
        with pytest.raises(InvalidInput, match=r"protobuf|wrong type"):
            pr.decode_read_request(pr.snappy_encode(bad))


def test_fields_of_the_wrong_type_are_refused():
    # TimeSeries.labels (field 1) sent as a varint; a field 7 in a WriteRequest.
    for bad in (b"\x0a\x02\x08\x01", b"\x38\x01"):
        with pytest.raises(InvalidInput, match="wrong type"):
            pr.decode_write_request(pr.snappy_encode(bad))
    # A broken sample inside a series is named.
    bad_sample = b"\x0a\x04\x12\x02\x09\x01"
    with pytest.raises(InvalidInput, match="sample"):
        pr.decode_write_request(pr.snappy_encode(bad_sample))


def test_exemplars_and_histograms_are_counted_not_stored():
    ts = pm.TimeSeries()
    ts.labels.add(name="__name__", value="h")
    ts.samples.add(value=1.0, timestamp=5)
    data = ts.SerializeToString() + b"\x22\x00"  # field 4: a native histogram
    body = pr.snappy_encode(b"\x0a" + bytes([len(data)]) + data + b"\x1a\x00")  # + metadata
    cols = pr.decode_write_request(body)
    assert cols.ignored == 1 and cols.values.tolist() == [1.0]


def test_timestamps_outside_xtsdbs_range_refuse_the_request():
    with pytest.raises(InvalidInput, match="outside"):
        pr.decode_write_request(pr.snappy_encode(_request([([], [(1.0, 1 << 62)])])))


def test_read_request_limits():
    m = (pr.Matcher(pm.EQ, "__name__", "x"),)
    with pytest.raises(InvalidInput, match="before"):
        pr.decode_read_request(pr.encode_read_request([pr.PromQuery(5, 4, m)]))
    with pytest.raises(InvalidInput, match="no matchers"):
        pr.decode_read_request(pr.encode_read_request([pr.PromQuery(0, 4, ())]))
    many = [pr.PromQuery(0, 1, m)] * (pr.MAX_QUERIES + 1)
    with pytest.raises(InvalidInput, match="queries"):
        pr.decode_read_request(pr.encode_read_request(many))
    req = pm.ReadRequest()
    req.queries.add(end_timestamp_ms=1).matchers.add(type=9, name="a", value="b")
    with pytest.raises(InvalidInput, match="matcher type"):
        pr.decode_read_request(pr.snappy_encode(req.SerializeToString()))


def test_read_response_with_empty_series_between_others():
    def mk(name: str, ts: list[int]) -> pr.SeriesSamples:
        return pr.SeriesSamples([("__name__", name)], np.array(ts, np.int64), np.ones(len(ts)))

    results = [[mk("e0", []), mk("a", [1, 2])], [], [mk("e1", []), mk("b", [3]), mk("e2", [])]]
    back = pr.decode_read_response(pr.encode_read_response(results))
    assert [[(s.labels[0][1], s.ts_ms.tolist()) for s in q] for q in back] == [
        [("e0", []), ("a", [1, 2])],
        [],
        [("e1", []), ("b", [3]), ("e2", [])],
    ]
