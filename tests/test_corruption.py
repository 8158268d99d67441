"""Storage trust: one damaged byte or page never makes data silently wrong or missing.

Regression tests for the four defects outside testing found (a directory check
that was a constant, unchecked chunk state bytes, a zeroed first page taken for
a never-used slot, a damaged directory entry taken for a torn tail), then a
bounded, deterministic run of the corruption campaign of ``bench/corrupt.py``.
Every test damages real files of a cleanly closed engine and opens it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import set_format_version

from xtsdb.protocol.errors import FormatVersionError
from xtsdb.server.check import check
from xtsdb.server.engine import Engine, EngineConfig
from xtsdb.server.engine.config import EXTENT
from xtsdb.server.engine.container import DIR_OFFSET, ENTRY_SIZE, FLAGS_OFFSET

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` is a folder of scripts, importable from the root
    sys.path.insert(0, str(ROOT))
from bench import corrupt  # noqa: E402

CHUNK = 4 * EXTENT
CFG = EngineConfig(
    chunk_size=CHUNK, chunks_per_container=4, meta_extents=1, block_points=200, read_workers=0
)
SEC = 1_000_000


def values(tag: int, n: int) -> np.ndarray:
    # Noisy values, about 8 bytes a point: ~30 blocks fill a 64 KiB chunk.
    return np.random.default_rng(tag).random(n) * 1000 + tag


def chunk_offset(data: Path, chunk_id: int, offset: int) -> tuple[Path, int]:
    n = CFG.chunks_per_container
    path = data / "containers" / f"c-{chunk_id // n:06d}.xtc"
    return path, EXTENT + (chunk_id % n) * CHUNK + offset


def flip(data: Path, chunk_id: int, offset: int, mask: int = 0xFF) -> None:
    path, pos = chunk_offset(data, chunk_id, offset)
    with open(path, "r+b") as f:
        f.seek(pos)
        old = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([old ^ mask]))


def zero_page(data: Path, chunk_id: int) -> None:
    path, pos = chunk_offset(data, chunk_id, 0)
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(bytes(4096))


def rows(data: Path, sql: str) -> list[tuple[int, ...]]:
    with contextlib.closing(sqlite3.connect(data / "index.sqlite3")) as db:
        return db.execute(sql).fetchall()


def write_sealed(data: Path, tags: int = 2, n: int = 4000) -> None:
    """``tags`` tags of ``n`` points each, in several sealed chunks; closed cleanly."""
    with Engine.open(data, CFG) as eng:
        for tag in range(1, tags + 1):
            eng.write(tag, np.arange(n) * SEC, values(tag, n))
        eng.flush()


def assert_exact(eng: Engine, tag: int, ts: np.ndarray, vals: np.ndarray) -> None:
    p = eng.query(tag, -(1 << 60), 1 << 60)
    np.testing.assert_array_equal(p.timestamps, ts)
    np.testing.assert_array_equal(p.values, vals)


def sealed_chunks(data: Path) -> list[int]:
    return [r[0] for r in rows(data, "SELECT chunk_id FROM chunks WHERE sealed = 1")]


def assert_sealed_intact(eng: Engine) -> None:
    """Both tags :func:`write_sealed` wrote read back exactly."""
    for tag in (1, 2):
        assert_exact(eng, tag, np.arange(4000) * SEC, values(tag, 4000))


def assert_repaired(eng: Engine, *words: str) -> None:
    """Some repair line of this start holds every one of ``words``."""
    assert any(all(w in r for w in words) for r in eng.repairs), eng.repairs


def test_a_version_1_directory_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    # v1 kept one-byte states and a directory CRC that checked nothing: not read as v2.
    data = tmp_path / "db"
    Engine.open(data, CFG).close()
    set_format_version(data, 1)
    with pytest.raises(FormatVersionError, match="version 1;"):
        Engine.open(data, CFG)


# -- item 4: the seal record's directory check sees every index row -----------------------------


def test_changed_tag_id_in_an_index_row_is_caught(tmp_path: Path) -> None:
    data = tmp_path / "db"
    write_sealed(data)
    chunk = sealed_chunks(data)[0]
    [(idx,)] = rows(data, f"SELECT idx FROM blocks WHERE chunk_id = {chunk} AND tag_id = 1 LIMIT 1")
    with contextlib.closing(sqlite3.connect(data / "index.sqlite3")) as db:
        db.execute(f"UPDATE blocks SET tag_id = 2 WHERE chunk_id = {chunk} AND idx = {idx}")
        db.commit()
    with Engine.open(data, CFG) as eng:
        assert_repaired(eng, f"chunk {chunk}: index rows disagreed")
        assert_sealed_intact(eng)


@pytest.mark.parametrize("value", [1 << 40, -5, "text", 2.5])
def test_malformed_index_row_never_stops_the_engine(tmp_path: Path, value: object) -> None:
    # Values SQLite stores happily but no directory entry can hold: struct.error before.
    data = tmp_path / "db"
    write_sealed(data)
    chunk = sealed_chunks(data)[0]
    with contextlib.closing(sqlite3.connect(data / "index.sqlite3")) as db:
        db.execute(f"UPDATE blocks SET body_len = ? WHERE chunk_id = {chunk} AND idx = 0", (value,))
        db.commit()
    with Engine.open(data, CFG) as eng:
        assert eng.repairs
        assert_sealed_intact(eng)


def test_undecodable_index_schema_text_is_rebuilt_not_a_traceback(tmp_path: Path) -> None:
    data = tmp_path / "db"
    write_sealed(data)
    index = data / "index.sqlite3"
    raw = bytearray(index.read_bytes())
    raw[raw.index(b"CREATE TABLE chunks") + 3] = 0x93  # not UTF-8: UnicodeDecodeError before
    index.write_bytes(bytes(raw))
    with Engine.open(data, CFG) as eng:
        assert_repaired(eng, "index rebuilt")
        assert_sealed_intact(eng)


# -- item 5: a chunk state byte is never taken as "free" on its own ---------------------------


def test_flipped_allocated_state_byte_keeps_the_chunk(tmp_path: Path) -> None:
    data = tmp_path / "db"
    write_sealed(data)
    chunk = sealed_chunks(data)[0]
    path, pos = chunk_offset(data, chunk, 0)
    before = path.read_bytes()[pos : pos + CHUNK]
    flip(data, chunk, FLAGS_OFFSET)  # the first byte of the ALLOCATED state
    with Engine.open(data, CFG) as eng:
        assert_repaired(eng, f"chunk {chunk}: ALLOCATED state damaged")
        assert_sealed_intact(eng)
        # More data rolls into fresh chunks; the damaged one must not be reused.
        eng.write(3, np.arange(6000) * SEC, values(3, 6000))
        eng.flush()
    with Engine.open(data, CFG) as eng:
        assert not eng.repairs  # the state word was rewritten: nothing left to report
        for tag in (1, 2, 3):
            n = 6000 if tag == 3 else 4000
            assert_exact(eng, tag, np.arange(n) * SEC, values(tag, n))
    after = path.read_bytes()[pos : pos + CHUNK]
    assert after[EXTENT:] == before[EXTENT:]  # its data region was never overwritten


@pytest.mark.parametrize("word", range(4))
@pytest.mark.parametrize("chunk_kind", ["sealed", "active"])
def test_every_state_word_byte_flip_loses_nothing(
    tmp_path: Path, word: int, chunk_kind: str
) -> None:
    data = tmp_path / "db"
    write_sealed(data)
    live = rows(data, "SELECT chunk_id, sealed FROM chunks ORDER BY chunk_id")
    chunk = next(c for c, s in live if s == (chunk_kind == "sealed"))
    flip(data, chunk, FLAGS_OFFSET + word * 8 + 3, 0x01)
    with Engine.open(data, CFG) as eng:
        assert_repaired(eng, f"chunk {chunk}:", "state")
        assert_sealed_intact(eng)


# -- item 6: a zeroed first page is damage, salvaged and reported --------------------------------


def test_zeroed_first_page_of_a_sealed_chunk_is_salvaged_from_the_index(tmp_path: Path) -> None:
    data = tmp_path / "db"
    write_sealed(data)
    chunk = sealed_chunks(data)[0]
    zero_page(data, chunk)
    for _ in range(2):  # and again at the next start: the chunk stays read-only and reported
        with Engine.open(data, CFG) as eng:
            assert_repaired(eng, f"chunk {chunk}: header damaged")
            assert_sealed_intact(eng)
            eng.write(3, np.arange(3000) * SEC, values(3, 3000))  # rolls: never into it
            eng.flush()
    assert check(data).damaged


def test_zeroed_first_page_without_the_index_reports_what_is_lost(tmp_path: Path) -> None:
    data = tmp_path / "db"
    write_sealed(data)
    chunk = sealed_chunks(data)[0]
    zero_page(data, chunk)
    for p in data.glob("index.sqlite3*"):
        p.unlink()
    with Engine.open(data, CFG) as eng:
        [line] = [r for r in eng.repairs if f"chunk {chunk}: header damaged" in r]
        lost = int(line.split(" bytes of block bodies unaccounted")[0].rsplit(" ", 1)[1])
        assert lost > 10_000, line  # the bodies its directory described, counted
        for tag in (1, 2):
            p = eng.query(tag, -(1 << 60), 1 << 60)
            assert np.array_equal(p.values, values(tag, 4000)[p.timestamps // SEC])


# -- item 7: a damaged entry of the active chunk is not a torn tail -------------------------------


def active_with_tombstone(data: Path) -> tuple[int, int]:
    """An active chunk holding blocks, then a tombstone, then more blocks; closed cleanly.

    Returns the chunk and the directory position of the entry just before the tombstone.
    """
    with Engine.open(data, CFG) as eng:
        eng.write(1, np.arange(4000) * SEC, values(1, 4000))
        eng.flush()
        eng.write(2, np.arange(600) * SEC, values(2, 600))
        eng.flush()
        eng.delete(2, 100 * SEC, 200 * SEC)
        eng.write(2, np.arange(600, 1200) * SEC, values(2, 1200)[600:])
        eng.flush()
    [(chunk,)] = rows(data, "SELECT chunk_id FROM chunks WHERE sealed = 0")
    [(tomb,)] = rows(data, f"SELECT idx FROM blocks WHERE chunk_id = {chunk} AND flags & 2")
    later = rows(data, f"SELECT count(*) FROM blocks WHERE chunk_id = {chunk} AND idx > {tomb}")
    assert tomb >= 1 and later[0][0] >= 2
    return chunk, tomb - 1


def tag2_expected() -> tuple[np.ndarray, np.ndarray]:
    ts = np.arange(1200)
    keep = (ts < 100) | (ts >= 200)
    return ts[keep] * SEC, values(2, 1200)[keep]


@pytest.mark.parametrize("which", ["before the tombstone", "the tombstone"])
def test_damaged_entry_of_the_active_chunk_is_restored_not_cut(tmp_path: Path, which: str) -> None:
    data = tmp_path / "db"
    chunk, pos = active_with_tombstone(data)
    pos += which == "the tombstone"
    flip(data, chunk, DIR_OFFSET + pos * ENTRY_SIZE + 20)
    assert check(data).damaged  # offline, before any start: never "OK"
    with Engine.open(data, CFG) as eng:
        assert_repaired(eng, f"chunk {chunk}: directory entry {pos}", "restored")
        assert_exact(eng, 1, np.arange(4000) * SEC, values(1, 4000))
        assert_exact(eng, 2, *tag2_expected())
    assert not check(data).damaged  # restored and rewritten: whole again
    with Engine.open(data, CFG) as eng:
        assert_exact(eng, 2, *tag2_expected())


def test_damaged_entry_of_the_active_chunk_without_the_index(tmp_path: Path) -> None:
    data = tmp_path / "db"
    chunk, pos = active_with_tombstone(data)
    flip(data, chunk, DIR_OFFSET + pos * ENTRY_SIZE + 20)
    for p in data.glob("index.sqlite3*"):
        p.unlink()
    with Engine.open(data, CFG) as eng:
        assert_repaired(eng, f"chunk {chunk}: directory entry {pos}", "not in the index")
        # The later entries, the tombstone among them, are kept: no deleted point is back.
        p = eng.query(2, -(1 << 60), 1 << 60)
        assert not np.any((p.timestamps >= 100 * SEC) & (p.timestamps < 200 * SEC))
        assert np.any(p.timestamps >= 600 * SEC)
        assert np.array_equal(p.values, values(2, 1200)[p.timestamps // SEC])
    assert check(data).damaged  # the lost block stays reported


# -- the campaign, bounded ------------------------------------------------------------------------


def test_corruption_campaign_has_no_silent_outcome(tmp_path: Path) -> None:
    table = corrupt.run(trials=3, seed=7, workdir=tmp_path)
    assert set(table) == {row for row, kind, _ in corrupt.ROWS if kind != "wal"}
    bad = {row: {o: c[o] for o in corrupt.BAD if c[o]} for row, c in table.items()}
    assert not any(bad.values()), corrupt.format_table(table)
    missed = {
        row: [c[x] for x in corrupt.EXTRA]
        for row, c in table.items()
        if any(c[x] for x in corrupt.EXTRA)
    }
    assert not missed, corrupt.format_table(table)  # check saw it; check --repair lost nothing
    # The campaign can see damage at all: most rows are repaired, detected or refused.
    noticed = sum(c["repaired"] + c["detected"] + c["refused"] for c in table.values())
    assert noticed >= 2 * len(table)


# -- retired chunks: DEPRECATED and FREE decide each other ---------------------------------------


RETAIN = dataclasses.replace(CFG, retention_us=3600 * SEC)


def retire_first_chunk(data: Path, grace_s: float) -> np.ndarray:
    """Old data filling chunk 0, recent data after it; retention retires chunk 0.

    Returns the timestamps of tag 1 that survive the retirement.
    """
    with Engine.open(data, RETAIN) as eng:
        eng.write(1, np.arange(8000) * SEC, values(1, 8000))  # old: fills chunk 0 and more
        eng.flush()
        eng.write(2, 10**6 * SEC + np.arange(3000) * SEC, values(2, 3000))  # recent
        eng.flush()
        assert eng.apply_retention(now_us=10**6 * SEC + 3000 * SEC, grace_s=grace_s) >= 1
        kept: np.ndarray = eng.query(1, -(1 << 60), 1 << 60).timestamps
    assert 0 < len(kept) < 8000
    return kept


@pytest.mark.parametrize("grace_s", [0.0, 3600.0])  # freed, or retired and not yet free
def test_damaged_deprecated_word_of_a_retired_chunk(tmp_path: Path, grace_s: float) -> None:
    data = tmp_path / "db"
    kept = retire_first_chunk(data, grace_s)
    flip(data, 0, FLAGS_OFFSET + 2 * 8 + 5, 0x10)  # one byte of chunk 0's DEPRECATED word
    with Engine.open(data, RETAIN) as eng:
        assert_repaired(eng, "chunk 0: DEPRECATED state damaged")
        p = eng.query(1, -(1 << 60), 1 << 60)
        assert np.array_equal(p.values, values(1, 8000)[p.timestamps // SEC])
        if grace_s == 0:  # FREE is set, so DEPRECATED was too: the slot stays free
            np.testing.assert_array_equal(p.timestamps, kept)
        else:  # FREE is not set: the retired data is kept (and reported), never lost unseen
            assert len(p) > len(kept)
        assert_exact(eng, 2, 10**6 * SEC + np.arange(3000) * SEC, values(2, 3000))


def test_index_rebuild_keeps_an_entry_only_the_index_still_holds(tmp_path: Path) -> None:
    # The start trusts a sealed chunk's index rows without reading its directory, so a
    # damaged entry goes unseen until a rebuild (check --repair) rescans the chunk.
    data = tmp_path / "db"
    write_sealed(data)
    chunk = sealed_chunks(data)[0]
    flip(data, chunk, DIR_OFFSET + 3 * ENTRY_SIZE + 20)
    with Engine.open(data, CFG) as eng:
        eng.rebuild_index()
    assert not check(data).damaged  # the entry was restored and written back
    with Engine.open(data, CFG) as eng:
        assert_sealed_intact(eng)


def test_allocated_word_overwritten_as_unset_keeps_an_unsealed_chunk(tmp_path: Path) -> None:
    # Eight bytes of 0xFF over ALLOCATED read as "never set"; the directory says otherwise.
    data = tmp_path / "db"
    write_sealed(data)
    [(chunk,)] = rows(data, "SELECT chunk_id FROM chunks WHERE sealed = 0")
    path, pos = chunk_offset(data, chunk, FLAGS_OFFSET)
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(b"\xff" * 8)
    with Engine.open(data, CFG) as eng:
        assert_repaired(eng, f"chunk {chunk}: ALLOCATED state unset")
        assert_sealed_intact(eng)


def test_index_failing_during_a_rebuild_is_recreated_from_the_chunks(tmp_path: Path) -> None:
    # The campaign found index damage no start reads but the rebuild's writes hit
    # ("database disk image is malformed"): check --repair ended in a traceback. A
    # trigger on the rows of a sealed chunk (which a start trusts, never rewrites)
    # makes the same failure deterministic (IntegrityError, a DatabaseError).
    data = tmp_path / "db"
    write_sealed(data)
    chunk = sealed_chunks(data)[0]
    with contextlib.closing(sqlite3.connect(data / "index.sqlite3")) as db:
        db.execute(
            f"CREATE TRIGGER rot BEFORE DELETE ON blocks WHEN old.chunk_id = {chunk} "
            "BEGIN SELECT RAISE(ABORT, 'rot'); END"
        )
        db.commit()
    with Engine.open(data, CFG) as eng:
        assert not eng.repairs  # the start never touched those rows
        eng.rebuild_index()
        assert_sealed_intact(eng)
    assert not rows(data, "SELECT name FROM sqlite_master WHERE type = 'trigger'")
    assert not check(data).damaged
    with Engine.open(data, CFG) as eng:
        assert not eng.repairs
        assert_sealed_intact(eng)
