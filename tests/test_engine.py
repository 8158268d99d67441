"""The storage engine on a temp directory: writes, queries, merges, validation, restarts."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from xtsdb.protocol.errors import (
    CorruptionError,
    DataDirLocked,
    EngineClosed,
    FormatVersionError,
    InvalidInput,
)
from xtsdb.server.engine import Engine, EngineConfig

# Tiny geometry so a few thousand points cross blocks, chunks and containers.
TINY = EngineConfig(
    chunk_size=64 * 1024,
    meta_extents=1,
    chunks_per_container=2,
    block_points=500,
    read_workers=0,
    wal_segment_bytes=64 * 1024,
)

SEC = 1_000_000


def retention_config(retention_us: int, **changes: int) -> EngineConfig:
    """TINY's geometry with a retention window (and the default WAL segment size)."""
    wal_bytes = EngineConfig().wal_segment_bytes
    return replace(TINY, wal_segment_bytes=wal_bytes, retention_us=retention_us, **changes)


def walk(n: int, seed: int = 1) -> np.ndarray:
    return np.round(20 + np.cumsum(np.random.default_rng(seed).normal(0, 0.05, n)), 3)


def full(eng: Engine, tag: int):  # type: ignore[no-untyped-def]
    return eng.query(tag, -(1 << 59), 1 << 59)


@pytest.fixture
def eng(tmp_path: Path):  # type: ignore[no-untyped-def]
    e = Engine.open(tmp_path / "db", TINY)
    yield e
    e.close()


def test_memory_round_trip(eng: Engine) -> None:
    ts = np.arange(100) * SEC
    v = walk(100)
    eng.write(7, ts, v, np.full(100, 3))
    p = full(eng, 7)
    assert np.array_equal(p.timestamps, ts)
    assert np.array_equal(p.values, v)
    assert (p.qualities == 3).all()
    assert p.stats.points_from_memory == 100 and p.stats.points_from_disk == 0


def test_blocks_chunks_and_container_rollover(eng: Engine) -> None:
    n = 30_000
    # Random doubles barely compress: ~8 bytes a point fills many 64 KiB chunks.
    ts, v = np.arange(n) * SEC, np.random.default_rng(3).random(n)
    for lo in range(0, n, 3_000):  # many writes so MemBuffers seal in the background too
        eng.write(1, ts[lo : lo + 3000], v[lo : lo + 3000])
    eng.flush()
    st = eng.stats()
    assert st["memory_points"] == 0 and st["block_points"] == n
    containers = list((eng.path / "containers").iterdir())
    assert len(containers) >= 3, "tiny geometry must roll over several containers"
    p = full(eng, 1)
    assert np.array_equal(p.timestamps, ts) and np.array_equal(p.values, v)
    assert p.stats.points_from_disk == n and p.stats.blocks_read == st["blocks"]


def test_time_filter_skips_blocks(eng: Engine) -> None:
    n = 5_000
    eng.write(2, np.arange(n) * SEC, walk(n))
    eng.flush()
    p = eng.query(2, 1000 * SEC, 1200 * SEC)
    assert p.timestamps[0] == 1000 * SEC and p.timestamps[-1] == 1199 * SEC and len(p) == 200
    assert p.stats.blocks_read <= 2 and p.stats.blocks_skipped >= 8
    assert len(eng.query(2, 10 * SEC, 10 * SEC)) == 0  # empty half-open range


def test_out_of_order_and_duplicates_later_write_wins(eng: Engine) -> None:
    rng = np.random.default_rng(5)
    ts = rng.permutation(2_000) * SEC
    eng.write(3, ts, ts / SEC)
    eng.flush()  # the first version is on disk
    dup = ts[:300]
    eng.write(3, dup, -np.ones(300))  # rewrite some in memory
    eng.write(
        3,
        np.concatenate([dup[:10], dup[:10]]),
        np.concatenate([np.full(10, 5.0), np.full(10, 6.0)]),
    )
    p = full(eng, 3)
    assert len(p) == 2_000 and np.array_equal(p.timestamps, np.arange(2_000) * SEC)
    expect = np.arange(2_000, dtype=float)
    expect[np.sort(dup) // SEC] = -1
    expect[dup[:10] // SEC] = 6.0  # last of two writes in one batch
    assert np.array_equal(p.values, expect)
    eng.flush()  # overlapping blocks on disk now: same answer from disk alone
    q = full(eng, 3)
    assert q.stats.points_from_memory == 0
    assert np.array_equal(q.values, expect)


def test_interleaved_multi_tag_batch(eng: Engine) -> None:
    n = 3_000
    tags = np.tile(np.arange(3), n)  # 0,1,2,0,1,2,...
    ts = np.repeat(np.arange(n), 3) * SEC
    vals = tags * 1000.0 + np.repeat(np.arange(n), 3)
    eng.write(tags, ts, vals)
    for t in range(3):
        p = full(eng, t)
        assert len(p) == n and np.array_equal(p.values, t * 1000.0 + np.arange(n))


def test_write_point_then_commit(eng: Engine) -> None:
    for i in range(1_000):
        eng.write_point(i % 10, i * SEC, float(i), 192 if i % 2 else 0)
    assert len(full(eng, 0)) == 0  # staged, not yet committed
    eng.commit()
    p = full(eng, 4)
    assert np.array_equal(p.values, np.arange(4, 1000, 10, dtype=float))
    assert (p.qualities == 0).all()
    with pytest.raises(InvalidInput):
        eng.write_point(1, 1.5, 2.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        eng.write_point(-1, 1, 2.0)
    with pytest.raises(InvalidInput):
        eng.write_point(1, 1, 2.0, 256)
    eng.commit()
    assert len(full(eng, 1)) == 100  # the rejected points left nothing behind


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1, [1, 2, 3], [1.0, 2.0]), "values has 2"),
        ((1, np.array([1.0, np.nan]), [1.0, 2.0]), "NaN"),
        ((1, np.array([1.5, 2.0]), [1.0, 2.0]), "integer"),
        ((-1, [1], [1.0]), "out of range"),
        ((1 << 32, [1], [1.0]), "out of range"),
        ((np.array([1, -2]), [1, 2], [1.0, 2.0]), "out of range"),
        ((1, [1 << 61], [1.0]), "out of range"),
        ((1, [1, 2], ["a", "b"]), "numbers"),
        ((1, [[1, 2]], [[1.0, 2.0]]), "1-D"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(eng: Engine, args: tuple, match: str) -> None:  # type: ignore[type-arg]
    before = eng.stats()["wal_last_lsn"]
    with pytest.raises(InvalidInput, match=match):
        eng.write(*args)
    assert eng.stats()["wal_last_lsn"] == before
    assert len(full(eng, 1)) == 0


def test_bad_qualities(eng: Engine) -> None:
    with pytest.raises(InvalidInput, match=r"0\.\.255"):
        eng.write(1, [1, 2], [1.0, 2.0], [0, 300])
    with pytest.raises(InvalidInput, match="qualities has 1"):
        eng.write(1, [1, 2], [1.0, 2.0], [0])


def test_non_finite_values_round_trip_bit_exact(eng: Engine) -> None:
    odd_nan = np.array([0x7FF8_0000_0000_1234], dtype=np.uint64).view(np.float64)[0]
    v = np.array([np.nan, np.inf, -np.inf, -0.0, odd_nan, 1.5])
    eng.write(4, np.arange(6), v)
    eng.flush()
    p = full(eng, 4)
    assert np.array_equal(p.values.view(np.uint64), v.view(np.uint64))


def test_restart_keeps_everything_and_continues_after_rollover(tmp_path: Path) -> None:
    d = tmp_path / "db"
    n = 12_000
    with Engine.open(d, TINY) as e:
        e.write(1, np.arange(n) * SEC, walk(n))
        e.flush()
        e.write(1, [n * SEC], [1.0])  # only in the WAL at close... close seals it
    with Engine.open(d, TINY) as e:
        assert e.stats()["memory_points"] == 0, "a clean close leaves nothing to replay"
        assert len(full(e, 1)) == n + 1
        e.write(1, np.arange(n + 1, 2 * n) * SEC, walk(n - 1, 2))  # continue in the newest chunk
        e.flush()
    with Engine.open(d, TINY) as e:
        p = full(e, 1)
        assert len(p) == 2 * n and np.array_equal(p.timestamps, np.arange(2 * n) * SEC)


def test_lock_file_refuses_second_open(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "db", TINY), pytest.raises(DataDirLocked, match="in use"):
        Engine.open(tmp_path / "db", TINY)
    Engine.open(tmp_path / "db", TINY).close()  # released on close


def test_other_format_version_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "db"
    Engine.open(d, TINY).close()
    meta = d / "xtsdb.meta"
    body, _, _ = meta.read_bytes().rpartition(b"\n")
    from xtsdb.server.engine.container import FORMAT_VERSION

    body = body.replace(b'"version": %d' % FORMAT_VERSION, b'"version": 99')
    import zlib

    meta.write_bytes(body + b"\n" + str(zlib.crc32(body)).encode())
    with pytest.raises(FormatVersionError, match="version 99"):
        Engine.open(d, TINY)


@pytest.mark.parametrize("damage", ["delete", "garbage"])
def test_index_rebuilt_from_scan_gives_identical_results(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "db"
    with Engine.open(d, TINY) as e:
        for t in range(3):
            e.write(t, np.arange(4_000) * SEC, walk(4_000, t))
        e.flush()
        before = [full(e, t) for t in range(3)]
    idx = d / "index.sqlite3"
    for p in d.glob("index.sqlite3*"):
        p.unlink()
    if damage == "garbage":
        idx.write_bytes(b"this is not an sqlite file" * 100)
    with Engine.open(d, TINY) as e:
        assert any("index rebuilt" in r for r in e.repairs) == (damage == "garbage")
        for t in range(3):
            p = full(e, t)
            assert np.array_equal(p.timestamps, before[t].timestamps)
            assert np.array_equal(p.values, before[t].values)
        e.rebuild_index()  # explicit rebuild on a live engine
        assert np.array_equal(full(e, 2).values, before[2].values)


def test_flipped_byte_in_block_is_an_error_never_data(tmp_path: Path) -> None:
    d = tmp_path / "db"
    with Engine.open(d, TINY) as e:
        e.write(1, np.arange(400) * SEC, walk(400))
        e.flush()
        entry = e._tags[1].blocks[0]
        ref = e._store.ref(entry)
    with open(ref.path, "r+b") as f:
        f.seek(ref.offset + ref.length // 2)
        b = f.read(1)
        f.seek(ref.offset + ref.length // 2)
        f.write(bytes([b[0] ^ 0x40]))
    with Engine.open(d, TINY) as e:
        with pytest.raises(CorruptionError, match="CRC"):
            full(e, 1)
        assert len(e.query(2, 0, 1 << 40)) == 0  # other tags still fine


def test_pool_and_inline_reads_agree(tmp_path: Path) -> None:
    cfg = EngineConfig(
        chunk_size=1 << 20, meta_extents=2, block_points=1000, read_workers=2, parallel_min_points=1
    )
    with Engine.open(tmp_path / "db", cfg) as e:
        n = 20_000
        e.write(1, np.arange(n) * SEC, walk(n))
        e.flush()
        refs = [e._store.ref(b) for b in e._tags[1].blocks]
        inline = e._reader.read(refs, parallel=False)
        pooled = e._reader.read(refs, parallel=True)
        for a, b in zip(inline, pooled, strict=True):
            assert np.array_equal(a, b)
        assert np.array_equal(full(e, 1).values, walk(n))


def test_queries_racing_flushes_see_every_point(tmp_path: Path) -> None:
    """The C++ original lost 11-54 % of points when a query raced a flush."""
    cfg = EngineConfig(chunk_size=256 * 1024, meta_extents=1, block_points=300, read_workers=0)
    with Engine.open(tmp_path / "db", cfg) as e:
        written = 0
        stop = threading.Event()
        errors: list[str] = []

        def reader() -> None:
            while not stop.is_set():
                seen_min = written  # points acknowledged before this query started
                p = full(e, 1)
                if len(p) < seen_min or not np.array_equal(p.timestamps, np.arange(len(p))):
                    errors.append(f"saw {len(p)} points, at least {seen_min} were acknowledged")

        th = threading.Thread(target=reader)
        th.start()
        try:
            for _ in range(150):
                e.write(1, np.arange(written, written + 97), np.ones(97))
                written += 97
                if written % 970 == 0:
                    e.flush()
        finally:
            stop.set()
            th.join(10)
        assert not errors, errors[:3]
        assert len(full(e, 1)) == written


def test_last_value_from_memory_disk_and_after_restart(tmp_path: Path) -> None:
    d = tmp_path / "db"
    with Engine.open(d, TINY) as e:
        e.write(1, [5, 3, 9], [1.0, 2.0, 3.0])
        e.write(2, [1], [7.0], [0])
        e.write(1, [9], [4.0])  # same newest timestamp: later write wins
        last = e.last([1, 2, 3])
        assert last.tag_ids.tolist() == [1, 2] and last.values.tolist() == [4.0, 7.0]
        e.flush()
    with Engine.open(d, TINY) as e:
        last = e.last(np.array([2, 1]))
        assert last.tag_ids.tolist() == [2, 1]
        assert last.timestamps.tolist() == [1, 9] and last.values.tolist() == [7.0, 4.0]
        assert last.qualities.tolist() == [0, 192]


def test_closed_engine_refuses(tmp_path: Path) -> None:
    e = Engine.open(tmp_path / "db", TINY)
    e.close()
    e.close()  # idempotent
    with pytest.raises(EngineClosed):
        e.write(1, [1], [1.0])
    with pytest.raises(EngineClosed):
        full(e, 1)


def test_delete_range_memory_disk_restart_and_rebuild(tmp_path: Path) -> None:
    d = tmp_path / "db"
    with Engine.open(d, TINY) as e:
        e.write(1, np.arange(3_000), np.arange(3_000.0))
        e.flush()  # 0..2999 in blocks
        e.write(1, np.arange(3_000, 4_000), np.arange(3_000.0, 4_000.0))  # in memory
        e.delete(1, 2_500, 3_500)  # spans disk and memory
        e.write(1, [2_600], [-1.0])  # written after the delete: kept
        p = full(e, 1)
        expect = np.r_[np.arange(2_500), 2_600, np.arange(3_500, 4_000)]
        assert np.array_equal(p.timestamps, expect)
        assert p.values[2_500] == -1.0
        assert len(e.query(1, 2_500, 3_500)) == 1
        assert e.last([1]).timestamps.tolist() == [3_999]
    with Engine.open(d, TINY) as e:
        assert np.array_equal(full(e, 1).timestamps, expect)
    for f in d.glob("index.sqlite3*"):
        f.unlink()
    with Engine.open(d, TINY) as e:  # rebuilt from a scan: the delete is not revived
        assert np.array_equal(full(e, 1).timestamps, expect)
        e.delete_tag(1)
        assert len(full(e, 1)) == 0 and len(e.last([1])) == 0
        e.write(1, [7], [7.0])
    with Engine.open(d, TINY) as e:
        assert full(e, 1).timestamps.tolist() == [7]


def test_delete_validation(eng: Engine) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        eng.delete(1, 10, 10)
    with pytest.raises(InvalidInput, match="integer"):
        eng.delete(1, 1.5, 10)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="out of range"):
        eng.delete(-1, 0, 10)


def test_retention_fills_and_rolls_storage_reusing_slots(tmp_path: Path) -> None:
    hour = 3600 * SEC
    cfg = retention_config(24 * hour)
    d = tmp_path / "db"
    rng = np.random.default_rng(9)
    with Engine.open(d, cfg) as e:
        t0 = 0
        for day in range(12):  # a day of random doubles (~69 KB) fills more than a chunk
            ts = t0 + day * 24 * hour + np.arange(0, 24 * hour, 10 * SEC)
            e.write(1, ts, rng.random(ts.shape[0]))
            e.delete(2, 0, 1)  # a tombstone now and then, with nothing to mask
            e.flush()
            e.apply_retention(now_us=int(ts[-1]), grace_s=0)
        now = int(ts[-1])
        p = full(e, 1)
        # Everything within the window is there; nothing older than a chunk's spill-over.
        assert p.timestamps[-1] == now
        window = e.query(1, now - 24 * hour + 1, now + 1)
        assert len(window) == 24 * 360 and window.timestamps[0] > now - 24 * hour
        assert p.timestamps[0] > now - 3 * 24 * hour, "old chunks must have been retired"
        # 12 days need ~17 chunks of 48 KiB data; reused slots keep it to a few containers.
        slots = 2 * len(list((d / "containers").iterdir()))
        assert slots <= 8, f"{slots} chunk slots: freed slots must be reused"
        before = p
    for f in d.glob("index.sqlite3*"):
        f.unlink()
    with Engine.open(d, cfg) as e:  # rebuilt from a scan: retired chunks stay retired
        p = full(e, 1)
        assert np.array_equal(p.timestamps, before.timestamps)


def test_retention_keeps_tombstones_that_still_mask(tmp_path: Path) -> None:
    hour = 3600 * SEC
    cfg = retention_config(10 * hour, chunks_per_container=4, block_points=200)
    d = tmp_path / "db"
    rng = np.random.default_rng(1)
    with Engine.open(d, cfg) as e:
        e.write(1, np.arange(100) * hour // 100 + 20 * hour, np.ones(100))  # recent data
        e.flush()
        e.write(3, np.arange(8000), rng.random(8000))  # ancient data: rolls to a new chunk
        e.flush()
        e.delete(1, 20 * hour, 20 * hour + hour // 2)  # the tombstone sits among old data
        first_home = e._tags[1].tombstones[0].chunk_id
        e.write(3, np.arange(8000, 16000), rng.random(8000))
        e.flush()
        assert e.apply_retention(now_us=21 * hour, grace_s=0) >= 1
        assert e._tags[1].tombstones[0].chunk_id != first_home, "the tombstone was copied"
        assert len(full(e, 1)) == 50
        assert len(full(e, 3)) < 16000
    with Engine.open(d, cfg) as e:
        assert len(full(e, 1)) == 50, "a retired chunk's tombstone must not be lost"


def test_catalog_names_metadata_and_durability(tmp_path: Path) -> None:
    d = tmp_path / "db"
    with Engine.open(d, TINY) as e:
        e.write(5, [1], [1.0])  # raw id 5 is in use: a named tag must not take it
        fic = e.create_tag("FIC101.PV", unit="m3/h", description="feed flow")
        assert fic.id == 6 and e.catalog.resolve("FIC101.PV") == 6
        e.create_tag("FIC102.PV")
        e.create_tag("TI200.PV", unit="degC")
        assert [t.name for t in e.catalog.find("FIC*")] == ["FIC101.PV", "FIC102.PV"]
        with pytest.raises(InvalidInput, match="exists already"):
            e.create_tag("FIC101.PV")
        with pytest.raises(InvalidInput, match="duplicates must be"):
            e.update_tag("TI200.PV", duplicates="sometimes")
        e.catalog.rename("FIC102.PV", "FIC103.PV")
        e.update_tag(6, description="feed flow, corrected")
        e.write(fic.id, [10, 20], [1.0, 2.0])
    for f in d.glob("index.sqlite3*"):
        f.unlink()  # the index is rebuilt from a scan; the catalog is not a cache
    with Engine.open(d, TINY) as e:
        assert e.catalog.get("FIC101.PV") == e.catalog.get(6)
        assert e.catalog.get(6).description == "feed flow, corrected"  # type: ignore[union-attr]
        assert e.catalog.get("FIC102.PV") is None and e.catalog.get("FIC103.PV") is not None
        assert len(full(e, e.catalog.resolve("FIC101.PV"))) == 2
        e.remove_tag("FIC101.PV")
        assert e.catalog.get(6) is None and len(full(e, 6)) == 0


def test_duplicate_policies_first_and_reject(eng: Engine) -> None:
    first = eng.create_tag("first", duplicates="first").id
    reject = eng.create_tag("reject", duplicates="reject").id
    eng.write(first, [1, 2], [1.0, 2.0])
    eng.flush()
    eng.write(first, [2, 3, 3], [20.0, 3.0, 30.0])  # 2 exists on disk, 3 twice in memory
    assert full(eng, first).values.tolist() == [1.0, 2.0, 3.0]
    eng.flush()
    assert full(eng, first).values.tolist() == [1.0, 2.0, 3.0]
    assert eng.last([first]).values.tolist() == [3.0]

    eng.write(reject, [1, 2], [1.0, 2.0])
    with pytest.raises(InvalidInput, match="reject"):
        eng.write(reject, [2, 5], [9.0, 5.0])  # 2 exists: the whole write is refused
    with pytest.raises(InvalidInput, match="reject"):
        eng.write(reject, [7, 7], [7.0, 7.0])
    assert full(eng, reject).timestamps.tolist() == [1, 2]
    eng.write(reject, [3], [3.0])
    assert full(eng, reject).values.tolist() == [1.0, 2.0, 3.0]


def test_per_tag_retention_trims_old_points_durably(tmp_path: Path) -> None:
    hour = 3600 * SEC
    d = tmp_path / "db"
    with Engine.open(d, TINY) as e:
        short = e.create_tag("short", retention_us=10 * hour).id
        e.write(short, np.arange(48) * hour, np.arange(48.0))
        e.write(99, np.arange(48) * hour, np.arange(48.0))  # no own retention: untouched
        e.flush()
        e.apply_retention(now_us=47 * hour)
        assert full(e, short).timestamps[0] == 37 * hour
        e.apply_retention(now_us=47 * hour + 1)  # less than a tenth of the window later
        assert sum(x.first_ts < 0 for x in e._tags[short].tombstones) == 1
        assert len(full(e, 99)) == 48
    with Engine.open(d, TINY) as e:
        assert full(e, short).timestamps[0] == 37 * hour


def test_query_descending_limit_and_good_only(eng: Engine) -> None:
    eng.write(1, np.arange(10), np.arange(10.0), [192, 0, 192, 64, 192, 192, 255, 192, 0, 192])
    eng.write(1, [4], [40.0], [0])  # the later write of ts 4 is Bad: it hides the Good one
    p = eng.query(1, 0, 100, limit=3, descending=True)
    assert p.timestamps.tolist() == [9, 8, 7] and p.more
    assert not eng.query(1, 0, 100, limit=10).more  # exactly the limit: nothing more
    g = eng.query(1, 0, 100, good_only=True)
    assert g.timestamps.tolist() == [0, 2, 5, 6, 7, 9]
    assert eng.query(1, 0, 100, limit=2, descending=True, good_only=True).timestamps.tolist() == [
        9,
        7,
    ]


def test_stats_totals_match_the_directory_through_seal_retention_and_restart(
    tmp_path: Path,
) -> None:
    hour = 3600 * SEC
    cfg = retention_config(24 * hour)
    rng = np.random.default_rng(4)

    def walked(e: Engine) -> tuple[int, int, int]:
        blocks = [b for t in e._tags.values() for b in t.blocks]
        return len(blocks), sum(b.count for b in blocks), sum(b.body_len for b in blocks)

    def kept(e: Engine) -> tuple[int, int, int]:
        st = e.stats()
        return st["blocks"], st["block_points"], st["block_bytes"]

    with Engine.open(tmp_path / "db", cfg) as e:
        for day in range(4):
            ts = day * 24 * hour + np.arange(0, 24 * hour, 10 * SEC)
            e.write(1, ts, rng.random(ts.shape[0]))
            e.flush()
            assert kept(e) == walked(e)
        assert e.apply_retention(now_us=int(ts[-1]), grace_s=0) >= 1
        assert kept(e) == walked(e)
    with Engine.open(tmp_path / "db", cfg) as e:
        assert kept(e) == walked(e) and kept(e)[0] > 0
