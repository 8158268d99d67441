"""The large-query path without copies: reused result buffers, frames that let go of
their arrays, answers received in place and unpacked into views.

Reuse is checked both ways: a buffer is reused once nothing refers to it (else
the speed-up silently vanishes), and never while a result, a view of it or a
frame in flight still refers to it (else an answer would change under its reader).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from xtsdb.client import AsyncClient, QueryResult, connect
from xtsdb.protocol import QUERY, FrameDecoder, encode_frame, encode_frame_parts
from xtsdb.protocol.buffers import ReusableBuffers
from xtsdb.protocol.errors import ProtocolError
from xtsdb.protocol.frames import BIN_INLINE_MAX, decode_body
from xtsdb.server.app import ServerThread
from xtsdb.server.engine import Engine
from xtsdb.server.engine.config import EngineConfig

N = 100_000  # above the pool's threshold, small enough to stay fast


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine.open(tmp_path / "d", EngineConfig(block_points=4096))
    ts = np.arange(N, dtype=np.int64) * 1000
    eng.write(1, ts, np.round(np.sin(np.arange(N) / 50.0), 4), np.full(N, 192, np.uint8))
    eng.write(2, ts, np.arange(N, dtype=np.float64), np.full(N, 192, np.uint8))
    eng.flush()
    yield eng
    eng.close()


def test_frame_parts_release_the_arrays_without_the_garbage_collector() -> None:
    # A recursive closure in the encoder made a reference cycle that kept the
    # result's views alive until a collection: the pool could never reuse them.
    ts = np.arange(N, dtype=np.int64)
    owner = weakref.ref(ts)
    gc.disable()
    try:
        parts = encode_frame_parts(QUERY.reply(1, ts, np.zeros(N), np.zeros(N, np.uint8)))
        assert any(isinstance(p, memoryview) for p in parts)
        del parts, ts
        assert owner() is None
    finally:
        gc.enable()


def test_query_buffers_are_reused_once_released_and_never_while_held(engine: Engine) -> None:
    pool = engine._reads.reader.pool.buffers
    first = engine.query(1, 0, N * 1000)
    kept = first.values.copy()
    view = first.values[::-1].copy().data.cast("B")  # a copy: must not pin anything
    del view
    held = first.timestamps[10:20]  # a small slice pins the whole buffer
    frame = encode_frame_parts(
        QUERY.reply(1, first.timestamps, first.values, first.qualities, {"blocks_read": 1})
    )
    del first
    allocated = pool.allocated
    second = engine.query(2, 0, N * 1000)  # another tag, another buffer: the first is held
    assert pool.allocated == allocated + 1
    assert np.array_equal(held, np.arange(10, 20) * 1000)
    assert np.array_equal(second.values, np.arange(N, dtype=np.float64))
    del second
    reused = pool.reused
    third = engine.query(1, 0, N * 1000)  # the second's buffer is free again
    assert pool.reused == reused + 1
    assert np.array_equal(third.values.view(np.uint64), kept.view(np.uint64))
    joined = b"".join(bytes(p) for p in frame)  # the frame still reads the first answer
    assert decode_body(joined[4:])["values"] == kept.tobytes()
    del held, frame, third
    fourth = engine.query(2, 0, N * 1000)
    assert pool.reused == reused + 2
    assert np.array_equal(fourth.values, np.arange(N, dtype=np.float64))


def test_descending_limit_and_tail_memory_read_the_pool_correctly(engine: Engine) -> None:
    ts = np.arange(N, N + 10, dtype=np.int64) * 1000
    engine.write(1, ts, np.full(10, -0.0), np.full(10, 7, np.uint8))  # stays in memory
    every = engine.query(1, 0, (N + 10) * 1000)
    assert len(every) == N + 10 and every.stats.points_from_memory == 10
    assert np.array_equal(every.values[-10:].view(np.uint64), np.full(10, -0.0).view(np.uint64))
    newest = engine.query(1, 0, (N + 10) * 1000, limit=15, descending=True)
    assert np.array_equal(newest.timestamps, every.timestamps[::-1][:15])
    assert newest.more


# -- receiving: views over the buffer the frame was received in ---------------------


def _answer(n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(1, 1000, n)).astype(np.int64)
    values = rng.standard_normal(n)
    values[:3] = (np.nan, -0.0, np.inf)
    q = rng.integers(0, 256, n).astype(np.uint8)
    return encode_frame(QUERY.reply(7, ts, values, q, {"blocks_read": 3}, True))


def _recv_into(dec: FrameDecoder, stream: bytes, piece: int) -> list[dict[str, object]]:
    """Feed ``stream`` as a socket's recv_into would, ``piece`` bytes at most a call."""
    at, out = 0, []
    while at < len(stream):
        buf = dec.read_buffer(piece)
        n = min(len(buf), piece, len(stream) - at)
        buf[:n] = stream[at : at + n]
        del buf
        dec.received(n)
        at += n
        out += list(dec)
    return out


@pytest.mark.parametrize("piece", [5, 4096, 1 << 18, 1 << 30])
def test_received_in_place_equals_decoded_and_views_its_buffer(piece: int) -> None:
    small = encode_frame({"id": 1, "ok": True, "n": 5})
    big, other = _answer(40_000), _answer(50_000, 1)  # bodies over VIEW_MIN
    stream = small + big + small + other
    dec = FrameDecoder(views=True)
    got = _recv_into(dec, stream, piece)
    want = [decode_body(f[4:]) for f in (small, big, small, other)]
    assert len(got) == 4 and dec.buffered == 0
    for g, w in zip(got, want, strict=True):
        assert {k: bytes(v) if isinstance(v, memoryview) else v for k, v in g.items()} == w
    answer = QUERY.parse_answer(got[1])
    assert isinstance(got[1]["values"], memoryview)
    assert not answer.values.flags.writeable and not answer.values.flags.owndata
    assert answer.values.view(np.uint64)[:3].tolist() == (
        np.array([np.nan, -0.0, np.inf]).view(np.uint64).tolist()
    )


def test_received_answers_are_not_overwritten_by_the_next() -> None:
    buffers = ReusableBuffers(64 * 1024 * 1024)
    dec = FrameDecoder(views=True, buffers=buffers)
    frames = [_answer(40_000, seed) for seed in range(4)]
    kept = []
    for seed, frame in enumerate(frames):
        [msg] = _recv_into(dec, frame, 1 << 16)
        answer = QUERY.parse_answer(msg)
        if seed % 2 == 0:
            kept.append((seed, answer.values))  # held: its buffer must not be reused
    assert buffers.allocated == 3 and buffers.reused == 1  # seed 1's buffer went to seed 2
    for seed, values in kept:
        want = QUERY.parse_answer(decode_body(frames[seed][4:])).values
        assert np.array_equal(values.view(np.uint64), want.view(np.uint64))


def _message() -> st.SearchStrategy[dict[str, object]]:
    leaf = (
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False)
        | st.text(max_size=40)
        | st.binary(max_size=300)
        | st.integers(0, 3).map(lambda k: bytes(range(256)) * (1 << (k + 8)))
    )
    tree = st.recursive(
        leaf,
        lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids),
        max_leaves=20,
    )
    return st.dictionaries(st.text(max_size=12), tree, max_size=8)


@settings(max_examples=200, deadline=None)
@given(_message(), st.integers(0, 2**32))
def test_view_decoding_agrees_with_msgpack_on_any_body(msg: dict[str, object], seed: int) -> None:
    body = msgpack.packb(msg, use_bin_type=True)
    got = decode_body(body, views=True)
    assert {k: bytes(v) if isinstance(v, memoryview) else v for k, v in got.items()} == msg
    for value in got.values():
        if isinstance(value, memoryview):
            assert value.readonly and len(value) >= BIN_INLINE_MAX
    # Damaged bodies: both decoders refuse, or both give the same message.
    rng = np.random.default_rng(seed)
    bad = bytearray(body)
    cuts = [bytes(bad[: int(rng.integers(0, len(bad) + 1))])]
    if bad:
        bad[int(rng.integers(0, len(bad)))] = int(rng.integers(0, 256))
        cuts.append(bytes(bad))
    for damaged in cuts:
        try:
            want = decode_body(damaged)
        except ProtocolError:
            with pytest.raises(ProtocolError):
                decode_body(damaged, views=True)
            continue
        got = decode_body(damaged, views=True)
        plain = {k: bytes(v) if isinstance(v, memoryview) else v for k, v in got.items()}
        assert msgpack.packb(plain) == msgpack.packb(want)  # bytes: a NaN equals itself


@pytest.mark.parametrize(
    "body",
    [
        b"\x81\xa1a\xc6\xff\xff\xff\xff",  # a bin longer than the body
        b"\x81\xa1a" + b"\x91" * 5000 + b"\xc0",  # nesting beyond any limit
        b"\x81\xa1a\xdd\xff\xff\xff\xff",  # an array claiming 4 G items
        b"\x81\xa1a\xc1",  # the never-used type byte
        b"\x81\xa1a\xc0\xc0",  # trailing bytes
        b"\x92\xc0\xc0",  # not a map
        b"\x81\x01\xc0",  # a key that is not a string
    ],
)
def test_view_decoding_refuses_hostile_bodies(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_body(body)
    with pytest.raises(ProtocolError):
        decode_body(body, views=True)


# -- both clients against a real server ------------------------------------------------

M = 120_000  # answers of ~2 MB: received in buffers of their own


def _points() -> tuple[np.ndarray, np.ndarray]:
    ts = np.arange(M, dtype=np.int64) * 10
    values = np.round(np.cos(np.arange(M) / 30.0), 3)
    values[::1000] = -0.0
    values[5::1000] = np.frombuffer(np.uint64(0x7FF8_0000_DEAD_BEEF).tobytes(), np.float64)[0]
    return ts, values


def _check(got: QueryResult, lo: int, values: np.ndarray) -> None:
    want = values[lo : lo + len(got)]
    assert len(got) > 50_000
    assert np.array_equal(got.values.view(np.uint64), want.view(np.uint64))  # NaN payloads
    assert not got.values.flags.owndata and not got.values.flags.writeable  # a view, safe


def test_sync_client_answers_stay_intact_while_held(server: ServerThread) -> None:
    ts, values = _points()
    with connect(server.url) as db:
        db.write(3, ts, values)
        db.flush_server()
        first = db.query(3, 0, M * 10)
        second = db.query(3, 20_000 * 10, M * 10)  # first held: another buffer
        _check(first, 0, values)
        _check(second, 20_000, values)
        buffers = db._core.buffers
        allocated = buffers.allocated
        del first
        third = db.query(3, 10_000 * 10, M * 10)  # first's buffer is free again
        assert buffers.allocated == allocated and buffers.reused >= 1
        _check(second, 20_000, values)
        _check(third, 10_000, values)


async def test_async_client_receives_in_place_and_answers_stay_intact(
    server: ServerThread,
) -> None:
    await _async_round(server)


def test_async_client_on_uvloop(server: ServerThread) -> None:
    # uvloop's transports are not asyncio.Transport subclasses and call the
    # BufferedProtocol methods their own way: the benchmarks and the server run on it.
    uvloop.run(asyncio.wait_for(_async_round(server), 10))


async def _async_round(server: ServerThread) -> None:
    ts, values = _points()
    async with await AsyncClient.connect(server.url) as db:
        await db.write(4, ts, values)
        await db.flush_server()
        answers = await asyncio.gather(*(db.query(4, k * 10_000 * 10, M * 10) for k in range(4)))
        for k, got in enumerate(answers):
            _check(got, k * 10_000, values)
        assert db._core.buffers.allocated >= 4  # all four held at once: four buffers
