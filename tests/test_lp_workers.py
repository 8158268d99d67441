"""Line protocol parsed in the worker processes: the very batch an inline parse gives.

``influx_parse.parse_body`` copies a body into the workers' arenas, cut into
one part per worker, and merges what they parsed. Every test compares it with
:func:`parse` of the whole body (names and their order, series, times, values
bit for bit, types, line numbers, errors, line count) and checks, by the
workers' job counters, that the workers really did the parsing, so a path that
quietly fell back to parsing inline could not pass. A worker killed with -9
mid-parse must cost an inline parse of its part, never a wrong answer.
"""

from __future__ import annotations

import http.client
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lp_corpus import ADVERSARIAL, random_line
from test_lp_columnar import _PIECES, _PLAIN

from xtsdb.client import connect
from xtsdb.protocol.line_protocol import PRECISIONS, ParsedBatch, parse
from xtsdb.server.app import ServerThread
from xtsdb.server.engine import Engine, EngineConfig
from xtsdb.server.engine.workers import WorkerPool
from xtsdb.server.influx_parse import PARSE_IN_WORKERS_BYTES, cut, merge, parse_body
from xtsdb.server.influx_write import prepare


class Retries(logging.Handler):
    """Counts the warnings of parts parsed again inline (a worker failed or died)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "parsing inline" in record.getMessage()


RETRIES = Retries()


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(2, 64 * 1024 * 1024)
    p.start_all()
    logging.getLogger("xtsdb.server").addHandler(RETRIES)
    try:
        yield p
    finally:
        logging.getLogger("xtsdb.server").removeHandler(RETRIES)
        p.close()


def jobs(pool: WorkerPool) -> int:
    with pool.take(pool.size) as ws:
        return sum(w.jobs for w in ws)


def assert_same(a: ParsedBatch, b: ParsedBatch) -> None:
    assert a.names == b.names
    for col in ("series", "ts", "point_lines", "kinds"):
        assert np.array_equal(getattr(a, col), getattr(b, col)), col
        assert getattr(a, col).dtype == getattr(b, col).dtype, col
    assert a.values.tobytes() == b.values.tobytes()
    assert a.errors == b.errors
    assert a.lines == b.lines


def both(pool: WorkerPool, body: bytes, precision: str = "ns") -> ParsedBatch:
    """Parse in the workers (parts of any size) and inline; fail on any difference,
    or if a worker failed and its part was parsed again inline."""
    retries = RETRIES.count
    got = parse_body(pool, body, precision, 123, min_bytes=0, min_part=1)
    assert RETRIES.count == retries
    assert_same(got, parse(body, precision, 123))
    return got


def telegraf(lines: int, hosts: int = 7, start: int = 0) -> bytes:
    return b"".join(
        f"cpu,host=h{i % hosts},dc=eu user={i * 0.5},idle={i}i,ok=t {1700000000 + i}\n".encode()
        for i in range(start, start + lines)
    )


def test_plain_body_is_parsed_by_both_workers(pool: WorkerPool) -> None:
    body = telegraf(3000)
    before = jobs(pool)
    got = both(pool, body, "s")
    assert jobs(pool) - before == 2  # two parts, one per worker, none inline
    assert len(got) == 9000 and got.errors == [] and len(got.names) == 21


def test_a_body_with_quotes_or_backslashes_is_not_cut(pool: WorkerPool) -> None:
    # A string may hold a newline: only the whole body parses it as influxd does.
    body = telegraf(500) + b'm s="a\nb",v=1 5\n' + telegraf(500, start=500)
    before = jobs(pool)
    got = both(pool, body)
    assert jobs(pool) - before == 1
    assert got.errors and got.lines == 1001


def test_an_error_before_the_last_part_means_a_whole_parse(pool: WorkerPool) -> None:
    # 'm.f' is met on a refused line of the first half, before 'n.g': a whole parse
    # names it first. Merging the halves as they are would name it after 'n.g'.
    first = b"m f=oops 1\nn g=1 2\n" + b"n g=1 3\n" * 3000
    body = first + b"m f=1 4\n" * 3000
    halves = cut(body, 2)
    assert b"oops" in halves[0][0] and b"m f=1" not in halves[0][0]
    naive = merge([(parse(p, "ns", 1), n) for p, n in halves])
    whole = parse(body, "ns", 1)
    assert naive.names != whole.names == ["m.f", "n.g"]
    both(pool, body)


def test_corpus_lines_mixed_with_plain_ones(pool: WorkerPool) -> None:
    rng = random.Random(16)
    before = jobs(pool)
    for _ in range(60):
        lines = [
            random_line(rng) if rng.random() < 0.3 else f"p,h=x v={rng.random()!r} 7".encode()
            for _ in range(rng.randint(1, 40))
        ]
        both(pool, b"\n".join(lines), rng.choice(sorted(PRECISIONS)))
    both(pool, b"\n".join(ADVERSARIAL))
    assert jobs(pool) - before >= 61


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(_PLAIN, st.lists(_PIECES, max_size=12).map("".join)), max_size=16),
    st.sampled_from(sorted(PRECISIONS)),
)
def test_property_random_and_adversarial_bodies(
    pool: WorkerPool, lines: list[str], precision: str
) -> None:
    both(pool, "\n".join(lines).encode("utf-8", "surrogateescape"), precision)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_property_random_bytes(pool: WorkerPool, body: bytes) -> None:
    both(pool, body)


def test_columns_larger_than_the_output_arena_come_back_in_the_answer(
    pool: WorkerPool, caplog: pytest.LogCaptureFixture
) -> None:
    # 5 body bytes a point, 29 bytes of columns each: 150 K points overflow the
    # workers' 4 MiB output arenas, which the parent grows by 4 bytes a body byte.
    keys = [f"{a}{b}" for a in "abcdefgh" for b in "abcdefgh"]
    line = "m " + ",".join(f"{k}=1" for k in keys) + " 5\n"
    body = (line * 2350).encode()
    before = jobs(pool)
    caplog.set_level(logging.WARNING, "xtsdb.server")
    got = parse_body(pool, body, "s", 1, min_bytes=0, min_part=len(body))
    assert jobs(pool) - before == 1 and not caplog.records  # one worker did it, no retry
    with pool.take(pool.size) as ws:
        assert 29 * len(got) > max(w.arenas["out"].size for w in ws)
    assert_same(got, parse(body, "s", 1))


def test_small_bodies_stay_inline(pool: WorkerPool) -> None:
    body = telegraf(10)
    before = jobs(pool)
    assert_same(parse_body(pool, body, "s", 1, min_bytes=len(body) + 1), parse(body, "s", 1))
    assert_same(parse_body(pool, body, "s", 1, min_bytes=-1), parse(body, "s", 1))
    assert jobs(pool) == before


def test_busy_workers_mean_an_inline_parse_without_waiting(pool: WorkerPool) -> None:
    body = telegraf(3000)
    before = jobs(pool)
    with pool.take(pool.size) as held:  # as the sealer holds them for a round
        assert len(held) == pool.size
        t0 = time.monotonic()
        assert_same(parse_body(pool, body, "s", 1, min_bytes=0), parse(body, "s", 1))
        assert time.monotonic() - t0 < 5  # not stuck until the holder gives them back
    assert jobs(pool) == before


def test_a_body_beyond_the_arena_cap_is_parsed_inline() -> None:
    small = WorkerPool(1, 64 * 1024)
    try:
        small.start_all()
        body = telegraf(4000)
        assert len(body) > 64 * 1024
        before = jobs(small)
        assert_same(parse_body(small, body, "s", 1, min_bytes=0), parse(body, "s", 1))
        assert jobs(small) == before
    finally:
        small.close()


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_a_worker_killed_mid_parse_costs_an_inline_parse() -> None:
    victim = WorkerPool(2, 64 * 1024 * 1024)
    try:
        pids = victim.start_all()
        body = telegraf(120_000, hosts=50)  # about 0.2 s of parsing in each worker
        expect = parse(body, "s", 1)
        ticks = {p: _cpu_ticks(p) for p in pids}
        got: list[ParsedBatch] = []
        t = threading.Thread(target=lambda: got.append(parse_body(victim, body, "s", 1)))
        t.start()
        deadline = time.monotonic() + 20
        while all(_cpu_ticks(p) == ticks[p] for p in pids):  # until a worker parses
            assert time.monotonic() < deadline, "no worker started parsing"
            time.sleep(0.001)
        for p in pids:
            os.kill(p, signal.SIGKILL)
        t.join(60)
        assert not t.is_alive() and len(got) == 1
        assert_same(got[0], expect)
        assert victim.replaced >= 1
        both(victim, telegraf(2000))  # the replacements parse again
    finally:
        victim.close()


def test_prepare_with_workers_stores_what_inline_stores(tmp_path: Path) -> None:
    """The whole /write step: tags named and created in the server process alike."""
    body = telegraf(5000, hosts=40) + b"bad line\n" + telegraf(100, start=5000)
    out = {}
    for workers in (0, 2):
        with Engine.open(tmp_path / f"w{workers}", EngineConfig(workers=workers)) as e:
            before = jobs(e._procs) if e._procs is not None else 0  # starts the workers
            prep = prepare(e, body, "s", 0, 10, parse_min_bytes=0)
            for q in prep.batches:
                e.write_batches([q.batch])
            names = sorted(i.name for i in e.catalog.find("*", 1000))
            pts = {n: e.query(e.catalog.resolve(n), 0, 1 << 60) for n in names}
            out[workers] = (prep.errors, prep.lines, prep.created, names, pts)
            if workers:
                assert e._procs is not None and jobs(e._procs) - before == 2  # both parts
    a, b = out[0], out[2]
    assert a[:4] == b[:4] and a[0] == [(10 + 5001, a[0][0][1])]
    for n in a[3]:
        assert np.array_equal(a[4][n].timestamps, b[4][n].timestamps)
        assert a[4][n].values.tobytes() == b[4][n].values.tobytes()


def _grandchildren() -> list[int]:
    """This process's workers: children of the forkserver, itself a child of this process."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    me = os.getpid()
    return [p for p, pp in parents.items() if parents.get(pp) == me]


def test_write_survives_workers_killed_mid_parse(
    server_factory: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    """kill -9 of every worker while /write parses a 3 MB body: 204, every point stored."""
    others = set(_grandchildren())  # other tests' pools (this module's fixture)
    srv = server_factory(http_port=0, workers=2)
    body = telegraf(40_000, hosts=40)
    assert len(body) > PARSE_IN_WORKERS_BYTES
    conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=60)

    def post(data: bytes) -> int:
        conn.request("POST", "/write?precision=s", data)
        resp = conn.getresponse()
        resp.read()
        return resp.status

    caplog.set_level(logging.WARNING, "xtsdb.server")
    try:
        assert post(body) == 204  # the workers start and parse it
        with connect(srv.url) as db:
            db.flush_server()  # its blocks sealed (encoded in the workers too) before the kill
        pids = [p for p in _grandchildren() if p not in others]
        assert len(pids) == 2
        ticks = {p: _cpu_ticks(p) for p in pids}
        status: list[int] = []
        t = threading.Thread(target=lambda: status.append(post(body.replace(b" 17", b" 27"))))
        t.start()
        deadline = time.monotonic() + 20
        while all(_cpu_ticks(p) == ticks[p] for p in pids):
            assert time.monotonic() < deadline, "no worker started parsing"
            time.sleep(0.001)
        for p in pids:
            os.kill(p, signal.SIGKILL)
        t.join(60)
        assert status == [204]
        # The workers died during the job (not after it): their parts were parsed again.
        assert any("parsing inline" in r.getMessage() for r in caplog.records)
    finally:
        conn.close()
    with connect(srv.url) as db:
        assert db.stats()["server"]["points_written"] == 2 * 3 * 40_000
        got = db.query("cpu,dc=eu,host=h0.user", 0, 1 << 62)
        assert len(got) == 2 * 1000 and got.values[:2].tolist() == [0.0, 20.0]
