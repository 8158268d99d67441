"""Faults at the engine boundary, seen through the server: failed fsync, full disk, torn writes.

No mocks where the real thing runs: the server is real (in-process or a subprocess
killed with SIGKILL), the disk-full filesystem is a real size-limited tmpfs, and
damage is done to the real files. The one injected fault is the WAL's
``fdatasync`` raising EIO (the kernel's answer when write-back failed).

Every damage test checks the same promise: the server starts, says what it
repaired (``engine.repairs``, logged as ``recovery: ...``) or refuses the damaged
data with :class:`CorruptionError`, and never answers with wrong data.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xtsdb.client import Client
from xtsdb.protocol.errors import CorruptionError, DiskFull, DurabilityError, XtsdbError
from xtsdb.server.app import ServerThread
from xtsdb.server.engine import Engine, EngineConfig
from xtsdb.server.engine import wal as wal_mod
from xtsdb.server.engine.config import EXTENT
from xtsdb.server.engine.container import DIR_OFFSET, ENTRY_SIZE

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` is a folder of scripts, importable from the root
    sys.path.insert(0, str(ROOT))

from bench.torture import Server  # noqa: E402  (a kill -9-able server subprocess)

CHUNK = 64 * 1024
N_CHUNKS = EngineConfig().chunks_per_container
TINY: dict[str, Any] = {"chunk_size": CHUNK, "meta_extents": 1, "block_points": 200}
# No automatic checkpoint: blocks written by the sealer stay "after the checkpoint".
NO_CHECKPOINT = ["--wal-checkpoint-bytes", "64MiB", "--wal-segment-bytes", "64MiB"]
Factory = Callable[..., ServerThread]
# The sealer thread may die on a full disk (see test_sealer_survives_a_full_disk_in_the_index);
# pytest would report that as a warning of whichever test is running.
quiet_sealer = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def value_of(tag: int, ts: np.ndarray) -> np.ndarray:
    return np.sin(ts / 10.0) + tag


def write_tags(url: str, tags: range, n: int) -> None:
    ts = np.arange(n, dtype=np.int64)
    with Client(url) as db:
        for tag in tags:
            assert db.write(tag, ts, value_of(tag, ts)) == n


def check_tag(db: Client, tag: int, n: int, exact: bool = True) -> int:
    """The points of ``tag`` are right (all ``n`` of them if ``exact``); how many came back."""
    r = db.query(tag, 0, 1 << 40)
    assert np.array_equal(r.values, value_of(tag, r.timestamps)), f"tag {tag}: wrong values"
    assert r.timestamps.size == np.unique(r.timestamps).size
    if exact:
        np.testing.assert_array_equal(r.timestamps, np.arange(n))
    return len(r)


def index_rows(data: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(
        sqlite3.connect(f"file:{data / 'index.sqlite3'}?mode=ro", uri=True)
    ) as c:
        return c.execute(sql).fetchall()


def chunk_at(data: Path, chunk_id: int, offset: int) -> tuple[Path, int]:
    """Container file and absolute offset of ``offset`` bytes into chunk ``chunk_id``."""
    path = data / "containers" / f"c-{chunk_id // N_CHUNKS:06d}.xtc"
    return path, EXTENT + (chunk_id % N_CHUNKS) * CHUNK + offset


def damage(path: Path, offset: int, length: int = 1) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(length)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in old))


def kill_after_blocks(tmp_path: Path, data: Path, n_points: int) -> None:
    """A subprocess server writes ``n_points`` to tag 1, seals blocks, and is SIGKILLed."""
    srv = Server(data, tmp_path / "server.log", ["--block-points", "200", *NO_CHECKPOINT])
    try:
        write_tags(srv.url, range(1, 2), n_points)
        with Client(srv.url) as db:
            deadline = time.monotonic() + 20
            while db.stats()["engine"]["blocks_written"] < n_points // 200:
                assert time.monotonic() < deadline, "the sealer wrote no blocks"
                time.sleep(0.02)
            time.sleep(0.1)  # the index commit follows the block writes
    finally:
        srv.close()  # SIGKILL


def restart(factory: Factory, data: Path, caplog: pytest.LogCaptureFixture) -> ServerThread:
    caplog.clear()
    return factory(data_dir=data, **TINY)


def repairs(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if "recovery:" in r.getMessage())


# -- fsync failure --------------------------------------------------------------------------


def test_failed_fsync_is_not_acknowledged_and_stops_writes(
    server_factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "db"
    srv = server_factory(data_dir=data)
    ts = np.arange(100, dtype=np.int64)
    with Client(srv.url) as db:
        assert db.write(1, ts, ts * 1.0) == 100

        def eio(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(wal_mod, "_datasync", eio)
        with pytest.raises(DurabilityError, match="Input/output"):
            db.write(1, ts + 100, ts * 2.0)
        monkeypatch.undo()  # the disk "works" again: the engine must not believe it
        with pytest.raises(DurabilityError, match="earlier failure"):
            db.write(2, ts, ts * 3.0)
        np.testing.assert_array_equal(db.query(1, 0, 1 << 40).timestamps, ts)  # reads go on
        assert "Input/output" in db.stats()["engine"]["failed"]
    srv.stop()
    again = server_factory(data_dir=data)
    with Client(again.url) as db:
        r = db.query(1, 0, 1 << 40)
        np.testing.assert_array_equal(r.timestamps, ts)  # exactly the acknowledged points
        np.testing.assert_array_equal(r.values, ts * 1.0)
        assert len(db.query(2, 0, 1 << 40)) == 0
        assert db.write(2, ts, ts * 3.0) == 100  # a restart clears the refusal


# -- disk full --------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs: a real ENOSPC (root only; skipped where mount is not allowed)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill_until_disk_full(srv: ServerThread, fs: Path) -> int:
    """Leave ~1.5 MB free, then write batches until DiskFull; the points acknowledged."""
    free = os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize
    (fs / "filler").write_bytes(bytes(max(0, free - 1_500_000)))
    acked = 0
    with Client(srv.url) as db:
        for i in range(2_000):
            ts = np.arange(i * 500, (i + 1) * 500, dtype=np.int64)
            try:
                acked += db.write(1, ts, value_of(1, ts))
            except DiskFull:
                break
        else:
            pytest.fail("the disk never filled up")
        big = np.arange(10**9, 10**9 + 200_000, dtype=np.int64)
        with pytest.raises(DiskFull):
            db.write(1, big, value_of(1, big))  # refused, not half-written
        check_tag(db, 1, acked)  # reads still work and see every acknowledged point
    return acked


@quiet_sealer
def test_disk_full_refuses_writes_and_loses_nothing_acknowledged(
    small_fs: Path, server_factory: Factory
) -> None:
    data = small_fs / "db"
    srv = server_factory(data_dir=data, **TINY)
    acked = fill_until_disk_full(srv, small_fs)
    assert acked > 0
    srv.stop()  # a graceful stop on a full disk ends cleanly: the WAL replays at restart
    (small_fs / "filler").unlink()
    again = server_factory(data_dir=data, **TINY)
    with Client(again.url) as db:
        check_tag(db, 1, acked)
        assert db.write(1, [10**9], [1.0]) == 1  # with space freed, a restart writes again


def fill_to_the_last_byte(fs: Path) -> Path:
    """A filler file that leaves not one free block on ``fs``."""
    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(bytes(size))
    assert os.statvfs(fs).f_bavail == 0
    return filler


@quiet_sealer
def test_close_on_a_full_disk_ends_cleanly_and_loses_nothing(small_fs: Path) -> None:
    # Deterministic form of the graceful stop above: the disk is full when close() seals
    # and writes its checkpoint. close() must return (the WAL still holds every point).
    data, cfg = small_fs / "db", EngineConfig(**TINY, read_workers=0)
    eng = Engine.open(data, cfg)
    ts = np.arange(5_000, dtype=np.int64)
    assert eng.write(1, ts, value_of(1, ts)) > 0
    filler = fill_to_the_last_byte(small_fs)
    eng.close()  # no OSError, no DiskFull: the shutdown itself is clean
    filler.unlink()
    with Engine.open(data, cfg) as again:
        got = again.query(1, 0, 1 << 40)
        np.testing.assert_array_equal(got.timestamps, ts)
        np.testing.assert_array_equal(got.values, value_of(1, ts))


@quiet_sealer
def test_writes_resume_once_space_is_freed(small_fs: Path, server_factory: Factory) -> None:
    srv = server_factory(data_dir=small_fs / "db", **TINY)
    fill_until_disk_full(srv, small_fs)
    (small_fs / "filler").unlink()
    with Client(srv.url) as db:
        assert db.write(1, [10**9], [1.0]) == 1


@quiet_sealer
def test_sealer_survives_a_full_disk_in_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a full disk does to SQLite (seen on the tmpfs above, but only when SQLite is
    # the first to hit it), injected once so the test is deterministic.
    from xtsdb.server.engine.index import MetaIndex

    real, calls = MetaIndex.add_blocks, []

    def full_once(self: MetaIndex, entries: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database or disk is full")
        real(self, entries)

    monkeypatch.setattr(MetaIndex, "add_blocks", full_once)
    with Engine.open(tmp_path / "db", EngineConfig(**TINY, read_workers=0)) as eng:
        ts = np.arange(1000, dtype=np.int64)
        eng.write(1, ts, value_of(1, ts))
        deadline = time.monotonic() + 3
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # a live sealer retries within a second
        assert eng._sealer.is_alive() and len(calls) >= 2


# -- torn writes: block bodies ------------------------------------------------------------------


def test_torn_block_after_the_checkpoint_is_replayed_from_the_wal(
    tmp_path: Path, server_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "db"
    kill_after_blocks(tmp_path, data, 1000)
    [(chunk, off, length, max_lsn)] = index_rows(
        data, "SELECT chunk_id, body_off, body_len, max_lsn FROM blocks WHERE idx = 2"
    )
    assert max_lsn > wal_mod.read_checkpoint(data / "wal")  # its points are still in the WAL
    damage(*chunk_at(data, chunk, off + length // 2), length=8)
    srv = restart(server_factory, data, caplog)
    assert "torn after the checkpoint" in repairs(caplog)
    with Client(srv.url) as db:
        check_tag(db, 1, 1000)


def test_damaged_block_before_the_checkpoint_is_an_error_never_data(
    tmp_path: Path, server_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "db"
    srv = server_factory(data_dir=data, **TINY)
    write_tags(srv.url, range(3), 2000)
    srv.stop()  # a clean stop seals and checkpoints: the WAL no longer holds these points
    first_block = "SELECT chunk_id, body_off, body_len, last_ts FROM blocks WHERE tag_id = 1"
    [(chunk, off, length, last_ts)] = index_rows(data, first_block + " ORDER BY first_ts LIMIT 1")
    damage(*chunk_at(data, chunk, off + length // 2))
    srv = restart(server_factory, data, caplog)
    with Client(srv.url) as db:
        with pytest.raises(CorruptionError, match="CRC"):
            db.query(1, 0, 1 << 40)
        r = db.query(1, last_ts + 1, 1 << 40)  # the rest of the tag is still readable
        np.testing.assert_array_equal(r.timestamps, np.arange(last_ts + 1, 2000))
        check_tag(db, 0, 2000)
        check_tag(db, 2, 2000)
        assert db.stats()["server"]["errors"]["corruption"] == 1


# -- torn writes: directory entries and chunk headers --------------------------------------------


def test_torn_directory_entry_after_the_checkpoint_is_replayed(
    tmp_path: Path, server_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "db"
    kill_after_blocks(tmp_path, data, 1000)
    [(chunk,)] = index_rows(data, "SELECT chunk_id FROM blocks WHERE idx = 1")
    damage(*chunk_at(data, chunk, DIR_OFFSET + 1 * ENTRY_SIZE + 30), length=4)
    srv = restart(server_factory, data, caplog)
    assert "directory entry 1" in repairs(caplog)
    with Client(srv.url) as db:
        check_tag(db, 1, 1000)


def sealed_data(server_factory: Factory, data: Path) -> int:
    """Three tags of 20,000 points in several sealed chunks; a sealed chunk id."""
    srv = server_factory(data_dir=data, **TINY)
    write_tags(srv.url, range(3), 20_000)
    srv.stop()
    sealed = index_rows(data, "SELECT chunk_id FROM chunks WHERE sealed = 1 ORDER BY chunk_id")
    assert len(sealed) >= 2
    chunk: int = sealed[0][0]
    return chunk


def test_damaged_directory_entry_of_a_sealed_chunk(
    tmp_path: Path, server_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "db"
    chunk = sealed_data(server_factory, data)
    damage(*chunk_at(data, chunk, DIR_OFFSET + 3 * ENTRY_SIZE + 20), length=4)
    srv = restart(server_factory, data, caplog)
    with Client(srv.url) as db:  # the index still holds the entry: nothing is lost
        for tag in range(3):
            check_tag(db, tag, 20_000)
    srv.stop()
    for p in data.glob("index.sqlite3*"):
        p.unlink()  # now the damaged entry is all there is
    srv = restart(server_factory, data, caplog)
    assert f"chunk {chunk}: directory entry 3 damaged" in repairs(caplog)
    with Client(srv.url) as db:
        got = [check_tag(db, tag, 20_000, exact=False) for tag in range(3)]
    assert sum(got) < 3 * 20_000  # the block it described is reported missing, not guessed
    assert sorted(got)[1:] == [20_000, 20_000]


def test_damaged_chunk_header_is_reported_not_silently_dropped(
    tmp_path: Path, server_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "db"
    chunk = sealed_data(server_factory, data)
    damage(*chunk_at(data, chunk, 20))  # inside the chunk id field of the header
    try:
        srv = restart(server_factory, data, caplog)
    except XtsdbError:
        return  # refusing to start on damage is an honest answer
    with Client(srv.url) as db:
        try:
            got = [check_tag(db, tag, 20_000, exact=False) for tag in range(3)]
        except CorruptionError:
            return  # refused at query time: honest too
    assert sum(got) == 3 * 20_000 or f"chunk {chunk}" in repairs(caplog)


# -- torn writes: the SQLite index -----------------------------------------------------------------


def test_truncated_index_is_rebuilt_from_the_chunks(
    tmp_path: Path, server_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "db"
    sealed_data(server_factory, data)
    index = data / "index.sqlite3"
    os.truncate(index, index.stat().st_size // 2)
    srv = restart(server_factory, data, caplog)
    assert "index rebuilt" in repairs(caplog)
    with Client(srv.url) as db:
        for tag in range(3):
            check_tag(db, tag, 20_000)


def test_torn_index_sectors_never_give_wrong_answers(
    tmp_path: Path, server_factory: Factory
) -> None:
    # A torn write leaves whole 512-byte sectors of a page old or zeroed. Whatever sector
    # is hit, the engine opens and every query is exact or refused, never wrong.
    data = tmp_path / "db"
    sealed_data(server_factory, data)
    index = data / "index.sqlite3"
    good = index.read_bytes()
    rng = random.Random(5)
    outcomes: dict[str, int] = {}
    for _ in range(25):
        torn = bytearray(good)
        sector = rng.randrange(len(good) // 512)
        torn[sector * 512 : (sector + 1) * 512] = bytes(512)
        index.write_bytes(bytes(torn))
        with Engine.open(data, EngineConfig(**TINY, read_workers=0)) as eng:
            kind = "rebuilt" if any("index rebuilt" in r for r in eng.repairs) else "used"
            for tag in range(3):
                try:
                    p = eng.query(tag, 0, 1 << 40)
                except CorruptionError:
                    kind += "+refused"
                    continue
                np.testing.assert_array_equal(p.timestamps, np.arange(20_000))
                np.testing.assert_array_equal(p.values, value_of(tag, p.timestamps))
        outcomes[kind] = outcomes.get(kind, 0) + 1
        index.write_bytes(good)
    assert outcomes.get("rebuilt", 0) >= 1, outcomes


def test_logged_repairs_come_from_engine_repairs(
    tmp_path: Path, server_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    # What the operator sees: each repair is one WARNING line from the engine's logger.
    data = tmp_path / "db"
    sealed_data(server_factory, data)
    (data / "index.sqlite3").write_bytes(b"not sqlite" * 100)
    with caplog.at_level(logging.WARNING):
        restart(server_factory, data, caplog)
    lines = [r for r in caplog.records if "recovery:" in r.getMessage()]
    assert lines and all(r.levelno == logging.WARNING for r in lines)
    assert lines[0].name == "xtsdb.engine"


def test_bit_rot_in_the_index_never_stops_the_engine(tmp_path: Path) -> None:
    data, cfg = tmp_path / "db", EngineConfig(**TINY, read_workers=0)
    with Engine.open(data, cfg) as eng:
        for tag in range(3):
            ts = np.arange(20_000, dtype=np.int64)
            eng.write(tag, ts, value_of(tag, ts))
        eng.flush()
    index = data / "index.sqlite3"
    raw = bytearray(index.read_bytes())
    raw[21773] ^= 1 << 4  # found by a seeded sweep of single-bit flips
    index.write_bytes(bytes(raw))
    for p in data.glob("index.sqlite3-*"):
        p.unlink()
    with Engine.open(data, cfg) as eng:
        for tag in range(3):
            try:
                p = eng.query(tag, 0, 1 << 40)
            except CorruptionError:
                continue
            np.testing.assert_array_equal(p.values, value_of(tag, p.timestamps))


# -- the document these tests back -----------------------------------------------------------


def test_guarantees_doc_names_only_real_tests() -> None:
    import re

    doc = (ROOT / "docs" / "guarantees.md").read_text()
    named = set(re.findall(r"`(test_\w+\.py)::(test_\w+)`", doc))
    assert len(named) > 40
    for file, test in sorted(named):
        source = (ROOT / "tests" / file).read_text()
        assert re.search(rf"^(async )?def {test}\(", source, re.M), f"{file}::{test} not found"
