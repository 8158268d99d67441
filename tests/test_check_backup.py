"""Maintenance: ``xtsdb-server check`` (offline verification, ``--repair``) and online backup.

Check tests build a data directory with the engine, damage it on purpose and
read the report. Backup tests run a real server, back it up while a client
keeps writing, start a second server on the copy and compare what both return.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from xtsdb.client import Client, connect
from xtsdb.client.cli import main as cli_main
from xtsdb.protocol.errors import InvalidInput, PermissionDenied
from xtsdb.server.app import ServerThread
from xtsdb.server.backup import backup
from xtsdb.server.check import check
from xtsdb.server.engine import Engine, EngineConfig
from xtsdb.server.engine.container import ContainerFile
from xtsdb.server.engine.datadir import load_or_create_meta
from xtsdb.server.main import main as server_main

SMALL = EngineConfig(chunk_size=256 * 1024, meta_extents=1, block_points=1000, read_workers=1)
TAGS = (1, 2, 3)
T0 = 1_700_000_000_000_000


def make_data_dir(path: Path, points: int = 20_000) -> dict[int, np.ndarray]:
    """A cleanly closed data directory with blocks for every tag; the values written."""
    written = {}
    with Engine.open(path, SMALL) as eng:
        for tag in TAGS:
            ts = T0 + np.arange(points, dtype=np.int64) * 1_000_000
            values = np.sin(np.arange(points) / 50.0) + tag
            eng.write(tag, ts, values)
            written[tag] = values
    return written


def first_block(path: Path) -> tuple[Path, int, int, int]:
    """``(container, chunk_id, absolute body offset, tag)`` of the first block on disk."""
    meta = load_or_create_meta(path, SMALL)
    container = path / "containers" / "c-000000.xtc"
    cf = ContainerFile.open(container, meta.instance_id)
    try:
        scan = cf.scan_chunk(0, meta.instance_id)
        entry = (scan.entries or [])[0]
        return container, scan.chunk_id, cf.geometry.chunk_base(0) + entry.body_off, entry.tag_id
    finally:
        cf.close()


def run_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = server_main(["check", *args])
    return code, capsys.readouterr().out


# -- check ---------------------------------------------------------------------------


def test_check_passes_a_healthy_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_data_dir(tmp_path / "d")
    code, out = run_check(capsys, "--data-dir", str(tmp_path / "d"))
    assert code == 0, out
    assert "result: OK" in out and "blocks: 60" in out
    report = check(tmp_path / "d")
    assert not report.findings and report.points == 3 * 20_000 and report.index_rows == 60
    assert report.sealed >= 1  # so the index rows a start would trust were compared too


def test_check_names_a_block_whose_body_was_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "d"
    make_data_dir(d)
    container, chunk_id, offset, tag = first_block(d)
    with open(container, "r+b") as f:  # flip one byte of the body
        f.seek(offset + 10)
        byte = f.read(1)
        f.seek(offset + 10)
        f.write(bytes([byte[0] ^ 0xFF]))
    code, out = run_check(capsys, "--data-dir", str(d))
    assert code == 1, out
    assert f"DAMAGE  c-000000.xtc chunk {chunk_id}: entry 0: block body CRC mismatch" in out
    assert f"(tag {tag}, 1000 points" in out
    assert "result: DAMAGED (1 problems, 0 repairable" in out
    # --repair rebuilds the index, but cannot invent the lost points: still damaged.
    code, out = run_check(capsys, "--data-dir", str(d), "--repair")
    assert code == 1 and out.count("block body CRC mismatch") == 2


def test_check_repair_rebuilds_a_deleted_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "d"
    written = make_data_dir(d)
    for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"):
        (d / name).unlink(missing_ok=True)
    code, out = run_check(capsys, "--data-dir", str(d))
    assert code == 1 and "index.sqlite3: unusable (index file missing)" in out, out
    code, out = run_check(capsys, "--data-dir", str(d), "--repair")
    assert code == 0, out
    assert out.rstrip().endswith("result: OK") and (d / "index.sqlite3").exists()
    with Engine.open(d, SMALL) as eng:
        for tag, values in written.items():
            np.testing.assert_array_equal(eng.query(tag, 0, 2 * T0).values, values)


def test_check_refuses_what_it_cannot_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], server_factory: Callable[..., ServerThread]
) -> None:
    srv = server_factory()
    code = server_main(["check", "--data-dir", str(srv.data_dir)])
    assert code == 2 and "stop the server" in capsys.readouterr().err
    code = server_main(["check", "--data-dir", str(tmp_path / "nothing")])
    assert code == 2 and "not an xtsdb data directory" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()


# -- backup --------------------------------------------------------------------------


class Writer(threading.Thread):
    """Writes batches of 500 points, round robin over TAGS, each acknowledged before the next."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.acked = 0  # batches acknowledged so far, in write order
        self.stop = threading.Event()
        self.error: BaseException | None = None

    @staticmethod
    def batch(i: int) -> tuple[int, np.ndarray, np.ndarray]:
        ts = T0 + (i // len(TAGS)) * 500 + np.arange(500, dtype=np.int64)
        return TAGS[i % len(TAGS)], ts, np.full(500, float(i))

    def run(self) -> None:
        try:
            with connect(self.url) as client:
                i = 0
                while not self.stop.is_set() and i < 4000:  # bounded
                    client.write(*self.batch(i))
                    i += 1
                    self.acked = i
        except BaseException as exc:  # reported by the test
            self.error = exc


def query_all(client: Client) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for tag in TAGS:
        r = client.query(tag, 0, 2 * T0)
        out[tag] = (r.timestamps.copy(), r.values.copy())
    return out


def test_backup_while_writing_then_restore(
    tmp_path: Path, server_factory: Callable[..., ServerThread]
) -> None:
    # Small WAL segments: the WAL rotates while the backup copies it.
    srv = server_factory(backup_dir=tmp_path / "backups", wal_segment_bytes=64 * 1024)
    writer = Writer(srv.url)
    writer.start()
    try:
        deadline = time.monotonic() + 20
        while writer.acked < 300 and time.monotonic() < deadline and writer.is_alive():
            time.sleep(0.01)
        with connect(srv.url) as client:
            before = writer.acked
            report = client.backup("during", timeout=60)
            after = writer.acked
    finally:
        writer.stop.set()
        writer.join(30)
    assert writer.error is None, writer.error
    assert before >= 300 and after > before, (before, after)  # writes went on meanwhile
    copy = Path(report["path"])
    assert copy == (tmp_path / "backups" / "during").resolve()
    assert not (copy / "LOCK").exists()

    restored = server_factory(data_dir=copy)
    with connect(restored.url) as client:
        got = query_all(client)
    # The copy is a crash-consistent state of one writer: the first k batches, for a k
    # that covers every batch acknowledged before the backup started.
    k = sum(got[tag][0].shape[0] for tag in TAGS) // 500
    assert before <= k <= writer.acked, (before, k, writer.acked)
    for i in range(k):
        tag, ts, values = Writer.batch(i)
        row = (i // len(TAGS)) * 500
        np.testing.assert_array_equal(got[tag][0][row : row + 500], ts)
        np.testing.assert_array_equal(got[tag][1][row : row + 500], values)


def test_backup_of_a_quiet_server_restores_identical_results(
    tmp_path: Path, server_factory: Callable[..., ServerThread], capsys: pytest.CaptureFixture[str]
) -> None:
    srv = server_factory(backup_dir=tmp_path / "backups")
    with connect(srv.url) as client:
        for i in range(30):
            client.write(*Writer.batch(i))
        original = query_all(client)
    assert cli_main(["--url", srv.url, "backup", "quiet"]) == 0
    assert "backup written to" in capsys.readouterr().out
    copy = tmp_path / "backups" / "quiet"
    code = server_main(["check", "--data-dir", str(copy)])
    assert code == 0, capsys.readouterr().out
    restored = server_factory(data_dir=copy)
    with connect(restored.url) as client:
        restored_results = query_all(client)
    for tag in TAGS:
        np.testing.assert_array_equal(restored_results[tag][0], original[tag][0])
        np.testing.assert_array_equal(restored_results[tag][1], original[tag][1])


def test_backup_destination_policy(
    tmp_path: Path, server_factory: Callable[..., ServerThread]
) -> None:
    closed = server_factory()
    with connect(closed.url) as client, pytest.raises(PermissionDenied, match="backup_dir"):
        client.backup("x")
    srv = server_factory(backup_dir=tmp_path / "backups")
    outside = tmp_path / "elsewhere"
    with connect(srv.url) as client:
        for dest in ("../elsewhere", str(outside), str(tmp_path / "backups")):
            with pytest.raises(PermissionDenied, match="only be written under"):
                client.backup(dest)
        client.backup("one")
        with pytest.raises(InvalidInput, match="exists"):
            client.backup("one")
        with pytest.raises(InvalidInput, match="'path'"):
            client.backup("")
    assert not outside.exists()
    assert sorted(os.listdir(tmp_path / "backups")) == ["one"]


def test_check_finds_index_rows_that_disagree_with_the_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A start trusts the rows of a sealed chunk instead of reading its directory, so a
    # wrong row would send queries to the wrong bytes: check must see it, --repair fix it.
    d = tmp_path / "d"
    make_data_dir(d)
    with sqlite3.connect(d / "index.sqlite3") as db:
        db.execute("UPDATE blocks SET body_off = body_off + 8 WHERE chunk_id = 0 AND idx = 3")
    code, out = run_check(capsys, "--data-dir", str(d))
    assert code == 1 and "DAMAGE  index.sqlite3 chunk 0: 2 block rows disagree" in out, out
    code, out = run_check(capsys, "--data-dir", str(d), "--repair")
    assert code == 0 and out.rstrip().endswith("result: OK"), out


@pytest.mark.parametrize("at_call", [1, 3, 6])
def test_backup_while_retention_retires_and_reuses_chunks(tmp_path: Path, at_call: int) -> None:
    # Retention retires chunks (carrying a tombstone forward) and reuses their slots
    # in the middle of the container copy: the backup's stop check is the hook that
    # lets it happen at a chosen point, deterministically.
    hour = 3600 * 1_000_000
    sizes = dict(chunk_size=64 * 1024, meta_extents=1, chunks_per_container=4, block_points=200)
    cfg = EngineConfig(**sizes, read_workers=0, retention_us=10 * hour)
    rng = np.random.default_rng(at_call)
    calls = 0
    with Engine.open(tmp_path / "d", cfg) as eng:
        named = eng.create_tag("FIC101.PV", unit="m3/h").id  # the catalog is copied too
        eng.write(1, np.arange(100) * hour // 100 + 20 * hour, np.ones(100))  # recent
        eng.flush()
        eng.write(3, np.arange(8000), rng.random(8000))  # ancient: rolls to a new chunk
        eng.flush()
        eng.delete(1, 20 * hour, 20 * hour + hour // 2)  # its tombstone sits with old data
        eng.write(3, np.arange(8000, 16000), rng.random(8000))
        eng.flush()

        def retention_now() -> bool:
            nonlocal calls
            calls += 1
            if calls == at_call:
                assert eng.apply_retention(now_us=21 * hour, grace_s=0) >= 1
                new = 30 * hour + np.arange(6000, dtype=np.int64)
                eng.write(4, new, rng.random(6000))  # lands in a reused slot
                eng.flush()
            return False

        report = backup(eng, tmp_path / "copy", retention_now)
        live = {tag: eng.query(tag, 0, 1 << 59) for tag in (1, 3, 4)}
    assert calls >= at_call and report["skipped"] == []
    with Engine.open(tmp_path / "copy", dataclasses.replace(cfg, retention_us=0)) as restored:
        assert restored.catalog.resolve("FIC101.PV") == named
        for tag, points in live.items():
            got = restored.query(tag, 0, 1 << 59)
            np.testing.assert_array_equal(got.timestamps, points.timestamps, err_msg=f"tag {tag}")
            np.testing.assert_array_equal(got.values, points.values, err_msg=f"tag {tag}")
    assert len(live[1]) == 50  # the carried tombstone still masks half of tag 1


def test_check_reports_a_damaged_tag_catalog(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "d"
    make_data_dir(d, points=100)
    with open(d / "catalog.sqlite3", "r+b") as f:
        f.write(b"this is no longer a database")
    code, out = run_check(capsys, "--data-dir", str(d))
    assert code == 1 and "DAMAGE  catalog.sqlite3: damaged (" in out, out
