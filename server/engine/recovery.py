"""Opening a data directory: lock, format check, index, chunk reconciliation, WAL.

Order matters and follows the design: container headers and the index first
(the index rebuilt from a scan when it is missing or damaged), then the WAL is
replayed after the last checkpoint (by the engine, into its MemBuffers).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from . import wal as wal_mod
from .config import EngineConfig
from .container import BlockEntry
from .datadir import DirLock, load_or_create_meta
from .index import IndexUnusable, MetaIndex
from .reader import BlockReader
from .salvage import restore
from .store import BlockStore
from .summary_heal import load_at_open

log = logging.getLogger("xtsdb.engine")

INDEX_NAME = "index.sqlite3"


@dataclass
class Opened:
    path: Path
    lock: DirLock
    wal: wal_mod.Wal
    store: BlockStore
    index: MetaIndex
    reader: BlockReader
    blocks: list[BlockEntry]
    checkpoint_lsn: int
    repairs: list[str]


def open_parts(path: Path, config: EngineConfig) -> Opened:
    lock = DirLock(path)
    opened: list[object] = []
    try:
        meta = load_or_create_meta(path, config)
        instance_hex = meta.instance_id.hex()
        wal_dir = path / "wal"
        checkpoint = wal_mod.read_checkpoint(wal_dir) if wal_dir.exists() else 0
        repairs: list[str] = []
        index_path = path / INDEX_NAME
        try:
            index = MetaIndex.open(index_path, instance_hex)
            rebuild = False
        except IndexUnusable as exc:
            if index_path.exists():
                repairs.append(f"index rebuilt from a scan of the chunks ({exc})")
            index = MetaIndex.create(index_path, instance_hex)
            rebuild = True
        opened.append(index)
        store = BlockStore(path / "containers", meta.geometry, meta.instance_id, index)
        opened.append(store)
        reader = BlockReader(config.read_workers, config.parallel_min_points)
        opened.append(reader)
        summary_notes: list[str] = []
        try:
            blocks = store.load(checkpoint, full_rebuild=rebuild)
            load_at_open(index, store, reader, blocks, summary_notes)
        except (sqlite3.DatabaseError, IndexUnusable, UnicodeDecodeError) as exc:
            # Damage SQLite's quick_check did not see: the index is only a cache,
            # so start over from a scan of the chunks. What the first pass already
            # repaired on disk (state words, entries written back) stays reported.
            repairs.extend(store.repairs)
            repairs.append(f"index rebuilt from a scan of the chunks ({exc})")
            store.close()
            index.close()
            opened.remove(store)
            opened.remove(index)
            index = MetaIndex.create(index_path, instance_hex)
            opened.append(index)
            store = BlockStore(path / "containers", meta.geometry, meta.instance_id, index)
            opened.append(store)
            blocks = store.load(checkpoint, full_rebuild=True)
            summary_notes = []
            load_at_open(index, store, reader, blocks, summary_notes)
        repairs.extend(store.repairs)
        repairs.extend(summary_notes)
        wal = wal_mod.Wal(
            wal_dir,
            segment_bytes=config.wal_segment_bytes,
            fsync=config.fsync,
            instance_id=meta.instance_id,
        )
        return Opened(path, lock, wal, store, index, reader, blocks, checkpoint, repairs)
    except BaseException:
        for part in reversed(opened):
            with contextlib.suppress(Exception):
                part.close()  # type: ignore[attr-defined]
        lock.release()
        raise


def close_parts(parts: Opened) -> None:
    for part in (parts.reader, parts.wal, parts.store, parts.index):
        try:
            part.close()
        except Exception:  # closing must release the lock whatever else fails
            log.exception("error while closing %s", type(part).__name__)
    parts.lock.release()


def write_checkpoint(data_dir: Path, lsn: int) -> None:
    wal_mod.write_checkpoint(data_dir / "wal", lsn)


def rebuild_index(store: BlockStore) -> None:
    """Drop every index row and re-mirror what a scan of each chunk finds.

    Chunks salvaged at open (blocks restored from index rows that a damaged
    directory no longer holds) keep the rows they were salvaged with: a rescan
    would drop exactly the blocks the salvage saved. So does a sealed chunk the
    start trusted from the index without reading its directory: a damaged entry
    found now is restored from its row (and written back) before the rows go.
    If the index itself fails meanwhile (damage the start never read), it is
    recreated empty and mirrored from the scans alone.
    """
    try:
        _mirror(store, store.index.chunk_rows(), use_rows=True)
    except (sqlite3.DatabaseError, IndexUnusable, UnicodeDecodeError) as exc:
        log.warning("index unreadable while being rebuilt (%s); recreated from a scan", exc)
        store.index.recreate()
        _mirror(store, {}, use_rows=False)


def _mirror(store: BlockStore, rows: dict[int, tuple[int, int, int, int]], use_rows: bool) -> None:
    index = store.index
    seen = set()
    for cf in store.containers.values():
        for slot in range(cf.geometry.n_chunks):
            scan = cf.scan_chunk(slot, store.instance_id)
            if scan.chunk_id in store.salvaged:
                scan = store.salvaged[scan.chunk_id]
            elif scan.damaged_at and use_rows:
                held = index.blocks_of_chunks([scan.chunk_id])
                restore(cf, scan, held, list(scan.damaged_at))
            seen.add(scan.chunk_id)
            index.replace_chunk(scan)
    for chunk_id in set(rows) - seen:
        index.conn.execute("DELETE FROM blocks WHERE chunk_id = ?", (chunk_id,))
        index.conn.execute("DELETE FROM chunks WHERE chunk_id = ?", (chunk_id,))
        index.conn.execute("DELETE FROM summaries WHERE chunk_id = ?", (chunk_id,))
    index.recompute_tags()
    index.write_summaries()  # a recreated index gets back the summaries held in memory
