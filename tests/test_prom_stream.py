"""Streamed remote read (protocol/prom_stream.py, server/prom_remote.py) read as a client would.

Frames are taken apart here with a length reader and a bitwise CRC32C written
from the definitions (the reflected Castagnoli polynomial 0x82F63B78, not the
library the module uses); chunks with the independent decoder of
``test_prom_xor.py``. Then through a real Engine and the HTTP port: the
streamed answer holds exactly the samples of the SAMPLES answer, bit for bit;
and against a real Prometheus 2.42: its own chunks are what this encoder writes.
"""

from __future__ import annotations

import contextlib
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import require_program
from test_http_api import Http
from test_prom_xor import STALE, decode_xor

from xtsdb.protocol import prom_messages as pm
from xtsdb.protocol import prom_remote as pr
from xtsdb.protocol.errors import InvalidInput
from xtsdb.protocol.prom_stream import (
    CONTENT_TYPE,
    MAX_FRAME,
    frame,
    negotiate,
    query_frames,
)
from xtsdb.protocol.prom_xor import encode_chunks
from xtsdb.server.app import ServerThread
from xtsdb.server.engine import Engine
from xtsdb.server.process import free_port
from xtsdb.server.prom_remote import handle_read, handle_write

HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
}


def crc32c(data: bytes) -> int:
    """CRC-32C bit by bit: reflected polynomial 0x82F63B78, init and final XOR all ones."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def split_frames(body: bytes) -> list[Any]:
    """The messages of a stream, each frame's length and CRC checked here."""
    out = []
    pos = 0
    while pos < len(body):
        size = shift = 0
        while True:
            b = body[pos]
            pos += 1
            size |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        (crc,) = struct.unpack(">I", body[pos : pos + 4])
        message = body[pos + 4 : pos + 4 + size]
        assert len(message) == size, "the stream ends inside a frame"
        assert crc32c(message) == crc
        out.append(pm.ChunkedReadResponse.FromString(message))
        pos += 4 + size
    return out


Found = list[tuple[int, list[tuple[str, str]], list[tuple[int, int]]]]


def series_of(messages: list[Any], spare_byte: bool = False) -> Found:
    """``(query_index, labels, [(ms, value bits)])`` per series; frames of one series joined."""
    out: Found = []
    for m in messages:
        assert len(m.chunked_series) == 1  # Prometheus' client reads only the first
        (cs,) = m.chunked_series
        labels = [(lb.name, lb.value) for lb in cs.labels]
        samples = []
        for c in cs.chunks:
            assert c.type == pm.CHUNK_XOR
            got = decode_xor(c.data, spare_byte)
            assert (got[0][0], got[-1][0]) == (c.min_time_ms, c.max_time_ms)
            samples += got
        if out and out[-1][:2] == (m.query_index, labels):
            out[-1][2].extend(samples)
        else:
            out.append((m.query_index, labels, samples))
    return out


def test_crc_reference_and_frame_layout() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the published check value
    body = frame(b"\x10\x05") + frame(b"x" * 300)
    assert body[:1] == b"\x02" and body[1:5] == crc32c(b"\x10\x05").to_bytes(4, "big")
    assert body[7:9] == b"\xac\x02"  # 300 as a uvarint
    assert body[9:13] == crc32c(b"x" * 300).to_bytes(4, "big")
    assert len(body) == 7 + 2 + 4 + 300


def _series(rng: np.random.Generator, n: int, name: str) -> pr.SeriesSamples:
    ts = np.cumsum(rng.integers(1, 30_000, n)).astype(np.int64)
    values = rng.standard_normal(n)
    values[rng.random(n) < 0.1] = STALE
    return pr.SeriesSamples([("job", "j"), ("__name__", name)], ts, values)


@pytest.mark.parametrize("max_frame", [MAX_FRAME, 4096, 700])
def test_frames_one_series_each_bounded_and_complete(max_frame: int) -> None:
    rng = np.random.default_rng(7)
    series = [_series(rng, n, f"m{i}") for i, n in enumerate([1, 0, 119, 121, 2000])]
    messages = split_frames(b"".join(query_frames(3, series, max_frame)))
    for m in messages:  # over the limit only when one chunk alone is larger
        assert m.ByteSize() <= max_frame or len(m.chunked_series[0].chunks) == 1
        assert m.query_index == 3
    several = any(len(m.chunked_series[0].chunks) > 1 for m in messages)
    assert several == (max_frame >= 4096)  # 700 B: less than one chunk of 120 random samples
    got = series_of(messages)
    want = [s for s in series if len(s.ts_ms)]
    assert [labels for _, labels, _ in got] == [sorted(s.labels) for s in want]
    for (_, _, samples), s in zip(got, want, strict=True):
        assert samples == list(
            zip(s.ts_ms.tolist(), s.values.view(np.uint64).tolist(), strict=True)
        )
    frames_of_big = sum(1 for m in messages if m.chunked_series[0].labels[0].value == "m4")
    if max_frame == MAX_FRAME:
        assert frames_of_big == 1
    else:  # the 17 chunks of 2000 random samples (about 20 kB) need several frames
        assert frames_of_big > 1


def test_negotiation_is_prometheus_first_served_type() -> None:
    samples, chunks = pm.SAMPLES, pm.STREAMED_XOR_CHUNKS
    assert negotiate([chunks, samples]) == chunks
    assert negotiate([samples, chunks]) == samples
    assert negotiate([]) == samples
    assert negotiate([7, chunks]) == chunks
    with pytest.raises(InvalidInput, match="none of the accepted"):
        negotiate([7])


def test_engine_streamed_answer_equals_samples_answer(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    series = [_series(rng, n, name) for n, name in ((300, "a"), (5, "b"), (1, "c"))]
    series.append(
        pr.SeriesSamples(
            [("__name__", "z")], np.array([10, 20], np.int64), np.array([-0.0, np.inf])
        )
    )
    queries = [
        pr.PromQuery(0, 10**12, (pr.Matcher(pm.RE, "__name__", "a|b"),)),
        pr.PromQuery(0, 10**12, (pr.Matcher(pm.NEQ, "__name__", "a"),)),
        pr.PromQuery(10**12, 10**12 + 1, (pr.Matcher(pm.EQ, "__name__", "a"),)),  # empty
    ]
    with Engine.open(tmp_path / "db") as engine:
        assert handle_write(engine, pr.encode_write_request(series), HEADERS)[0] == 204
        status, headers, body = handle_read(engine, pr.encode_read_request(queries), HEADERS)
        assert status == 200
        samples = pr.decode_read_response(body)
        accepted = [pm.STREAMED_XOR_CHUNKS, pm.SAMPLES]
        status, headers, body = handle_read(
            engine, pr.encode_read_request(queries, accepted), HEADERS
        )
        assert status == 200, body
        assert headers == {"Content-Type": CONTENT_TYPE}  # no snappy on a stream
        got = series_of(split_frames(body))
    want = [
        (qi, s.labels, list(zip(s.ts_ms.tolist(), s.values.view(np.uint64).tolist(), strict=True)))
        for qi, result in enumerate(samples)
        for s in result
    ]
    assert got == want
    assert [qi for qi, _, _ in got] == [0, 0, 1, 1, 1]
    assert sum(len(s) for _, _, s in got) == 300 + 5 + 5 + 1 + 2


def test_streamed_read_keeps_the_sample_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xtsdb.server import prom_remote as sp

    monkeypatch.setattr(sp, "MAX_READ_SAMPLES", 50)
    s = pr.SeriesSamples([("__name__", "m")], np.arange(60, dtype=np.int64), np.zeros(60))
    q = pr.PromQuery(0, 100, (pr.Matcher(pm.EQ, "__name__", "m"),))
    with Engine.open(tmp_path / "db") as engine:
        assert handle_write(engine, pr.encode_write_request([s]), HEADERS)[0] == 204
        body = pr.encode_read_request([q], [pm.STREAMED_XOR_CHUNKS])
        status, _, text = handle_read(engine, body, HEADERS)
        assert status == 400 and b"more than 50 samples" in text


# -- against a real Prometheus --------------------------------------------------------


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@contextlib.contextmanager
def _prometheus(tmp_path: Path) -> Iterator[str]:
    """Debian's prometheus with its remote write receiver on, scraping nothing."""
    program = require_program("prometheus", "prometheus")
    (tmp_path / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\n")
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                program,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-remote-write-receiver",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "prometheus not ready in 60 s"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_prometheus_own_chunks_are_what_this_encoder_writes(tmp_path: Path) -> None:
    """Prometheus 2.42 stores samples sent to its remote write receiver and answers a
    streamed remote read of them with ITS chunks: the independent decoder reads them
    back bit-exactly, and encoding each chunk's samples here gives the same bytes."""
    rng = np.random.default_rng(5)
    now = int(time.time() * 1000) - 7_200_000  # 400 samples: about 100 min
    series = []
    for i, kind in enumerate(("regular", "jitter", "wild")):
        n = 400
        if kind == "regular":
            gaps = np.full(n, 15_000)
        elif kind == "jitter":
            gaps = 15_000 + rng.integers(-40, 40, n)
        else:
            gaps = rng.choice([1, 7, 900, 5_000, 70_000], n)
        scale = 10.0 ** rng.integers(0, 6, n)  # short and long significands
        values = np.round(rng.standard_normal(n) * scale) / scale
        values[rng.random(n) < 0.2] = 1.0  # repeats
        values[rng.integers(0, n, 20)] = STALE
        values[:6] = [-0.0, np.inf, -np.inf, 0.0, STALE, 1e300]
        ts = now + np.cumsum(gaps).astype(np.int64)
        series.append(pr.SeriesSamples([("__name__", f"xt_{kind}"), ("i", str(i))], ts, values))
    # One sample: varint and 64 value bits, all whole bytes: 2.42 adds its spare byte.
    one = pr.SeriesSamples([("__name__", "xt_one")], np.array([now + 5], np.int64), np.array([0.5]))
    series.append(one)
    with _prometheus(tmp_path) as url:
        status, _, text = _post(url + "/api/v1/write", pr.encode_write_request(series), HEADERS)
        assert status == 204, text
        # As Prometheus' client asks: hints carry the range too (its TSDB reads them).
        req = pm.ReadRequest(accepted_response_types=[pm.STREAMED_XOR_CHUNKS])
        q = req.queries.add(start_timestamp_ms=now, end_timestamp_ms=now + 10**8)
        q.matchers.add(type=pm.RE, name="__name__", value="xt_.*")
        q.hints.start_ms, q.hints.end_ms = now, now + 10**8
        body = pr.snappy_encode(req.SerializeToString())
        status, headers, stream = _post(url + "/api/v1/read", body, HEADERS)
    assert status == 200, stream
    assert headers["Content-Type"] == CONTENT_TYPE
    messages = split_frames(stream)
    got = series_of(messages, spare_byte=True)
    want = sorted(series, key=lambda s: sorted(s.labels))
    assert [labels for _, labels, _ in got] == [sorted(s.labels) for s in want]
    for (_, _, samples), s in zip(got, want, strict=True):
        exact = zip(s.ts_ms.tolist(), s.values.view(np.uint64).tolist(), strict=True)
        assert samples == list(exact)
    same = spare = 0
    for m in messages:
        for c in m.chunked_series[0].chunks:
            samples = decode_xor(c.data, spare_byte=True)
            t = np.array([x[0] for x in samples], np.int64)
            v = np.array([x[1] for x in samples], np.uint64).view(np.float64)
            # One chunk of all its samples: 2.42's head cuts by time, may pass 120.
            ours = encode_chunks(t, v, np.array([len(t)]), len(t)).chunk(0)
            if ours == c.data:
                same += 1
            else:  # 2.42's spare zero byte after a stream ending on a whole byte
                assert c.data == ours + b"\x00"
                spare += 1
    assert same + spare >= 7 and same and spare  # every chunk, both kinds of ending


def test_streamed_read_through_the_http_port(
    server_factory: Callable[..., ServerThread],
) -> None:
    """What Prometheus 2.55+ sends (STREAMED_XOR_CHUNKS first, then SAMPLES), over a real
    socket to the server's HTTP port: a stream, not snappy, its frames whole and checked."""
    srv = server_factory(http_port=0)
    http_ = Http(srv.http_port)
    t0 = 1_700_000_000_000
    s = pr.SeriesSamples(
        [("__name__", "up"), ("job", "node")],
        t0 + np.arange(0, 250 * 15_000, 15_000, dtype=np.int64),
        np.where(np.arange(250) % 50 == 49, STALE, np.arange(250) % 7 * 0.5),
    )
    status, body, _ = http_("POST", "/api/v1/write", pr.encode_write_request([s]), **HEADERS)
    assert status == 204, body
    req = pm.ReadRequest(accepted_response_types=[pm.STREAMED_XOR_CHUNKS, pm.SAMPLES])
    for name in ("up", "absent"):
        q = req.queries.add(start_timestamp_ms=t0, end_timestamp_ms=t0 + 10**8)
        q.matchers.add(type=pm.EQ, name="__name__", value=name)
        q.hints.start_ms, q.hints.end_ms = t0, t0 + 10**8
    body = pr.snappy_encode(req.SerializeToString())
    status, stream, headers = http_("POST", "/api/v1/read", body, **HEADERS)
    assert status == 200, stream
    assert headers["Content-Type"] == CONTENT_TYPE and "Content-Encoding" not in headers
    exact = list(zip(s.ts_ms.tolist(), s.values.view(np.uint64).tolist(), strict=True))
    assert series_of(split_frames(stream)) == [(0, sorted(s.labels), exact)]
    del req.accepted_response_types[:]
    req.accepted_response_types.append(5)  # a type this server does not know
    body = pr.snappy_encode(req.SerializeToString())
    status, text, _ = http_("POST", "/api/v1/read", body, **HEADERS)
    assert status == 400 and b"none of the accepted response types [5]" in text
