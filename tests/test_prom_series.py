"""Splitting the series of a WriteRequest in one parse: proved, or left to the general path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xtsdb.protocol import prom_messages as pm
from xtsdb.protocol import prom_remote as pr
from xtsdb.protocol.errors import FrameTooLarge, InvalidInput
from xtsdb.protocol.prom_series import label_columns, split_series


def _series(labels: list[tuple[str, str]], samples: list[tuple[float, int]]) -> bytes:
    ts = pm.TimeSeries()
    for n, v in labels:
        ts.labels.add(name=n, value=v)
    for v, t in samples:
        ts.samples.add(value=v, timestamp=t)
    return bytes(ts.SerializeToString())


def _body(series: list[bytes]) -> bytes:
    return pr.snappy_encode(pm.WriteRequestBytes(timeseries=series).SerializeToString())


def test_prometheus_encoding_is_split_in_bulk_and_matches_one_by_one():
    series = [
        _series([("__name__", "up"), ("job", f"j{i}")], [(float(i), 1000 + i)] * (i % 3))
        for i in range(20)
    ] + [_series([], [])]
    got = split_series(series)
    assert got is not None
    keys, counts, flat = got
    slow = pr._series_one_by_one(
        pm.WriteRequestView.FromString(b"".join(b"\x0a" + bytes([len(s)]) + s for s in series))
    )
    assert keys == slow.keys
    assert counts.tolist() == slow.counts.tolist() == [i % 3 for i in range(20)] + [0]
    assert flat == [
        s
        for i in range(20)
        for s in [pm.Sample(value=i, timestamp=1000 + i).SerializeToString()] * (i % 3)
    ]
    assert [pr.decode_labels(k) for k in keys[:2]] == [
        [("__name__", "up"), ("job", "j0")],
        [("__name__", "up"), ("job", "j1")],
    ]


def test_a_truncated_series_that_swallows_the_separator_is_not_split():
    # Series 0 declares a 6-byte sample and has none: joined, it eats the
    # separator; series 1 carries a fake separator so the marker counts agree.
    sep = b"\x0a\x01\xff\x12\x01\xff"
    series = [b"\x12\x06", _series([("__name__", "a")], [(1.0, 5)]) + sep]
    assert pm.TimeSeriesView.FromString(b"".join([series[0], sep, series[1], sep]))
    assert split_series(series) is None
    with pytest.raises(InvalidInput, match="protobuf"):
        pr.decode_write_request(_body(series))


def test_samples_before_labels_take_the_general_path():
    labels_first = _series([("__name__", "a")], [(2.0, 7)])
    ts = pm.TimeSeries()
    ts.samples.add(value=2.0, timestamp=7)
    reordered = (
        ts.SerializeToString()
        + pm.TimeSeries(labels=[pm.Label(name="__name__", value="a")]).SerializeToString()
    )
    assert split_series([reordered]) is None
    a, b = (
        pr.decode_write_request(_body([reordered])),
        pr.decode_write_request(_body([labels_first])),
    )
    assert a.keys == b.keys and a.values.tolist() == b.values.tolist() == [2.0]


def test_a_sample_that_looks_like_a_marker_is_refused_by_the_general_path():
    bad = _series([("__name__", "a")], []) + b"\x12\x01\xff"
    assert split_series([bad]) is None
    with pytest.raises(InvalidInput, match="series 0, sample 0"):
        pr.decode_write_request(_body([bad]))


_VALID = b"".join(
    b"\x0a" + bytes([len(s)]) + s
    for s in (
        _series([("__name__", "up"), ("job", "a")], [(1.5, 1000), (0.0, 2000)]),
        _series([("__name__", "x")], [(2.0, 0)]),
        _series([("__name__", "y"), ("k", "v")], []),
    )
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), max_size=4))
def test_corrupted_requests_decode_or_raise_invalid_input(edits):
    """Any byte changed: a clean InvalidInput, or a request both paths decode alike."""
    data = bytearray(_VALID)
    for pos, byte in edits:
        data[pos] = byte
    try:
        cols = pr.decode_write_request(pr.snappy_encode(bytes(data)))
        labels = cols.labels
    except InvalidInput:
        return
    general = pr._series_one_by_one(pm.WriteRequestView.FromString(bytes(data)))
    assert general.keys == cols.keys and general.labels == labels
    assert general.counts.tolist() == cols.counts.tolist()
    assert general.ts_us.tolist() == cols.ts_us.tolist()
    assert general.values.view("u8").tolist() == cols.values.view("u8").tolist()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bodies_raise_only_xtsdb_errors(body):
    for decode in (pr.decode_write_request, pr.decode_read_request):
        try:
            got = decode(body)
            if isinstance(got, pr.WriteColumns):
                got.labels  # noqa: B018
        except (InvalidInput, FrameTooLarge):
            pass


LABEL_TEXT = st.text(alphabet=st.sampled_from(list("ab_=,é\x00 ")), max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(LABEL_TEXT, LABEL_TEXT), max_size=4), max_size=6))
def test_label_sets_decode_in_bulk_as_one_by_one(sets):
    keys = [
        tuple(bytes(pm.Label(name=n, value=v).SerializeToString()) for n, v in labels)
        for labels in sets
    ]
    assert pr.decode_label_sets(keys) == [pr.decode_labels(k) for k in keys] == sets


def test_labels_whose_fields_do_not_pair_up_take_the_general_path():
    # Sizes agree with "name a, value c" and "name b, value d"; the tags do not.
    keys = [(b"\x0a\x01a\x0a\x01b", b"\x12\x01c\x12\x01d")]
    assert label_columns(list(keys[0])) is None
    assert pr.decode_label_sets(keys) == [[("b", ""), ("", "d")]]


def test_labels_that_are_not_utf8_are_invalid_input():
    for key in ((b"\x0a\x01\xff\x12\x01x",), (b"\x0a\x01x\x12\x02\xc3\x28",)):
        with pytest.raises(InvalidInput):
            pr.decode_label_sets([key])
