"""Prometheus remote write then remote read through a real Engine; names, matchers, bad input."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xtsdb.protocol import prom_messages as pm
from xtsdb.protocol import prom_remote as pr
from xtsdb.protocol.errors import InvalidInput
from xtsdb.protocol.line_protocol import parse
from xtsdb.server.engine import Engine
from xtsdb.server.prom_labels import parse_name, tag_name
from xtsdb.server.prom_match import compile_regex
from xtsdb.server.prom_remote import SeriesNames, catalog_series, handle_read, handle_write

STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
WRITE = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
READ = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
}
TEXT = st.text(alphabet=st.sampled_from(list('ab\\,= .=_:é"#')), min_size=1, max_size=8)


@settings(max_examples=500, deadline=None)
@given(TEXT, st.dictionaries(TEXT.filter(lambda s: s != "__name__"), TEXT, max_size=3))
def test_label_sets_and_tag_names_round_trip(metric, labels):
    ls = [("__name__", metric), *labels.items()]
    assert parse_name(tag_name(list(reversed(ls)))) == dict(ls)
    assert tag_name(ls) == tag_name(list(reversed(ls)))  # sorted: order does not matter


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab, =.é")), min_size=1, max_size=6),
    st.dictionaries(
        st.text(alphabet="ab, =", min_size=1, max_size=4).filter(lambda s: s != "time"),
        st.text(alphabet="ab, =.", min_size=1, max_size=4).filter(lambda s: s[0] != "="),
        max_size=3,
    ),
)
def test_names_are_the_ones_line_protocol_gives(metric, tags):
    """Without backslashes, a series' name is line protocol's for ``metric,tags value=...``."""
    from xtsdb.protocol.lp_grammar import esc

    line = esc(metric, ", ") + "".join(f",{esc(k, ',= ')}={esc(v, ',= ')}" for k, v in tags.items())
    batch = parse(f"{line} value=1 1000".encode(), "us", 0)
    assert batch.names == [tag_name([("__name__", metric), *tags.items()])]


def test_names_examples_and_refusals():
    name = tag_name([("job", "a b"), ("__name__", "up"), ("path", "C:\\"), ("e", "")])
    assert name == "up,job=a\\ b,path=C:\\\\.value"
    assert parse_name(name) == {"__name__": "up", "job": "a b", "path": "C:\\"}
    assert parse_name("cpu,host=a.usage_idle") == {"__name__": "cpu_usage_idle", "host": "a"}
    assert parse_name("boiler_1") is None  # outside the scheme: not shown
    for bad in ([("job", "x")], [("__name__", "a"), ("", "x")], [("__name__", "a")] * 2):
        with pytest.raises(InvalidInput):
            tag_name(bad)
    with pytest.raises(InvalidInput, match="256"):
        tag_name([("__name__", "m"), ("long", "x" * 300)])


def test_regexes_that_could_backtrack_badly_are_refused():
    for bad in ("(a+)+$", "(a|aa)*c", "(x*)*y", ".*a.*b.*c.*d", "(?=a)", "a{5000}", "(a"):
        with pytest.raises(InvalidInput):
            compile_regex(bad)
    for good in ("a|b", ".*foo.*", "(foo|bar)", "[a-z]+_total", "job-(1|2|3)", "(ab)+"):
        compile_regex(good)


def _write(engine: Engine, series: list[pr.SeriesSamples], names: SeriesNames | None = None):
    return handle_write(engine, pr.encode_write_request(series), WRITE, names)


def _read(engine: Engine, *queries: pr.PromQuery) -> list[list[pr.SeriesSamples]]:
    status, headers, body = handle_read(engine, pr.encode_read_request(list(queries)), READ)
    assert status == 200, body
    assert headers == {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
    return pr.decode_read_response(body)


def _q(start: int, end: int, *matchers: tuple[int, str, str]) -> pr.PromQuery:
    return pr.PromQuery(start, end, tuple(pr.Matcher(*m) for m in matchers))


def test_write_then_read_back_bit_exactly(tmp_path: Path):
    rng = np.random.default_rng(3)
    series = []
    for i in range(30):
        n = int(rng.integers(1, 40))
        ts = np.sort(rng.choice(100_000, n, replace=False)).astype(np.int64)
        vals = rng.normal(size=n)
        vals[rng.random(n) < 0.2] = STALE
        labels = [
            ("__name__", f"m{i % 3}"),
            ("instance", f"h{i}"),
            ("job", "a b" if i % 2 else "c"),
        ]
        series.append(pr.SeriesSamples(labels, ts, vals))
    edges = np.array([49_999, 50_000, 60_000, 60_001])  # the read range is inclusive
    series.append(pr.SeriesSamples([("__name__", "edge")], edges, np.arange(4.0)))
    with Engine.open(tmp_path / "db") as engine:
        names = SeriesNames()
        assert _write(engine, series[:15], names)[0] == 204
        assert _write(engine, series[15:], names)[0] == 204
        engine.flush()  # half the reads from blocks, then more in memory
        assert _write(engine, series[:3], names)[0] == 204  # the same points again
        got = _read(
            engine,
            _q(0, 100_000, (pm.EQ, "__name__", "m1")),
            _q(0, 100_000, (pm.RE, "job", "a.*"), (pm.NEQ, "__name__", "m0")),
            _q(50_000, 60_000, (pm.NRE, "instance", "h1.*")),
        )
    want = [
        [s for s in series if s.labels[0][1] == "m1"],
        [s for s in series[:-1] if s.labels[2][1] == "a b" and s.labels[0][1] != "m0"],
        [s for s in series if not dict(s.labels).get("instance", "").startswith("h1")],
    ]
    assert got[2][0].labels == [("__name__", "edge")] and got[2][0].ts_ms.tolist() == [
        50_000,
        60_000,
    ]
    for i, (result, expected) in enumerate(zip(got, want, strict=True)):
        lo, hi = (50_000, 60_000) if i == 2 else (0, 100_000)
        by_labels = {tuple(s.labels): s for s in result}
        kept = [s for s in expected if ((s.ts_ms >= lo) & (s.ts_ms <= hi)).any()]
        assert len(by_labels) == len(kept)
        for s in kept:
            r = by_labels[tuple(sorted(s.labels))]
            m = (s.ts_ms >= lo) & (s.ts_ms <= hi)
            assert r.ts_ms.tolist() == s.ts_ms[m].tolist()
            assert r.values.view(np.uint64).tolist() == s.values[m].view(np.uint64).tolist()


def test_read_shows_line_protocol_fields_and_prefers_value_names(tmp_path: Path):
    with Engine.open(tmp_path / "db") as engine:
        for name in ("cpu,host=a.usage", "cpu_usage,host=a.value", "plain"):
            engine.write(engine.get_or_create_tag(name), [5_000], [1.0 if "." in name else 9])
        series = catalog_series(engine)
        assert [labels for _, labels in series] == [{"__name__": "cpu_usage", "host": "a"}]
        assert series[0][0] == engine.catalog.resolve("cpu_usage,host=a.value")


def test_bad_requests_change_nothing(tmp_path: Path):
    good = pr.SeriesSamples([("__name__", "ok")], np.array([1]), np.array([1.0]))
    nameless = pr.SeriesSamples([("job", "x")], np.array([1]), np.array([1.0]))
    with Engine.open(tmp_path / "db") as engine:
        assert _write(engine, [good, nameless])[0] == 400
        newline = pr.SeriesSamples([("__name__", "nl"), ("v", "a\nb")], np.array([1]), np.ones(1))
        assert _write(engine, [good, newline])[0] == 400  # the catalog would refuse the name
        assert handle_write(engine, b"\x00garbage", WRITE)[0] == 400
        too_big = bytes([0x80, 0x80, 0x80, 0x80, 0x04]) + b"\x00" * 10
        assert handle_write(engine, too_big, WRITE)[0] == 413
        body = pr.encode_write_request([good])
        for headers in (
            {**WRITE, "Content-Encoding": "gzip"},
            {**WRITE, "Content-Type": "application/json"},
            {
                **WRITE,
                "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            },
            {**WRITE, "X-Prometheus-Remote-Write-Version": "2.0.0"},
        ):
            assert handle_write(engine, body, headers)[0] == 415
        assert engine.catalog.all() == []
        assert engine.stats()["points_written"] == 0
        slow = pr.encode_read_request([_q(0, 1, (pm.RE, "job", "(a+)+$"))])
        status, _, text = handle_read(engine, slow, READ)
        assert status == 400 and b"nests a repeat" in text
        unknown_type_only = pr.encode_read_request([_q(0, 1, (pm.EQ, "job", "x"))], [7])
        assert handle_read(engine, unknown_type_only, READ)[0] == 400


def test_a_read_over_the_sample_limit_is_refused(tmp_path: Path, monkeypatch):
    from xtsdb.server import prom_remote as sp

    monkeypatch.setattr(sp, "MAX_READ_SAMPLES", 50)
    s = pr.SeriesSamples([("__name__", "m")], np.arange(60, dtype=np.int64), np.zeros(60))
    with Engine.open(tmp_path / "db") as engine:
        assert _write(engine, [s])[0] == 204
        assert len(_read(engine, _q(0, 48, (pm.EQ, "__name__", "m")))[0][0].ts_ms) == 49
        status, _, text = handle_read(
            engine, pr.encode_read_request([_q(0, 100, (pm.EQ, "__name__", "m"))]), READ
        )
        assert status == 400 and b"more than 50 samples" in text


def test_points_inside_one_millisecond_read_as_the_last_of_them(tmp_path: Path):
    with Engine.open(tmp_path / "db") as engine:
        tid = engine.get_or_create_tag("m.value")
        engine.write(tid, [5_000_100, 5_000_900, 5_001_000], [1.0, 2.0, 3.0])
        (s,) = _read(engine, _q(0, 10_000, (pm.EQ, "__name__", "m")))[0]
    assert s.ts_ms.tolist() == [5_000, 5_001] and s.values.tolist() == [2.0, 3.0]
