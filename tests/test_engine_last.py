"""``Engine.last()``: deletes, damaged blocks, and the last-value file kept across restarts."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xtsdb.client import Client
from xtsdb.client.cli import main as cli_main
from xtsdb.protocol import LAST
from xtsdb.protocol.errors import CorruptionError, EngineClosed, ProtocolError
from xtsdb.protocol.frames import decode_body, encode_body
from xtsdb.server.app import ServerThread
from xtsdb.server.engine import Engine, EngineConfig, lastvalues

CFG = EngineConfig(chunk_size=64 * 1024, meta_extents=1, block_points=500, read_workers=0)


def last_of(eng: Engine, tags: list[int]) -> dict[int, tuple[int, float, int]]:
    r = eng.last(tags)
    return {
        t: (ts, v, q)
        for t, ts, v, q in zip(
            r.tag_ids.tolist(),
            r.timestamps.tolist(),
            r.values.tolist(),
            r.qualities.tolist(),
            strict=True,
        )
    }


def newest_by_query(eng: Engine, tag: int) -> tuple[int, float, int] | None:
    p = eng.query(tag, -(1 << 59), 1 << 59, 1, descending=True)
    return (int(p.timestamps[0]), float(p.values[0]), int(p.qualities[0])) if len(p) else None


def agree(eng: Engine, tags: list[int]) -> dict[int, tuple[int, float, int]]:
    """last() of ``tags``, checked against what a query says is each tag's newest point."""
    got = last_of(eng, tags)
    want = {t: n for t in tags if (n := newest_by_query(eng, t)) is not None}
    assert got == want
    return got


def write_100(eng: Engine, tag: int = 1) -> None:
    ts = np.arange(100, dtype=np.int64) * 10
    eng.write(tag, ts, ts * 0.5)


# -- defect 9: tombstones over the newest points --------------------------------------------------


def test_last_after_deleting_the_newest_points_of_sealed_blocks(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "db", CFG) as eng:
        write_100(eng)
        eng.flush()
        eng.delete(1, 900, 1 << 40)  # the newest 10 points, all in a sealed block
        assert len(eng.query(1, 0, 1 << 40)) == 90
        assert agree(eng, [1]) == {1: (890, 445.0, 192)}
    with Engine.open(tmp_path / "db", CFG) as eng:
        assert agree(eng, [1]) == {1: (890, 445.0, 192)}


def test_last_after_delete_tag_and_a_rewrite_of_older_points(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "db", CFG) as eng:
        write_100(eng)
        eng.flush()
        eng.delete_tag(1)
        assert last_of(eng, [1]) == {}
        ts = np.arange(50, dtype=np.int64)  # older than every deleted point
        eng.write(1, ts, ts + 0.25)
        assert agree(eng, [1]) == {1: (49, 49.25, 192)}
        eng.flush()
        assert agree(eng, [1]) == {1: (49, 49.25, 192)}
    with Engine.open(tmp_path / "db", CFG) as eng:
        assert agree(eng, [1]) == {1: (49, 49.25, 192)}


def test_last_when_every_point_is_deleted_across_many_blocks(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "db", CFG) as eng:
        ts = np.arange(5_000, dtype=np.int64)
        eng.write(1, ts, ts * 1.0)
        eng.flush()
        eng.delete(1, 1_000, 1 << 40)  # newest 8 of 10 blocks masked
        assert agree(eng, [1]) == {1: (999, 999.0, 192)}
        eng.delete(1, 0, 1_000)
        assert last_of(eng, [1]) == {}
        eng.write(1, [7], [1.5])  # a point older than every deleted one, in memory
        assert agree(eng, [1]) == {1: (7, 1.5, 192)}


def test_closed_engine_refuses_last(tmp_path: Path) -> None:
    eng = Engine.open(tmp_path / "db", CFG)
    eng.close()
    with pytest.raises(EngineClosed):
        eng.last([1])


# -- defect 11: one damaged block, one tag without an answer --------------------------------------


def three_tags_with_tag_1_newest_block_damaged(data: Path) -> None:
    with Engine.open(data, CFG) as eng:
        for tag in (1, 2, 3):
            ts = np.arange(2_000, dtype=np.int64)
            eng.write(tag, ts, ts + tag * 0.5)
        eng.flush()
        newest = max(eng._tags[1].blocks, key=lambda b: b.last_ts)
        ref = eng._store.ref(newest)
    with open(ref.path, "r+b") as f:
        f.seek(ref.offset + ref.length // 2)
        b = f.read(1)
        f.seek(ref.offset + ref.length // 2)
        f.write(bytes([b[0] ^ 0x40]))
    for p in data.glob("last-values*"):
        p.unlink()  # make last() read the blocks (the file is a cache of them)


def test_damaged_block_fails_last_for_its_tag_only(tmp_path: Path) -> None:
    data = tmp_path / "db"
    three_tags_with_tag_1_newest_block_damaged(data)
    with Engine.open(data, CFG) as eng:
        r = eng.last([1, 2, 3, 4])
        assert r.tag_ids.tolist() == [2, 3]
        assert r.timestamps.tolist() == [1999, 1999] and r.values.tolist() == [2000.0, 2000.5]
        assert list(r.errors) == [1] and isinstance(r.errors[1], CorruptionError)
        assert "CRC" in str(r.errors[1])
        with pytest.raises(CorruptionError):  # a query of that range says the same
            eng.query(1, 1500, 2000)


def test_damaged_block_in_last_over_the_wire(
    tmp_path: Path,
    server_factory: Callable[..., ServerThread],
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "db"
    three_tags_with_tag_1_newest_block_damaged(data)
    srv = server_factory(
        data_dir=data, chunk_size=CFG.chunk_size, meta_extents=1, block_points=CFG.block_points
    )
    with Client(srv.url) as db:
        r = db.last([1, 2, 3])
        assert r.to_dict() == {2: (1999, 2000.0, 192), 3: (1999, 2000.5, 192)}
        assert list(r.errors) == [1] and isinstance(r.errors[1], CorruptionError)
        assert "CRC" in str(r.errors[1])
        assert db.last([2]).errors == {}
    # The CLI prints the healthy tags, names the damaged one and exits non-zero.
    assert cli_main(["--url", srv.url, "last", "1", "2"]) == 1
    out = capsys.readouterr().out
    assert "(error)" in out and "CRC" in out and "2000.0" in out


def test_last_errors_on_the_wire_are_optional_and_checked() -> None:
    def wire(msg: dict[str, Any]) -> dict[str, Any]:
        return decode_body(encode_body(msg))

    plain = LAST.reply(3, [2], [10], [1.5], [192])
    assert "errors" not in plain  # the frame is the one older clients know
    assert LAST.parse_answer(wire(plain)).errors == {}
    resp = wire(LAST.reply(3, [2], [10], [1.5], [192], {7: CorruptionError("block CRC")}))
    got = LAST.parse_answer(resp)
    assert [a.tolist() for a in (got.tags, got.ts, got.values, got.q)] == [[2], [10], [1.5], [192]]
    [(tag, err)] = got.errors.items()
    assert tag == 7 and type(err) is CorruptionError and str(err) == "block CRC"
    for bad in ("x", [1], [{"tag": -1, "code": 51, "message": ""}], [{"tag": 1}]):
        with pytest.raises(ProtocolError):
            LAST.parse_answer({**resp, "errors": bad})


def crash_image(src: Path, dst: Path) -> Path:
    """What a kill -9 would leave now: the files as they are, no close, no final seal."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("LOCK"))
    return dst


# -- defect 12: the last-value file ---------------------------------------------------------------

TAGS = list(range(40))


def many_tags(eng: Engine, n: int = 300, t0: int = 0) -> None:
    ts = t0 + np.arange(n, dtype=np.int64)
    for tag in TAGS:
        eng.write(tag, ts, ts * 0.25 + tag)


def test_first_last_after_a_clean_restart_reads_no_block(tmp_path: Path) -> None:
    data = tmp_path / "db"
    with Engine.open(data, CFG) as eng:
        many_tags(eng)
        eng.flush()
        before = agree(eng, TAGS)
    with Engine.open(data, CFG) as eng:
        assert last_of(eng, TAGS) == before
        assert eng.stats()["blocks_read"] == 0  # answered from the file, no block decoded
    (data / lastvalues.NAME).unlink()
    with Engine.open(data, CFG) as eng:  # without the file: the same answer, from the blocks
        assert last_of(eng, TAGS) == before
        assert eng.stats()["blocks_read"] >= len(TAGS)


def test_last_value_file_is_only_trusted_for_unchanged_tags(tmp_path: Path) -> None:
    data = tmp_path / "db"
    with Engine.open(data, CFG) as eng:
        many_tags(eng)
    # A run after a clean close that changes some tags and then crashes: the file
    # on disk is the old one, written before these changes.
    with Engine.open(data, CFG) as eng:
        eng.delete(1, 250, 1 << 40)  # tombstone over the newest points
        eng.write(2, np.arange(300, 900), np.arange(600) * 1.0)  # newer, sealed below
        eng.write(3, [1_000_000], [3.5])  # newer, only in the WAL
        eng.delete_tag(4)
        eng.write(4, [5], [-1.0])  # delete_tag, then an older point, only in the WAL
        eng.write(5, [10], [-2.0])  # an older rewrite of an existing point: not the newest
        eng.flush()
        eng.write(6, [2_000_000], [6.5])  # after the checkpoint: replayed from the WAL
        eng.delete(7, 299, 300)  # after the checkpoint: a tombstone in a later block
        want = agree(eng, TAGS)
        crashed = crash_image(data, tmp_path / "crashed")
    assert want[1][0] == 249 and want[2][0] == 899 and want[3] == (1_000_000, 3.5, 192)
    assert want[4] == (5, -1.0, 192) and want[7][0] == 298
    with Engine.open(crashed, CFG) as eng:
        assert agree(eng, TAGS) == want
    with Engine.open(data, CFG) as eng:  # and the clean close wrote a file that holds
        assert last_of(eng, TAGS) == want
        assert eng.stats()["blocks_read"] == 0


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "other-database"])
def test_damaged_last_value_file_is_ignored(tmp_path: Path, damage: str) -> None:
    data = tmp_path / "db"
    with Engine.open(data, CFG) as eng:
        many_tags(eng)
        eng.flush()
        want = agree(eng, TAGS)
    path = data / lastvalues.NAME
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x10  # a value byte: only the CRC can tell
    elif damage == "truncate":
        raw = raw[: len(raw) - 7]
    elif damage == "garbage":
        raw = bytearray(b"\xff" * len(raw))
    else:  # the same history with other values: only the instance id tells them apart
        with Engine.open(tmp_path / "other", CFG) as other:
            ts = np.arange(300, dtype=np.int64)
            for tag in TAGS:
                other.write(tag, ts, ts * 0.25 + tag + 1000)
            other.flush()
            agree(other, TAGS)
        raw = bytearray((tmp_path / "other" / lastvalues.NAME).read_bytes())
    path.write_bytes(bytes(raw))
    with Engine.open(data, CFG) as eng:
        assert agree(eng, TAGS) == want


def test_retired_chunks_are_not_answered_from_the_file(tmp_path: Path) -> None:
    data = tmp_path / "db"
    cfg = EngineConfig(
        chunk_size=64 * 1024,
        meta_extents=1,
        block_points=500,
        read_workers=0,
        retention_us=1_000_000,
        retention_check_s=3600,
    )
    rng = np.random.default_rng(3)
    with Engine.open(data, cfg) as eng:
        eng.write(1, np.arange(20_000), rng.normal(size=20_000))  # old, noisy: several chunks
        eng.flush()
        eng.write(3, np.arange(20_000), rng.normal(size=20_000))  # old too: seals tag 1's
        eng.flush()
        ts = 10**12 + np.arange(20_000, dtype=np.int64)
        eng.write(1, np.arange(-1000, 0), np.arange(1000) * 1.0)  # older yet, in a newer chunk
        eng.write(2, ts, ts * 1.0)  # new data: that chunk outlives the cutoff
        eng.flush()
        assert last_of(eng, [1])[1][0] == 19_999
    with Engine.open(data, cfg) as eng:
        assert eng.apply_retention(now_us=10**12, grace_s=3600) >= 1
        want = agree(eng, [1, 2, 3])
        crashed = crash_image(data, tmp_path / "crashed")
    assert want[1][0] == -1  # the chunks with tag 1's newer points were retired
    with Engine.open(crashed, cfg) as eng:
        assert agree(eng, [1, 2, 3]) == want


def test_last_never_leaves_out_a_tag_written_meanwhile(tmp_path: Path) -> None:
    """A tag whose value is not cached (policy 'first': every write forgets it) and that a
    writer keeps changing: each ``last`` still answers it (it used to drop the tag after
    three recomputations raced a write, about 1 answer in 4,000)."""
    import threading
    import time

    with Engine.open(tmp_path / "db") as engine:
        tag = engine.create_tag("x", duplicates="first").id
        engine.write(tag, np.arange(10, dtype=np.int64), np.zeros(10))
        stop = threading.Event()

        def writer() -> None:
            k = 10
            while not stop.is_set() and k < 2_000_000:
                engine.write(tag, np.array([k], np.int64), np.array([1.0]))
                k += 1

        thread = threading.Thread(target=writer)
        thread.start()
        missing = answers = 0
        deadline = time.monotonic() + 4.0
        try:
            while time.monotonic() < deadline and answers < 400_000:
                got = engine.last(np.array([tag]))
                answers += 1
                missing += got.tag_ids.shape[0] == 0
        finally:
            stop.set()
            thread.join(30)
        assert answers > 1000 and missing == 0, f"{missing} of {answers} answers left it out"
