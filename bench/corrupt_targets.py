"""Where ``bench/corrupt.py`` damages a data directory, and how.

:func:`regions` lists the byte ranges of each kind of place (WAL, checkpoint,
container and chunk headers, chunk states, seal records, directories, block
bodies, the SQLite files, the last-value file, the meta file); :data:`ROWS`
names the campaign's rows (a kind of place and a damage); :func:`damage`
applies one: a flipped byte, a zeroed 4 KiB page, a changed index row or a changed
block summary.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from xtsdb.server.engine import EngineConfig
from xtsdb.server.engine import container as ct
from xtsdb.server.engine.compaction_rules import BLOCK_RETIRE as RETIRE
from xtsdb.server.engine.datadir import load_or_create_meta

PAGE = 4096


@dataclass
class Target:
    path: Path
    start: int  # absolute byte range in the file
    end: int


def _chunks(path: Path, config: EngineConfig) -> list[tuple[Path, int, ct.ChunkScan]]:
    meta = load_or_create_meta(path, config)
    out = []
    for p in sorted((path / "containers").glob("c-*.xtc")):
        cf = ct.ContainerFile.open(p, meta.instance_id)
        try:
            for slot in range(cf.geometry.n_chunks):
                scan = cf.scan_chunk(slot, meta.instance_id)
                if scan.allocated and not scan.free:
                    out.append((p, cf.geometry.chunk_base(slot), scan))
        finally:
            cf.close()
    return out


def regions(path: Path, config: EngineConfig) -> dict[str, list[Target]]:
    """Byte ranges of each kind of place in the reference directory."""
    out: dict[str, list[Target]] = {}
    add = lambda kind, p, a, b: out.setdefault(kind, []).append(Target(p, a, b))  # noqa: E731
    for seg in sorted((path / "wal").glob("wal-*.log")):
        add("wal", seg, 0, seg.stat().st_size)
    ckp = [p for p in (path / "wal").iterdir() if not p.name.startswith("wal-")]
    for p in ckp:
        add("checkpoint", p, 0, p.stat().st_size)
    for p in sorted((path / "containers").glob("c-*.xtc")):
        add("container header", p, 0, 52)
    for p, base, scan in _chunks(path, config):
        which = "sealed" if scan.sealed else "active"
        add("chunk header", p, base, base + ct.CHUNK_HEADER.size + 4)
        add("state", p, base + ct.FLAGS_OFFSET, base + ct.FLAGS_OFFSET + ct.STATE_BYTES)
        add("first page " + which, p, base, base + PAGE)
        if scan.sealed:
            add(
                "seal record",
                p,
                base + ct.SEAL_OFFSET,
                base + ct.SEAL_OFFSET + ct.SEAL_RECORD.size + 4,
            )
        entries = scan.entries or []
        add(
            "dir " + which,
            p,
            base + ct.DIR_OFFSET,
            base + ct.DIR_OFFSET + len(entries) * ct.ENTRY_SIZE,
        )
        for e in entries:
            if e.body_len:
                add("body", p, base + e.body_off, base + e.body_off + e.body_len)
            if e.flags & RETIRE:  # compaction's retire record (compaction_rules.py)
                at = base + ct.DIR_OFFSET + e.index * ct.ENTRY_SIZE
                add("retire record", p, at, at + ct.ENTRY_SIZE)
    for name in ("index.sqlite3", "catalog.sqlite3", "last-values.bin", "xtsdb.meta"):
        if (path / name).exists():
            add(name, path / name, 0, (path / name).stat().st_size)
    return out


# (row name, region kind, damage): "flip" one byte, or "zero" the 4 KiB page(s) at a spot
ROWS: list[tuple[str, str, str]] = [
    ("wal flip", "wal", "flip"),
    ("wal zero page", "wal", "zero"),
    ("checkpoint flip", "checkpoint", "flip"),
    ("container header flip", "container header", "flip"),
    ("container header zero page", "container header", "zero"),
    ("chunk header flip", "chunk header", "flip"),
    ("state flip", "state", "flip"),
    ("seal record flip", "seal record", "flip"),
    ("dir sealed flip", "dir sealed", "flip"),
    ("dir active flip", "dir active", "flip"),
    ("body flip", "body", "flip"),
    ("first page sealed zero", "first page sealed", "zero"),
    ("first page active zero", "first page active", "zero"),
    ("dir sealed zero page", "dir sealed", "zero"),
    ("body zero page", "body", "zero"),
    ("dir sealed flip, no index", "dir sealed", "flip-noindex"),
    ("dir active flip, no index", "dir active", "flip-noindex"),
    ("retire record flip", "retire record", "flip"),
    ("state flip, no index", "state", "flip-noindex"),
    ("first page sealed zero, no index", "first page sealed", "zero-noindex"),
    ("first page active zero, no index", "first page active", "zero-noindex"),
    ("index flip", "index.sqlite3", "flip"),
    ("index row changed", "index.sqlite3", "row"),
    ("summary row changed", "index.sqlite3", "summary"),
    ("index zero page", "index.sqlite3", "zero"),
    ("catalog flip", "catalog.sqlite3", "flip"),
    ("catalog zero page", "catalog.sqlite3", "zero"),
    ("last-values flip", "last-values.bin", "flip"),
    ("last-values zero page", "last-values.bin", "zero"),
    ("meta flip", "xtsdb.meta", "flip"),
]


_ROW_COLUMNS = (
    "tag_id",
    "first_ts",
    "last_ts",
    "count",
    "body_off",
    "body_len",
    "body_crc",
    "seq",
    "flags",
    "mask_seq",
    "idx",
    "max_lsn",
)


def _change_row(path: Path, rng: random.Random) -> str:
    """Bit rot SQLite cannot see: one column of one block row holds another valid value."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT chunk_id, idx FROM blocks ORDER BY chunk_id, idx").fetchall()
        chunk, idx = rng.choice(rows)
        col = rng.choice(_ROW_COLUMNS)
        delta = rng.choice([1, -1, 2, 1000, 1 << 20])
        # OR REPLACE: a changed idx may take the place of another row (one row lost).
        db.execute(
            f"UPDATE OR REPLACE blocks SET {col} = {col} + ? WHERE chunk_id = ? AND idx = ?",
            (delta, chunk, idx),
        )
        db.commit()
    return f"index row chunk {chunk} idx {idx}: {col} += {delta}"


_SUMMARY_COLUMNS = ("seq", "body_crc", "grid", "all_good", "crc", "cells", "cells", "cells")


def _change_summary(path: Path, rng: random.Random) -> str:
    """Bit rot in a block summary: one column changed, or one byte of its cells flipped."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT chunk_id, idx, cells FROM summaries").fetchall()
        chunk, idx, cells = rng.choice(rows)
        col = rng.choice(_SUMMARY_COLUMNS)
        if col == "cells":
            pos = rng.randrange(len(cells))
            flipped = bytearray(cells)
            flipped[pos] ^= rng.randrange(1, 256)
            value: object = bytes(flipped)
            what = f"cells byte {pos} flipped"
        else:
            delta = rng.choice([1, -1, 2, 1000, 1 << 20])
            value = db.execute(
                f"SELECT {col} + ? FROM summaries WHERE chunk_id = ? AND idx = ?",
                (delta, chunk, idx),
            ).fetchone()[0]
            what = f"{col} += {delta}"
        db.execute(
            f"UPDATE summaries SET {col} = ? WHERE chunk_id = ? AND idx = ?", (value, chunk, idx)
        )
        db.commit()
    return f"summary of chunk {chunk} idx {idx}: {what}"


def damage(target: Target, how: str, rng: random.Random, root: Path, copy: Path) -> str:
    """Apply one damage to the copy; returns a description."""
    path = copy / target.path.relative_to(root)
    if how.endswith("-noindex"):
        for p in copy.glob("index.sqlite3*"):
            p.unlink()  # the second witness is gone too
        return damage(target, how.removesuffix("-noindex"), rng, root, copy) + ", index removed"
    if how == "row":
        return _change_row(path, rng)
    if how == "summary":
        return _change_summary(path, rng)
    pos = rng.randrange(target.start, target.end)
    with open(path, "r+b") as f:
        if how == "flip":
            f.seek(pos)
            old = f.read(1)[0]
            mask = rng.randrange(1, 256)
            f.seek(pos)
            f.write(bytes([old ^ mask]))
            return f"{path.name}@{pos} ^{mask:#04x}"
        page = pos - pos % PAGE
        f.seek(page)
        f.write(bytes(PAGE))
        return f"{path.name} page @{page} zeroed"
