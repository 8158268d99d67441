"""Streamed remote read (protocol/prom_stream.py, server/prom_remote.py) read as a client would.

Frames are taken apart here with a length reader and a bitwise CRC32C written
from the definitions (the reflected Castagnoli polynomial 0x82F63B78), not
with the module's own :func:`read_frames`; chunks with the independent decoder
of ``test_prom_xor.py``. Then through a real Engine: the streamed answer holds
exactly the samples of the SAMPLES answer, bit for bit.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_prom_xor import STALE, decode_xor

from xtsdb.protocol import prom_messages as pm
from xtsdb.protocol import prom_remote as pr
from xtsdb.protocol.errors import FrameTooLarge, InvalidInput
from xtsdb.protocol.prom_stream import (
    CONTENT_TYPE,
    MAX_FRAME,
    frame,
    negotiate,
    query_frames,
    read_frames,
)
from xtsdb.server.engine import Engine
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


def series_of(
    messages: list[Any],
) -> list[tuple[int, list[tuple[str, str]], list[tuple[int, int]]]]:
    """``(query_index, labels, [(ms, value bits)])`` per series; frames of one series joined."""
    out: list[tuple[int, list[tuple[str, str]], list[tuple[int, int]]]] = []
    for m in messages:
        assert len(m.chunked_series) == 1  # Prometheus' client reads only the first
        (cs,) = m.chunked_series
        labels = [(lb.name, lb.value) for lb in cs.labels]
        samples = []
        for c in cs.chunks:
            assert c.type == pm.CHUNK_XOR
            got = decode_xor(c.data)
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


def test_read_frames_checks_length_crc_and_limit() -> None:
    msg = pm.ChunkedReadResponse(query_index=1)
    msg.chunked_series.add().labels.add(name="__name__", value="m")
    good = frame(msg.SerializeToString())
    assert [m.query_index for m in read_frames(good + good)] == [1, 1]
    bad_crc = good[:1] + bytes([good[1] ^ 1]) + good[2:]
    with pytest.raises(InvalidInput, match="not a ChunkedReadResponse"):
        list(read_frames(frame(b"\x0a\x05")))  # a field that claims 5 bytes, none there
    for broken, error in (
        (bad_crc, InvalidInput),
        (good[:-1], InvalidInput),
        (b"\x80", InvalidInput),
    ):
        with pytest.raises(error):
            list(read_frames(broken))
    with pytest.raises(FrameTooLarge):
        list(read_frames(good, limit=len(msg.SerializeToString()) - 1))


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
