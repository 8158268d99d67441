"""Offline verification of a data directory (``xtsdb-server check`` runs it).

Verified, reading every byte that matters:

- ``xtsdb.meta`` (CRC, format version) and the WAL checkpoint file (CRC);
- every container header (magic, CRC, version, instance, size);
- every chunk header, state word, seal record and block directory entry
  (each CRC, the directory check the seal record holds, and a blank header in
  front of data, which a start salvages);
- every block body against the CRC in its directory entry;
- the index: SQLite's ``integrity_check``, then for every sealed chunk the
  index would trust at start-up, its block rows must equal the directory on disk;
- the tag catalog, as a start reads it (on a copy).

Findings are **damage** (anything a start would repair, salvage, report or
refuse: points may be unreadable, or be served only from the index) or
**notes** (a crash's leftovers that the next start tidies without loss, e.g.
an allocation torn by a crash, or an index row older than its chunk). WAL
records are not read here: every start replays and verifies them.

It depends on every on-disk format of the engine, so it lives here; the CLI,
its exit status and ``--repair`` are ``xtsdb.server.check``.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from xtsdb.protocol.errors import DataDirLocked, XtsdbError

from . import lastvalues
from .catalog import Catalog
from .config import EngineConfig
from .container import BlockEntry, ChunkScan, ContainerFile, Geometry, crc32
from .datadir import META_NAME, DirLock, load_or_create_meta
from .index import IndexUnusable, MetaIndex
from .recovery import INDEX_NAME
from .wal import read_checkpoint

_CONTAINER = re.compile(r"^c-(\d{6})\.xtc$")
CATALOG_NAME = "catalog.sqlite3"  # the engine's tag catalog (names and metadata of tags)


class CheckError(Exception):
    """The check could not run at all (exit status 2)."""


@dataclass
class Finding:
    damage: bool
    where: str
    what: str
    repairable: bool = False  # by --repair (an index rebuild)

    def __str__(self) -> str:
        kind = "DAMAGE" if self.damage else "note  "
        hint = " [--repair fixes this]" if self.repairable else ""
        return f"{kind}  {self.where}: {self.what}{hint}"


@dataclass
class Report:
    path: Path
    findings: list[Finding] = field(default_factory=list)
    containers: int = 0
    chunks: int = 0
    sealed: int = 0
    blocks: int = 0
    points: int = 0
    body_bytes: int = 0
    checkpoint_lsn: int = 0
    wal_segments: int = 0
    wal_bytes: int = 0
    index_rows: int = 0

    @property
    def damaged(self) -> bool:
        return any(f.damage for f in self.findings)

    def add(self, damage: bool, where: str, what: str, repairable: bool = False) -> None:
        self.findings.append(Finding(damage, where, what, repairable))

    def lines(self) -> Iterator[str]:
        yield f"xtsdb check of {self.path}"
        yield (
            f"  containers: {self.containers}, chunks in use: {self.chunks} "
            f"({self.sealed} sealed), blocks: {self.blocks:,} ({self.points:,} points, "
            f"{self.body_bytes:,} body bytes verified)"
        )
        yield (
            f"  wal: {self.wal_segments} segments, {self.wal_bytes:,} bytes, "
            f"checkpoint LSN {self.checkpoint_lsn}"
        )
        yield f"  index: {self.index_rows:,} block rows"
        yield from (str(f) for f in self.findings)
        damage = [f for f in self.findings if f.damage]
        if not damage:
            yield "result: OK" + (f" ({len(self.findings)} notes)" if self.findings else "")
        else:
            fixable = sum(f.repairable for f in damage)
            yield f"result: DAMAGED ({len(damage)} problems, {fixable} repairable with --repair)"


class Progress(Protocol):
    """A progress bar (tqdm's interface): made with the total, updated per chunk."""

    def update(self, n: int = 1) -> object: ...

    def close(self) -> object: ...


def check_data_dir(path: Path, *, progress: Callable[[int], Progress] | None = None) -> Report:
    """Verify the data directory at ``path``; :class:`CheckError` if it cannot be checked."""
    if not (path / META_NAME).is_file():
        raise CheckError(f"{path} is not an xtsdb data directory (no {META_NAME})")
    try:
        lock = DirLock(path)
    except DataDirLocked as exc:
        raise CheckError(f"{exc}; stop the server before checking") from None
    try:
        return _check_locked(path, progress)
    finally:
        lock.release()


def _check_locked(path: Path, progress: Callable[[int], Progress] | None) -> Report:
    report = Report(path)
    try:
        meta = load_or_create_meta(path, EngineConfig())  # exists: only read
    except XtsdbError as exc:
        report.add(True, META_NAME, str(exc))
        return report
    _check_wal(path / "wal", report)
    containers = _open_containers(path / "containers", meta.geometry, meta.instance_id, report)
    scans: dict[int, ChunkScan] = {}
    total = sum(cf.geometry.n_chunks for cf in containers)
    bar = progress(total) if progress is not None else None
    try:
        for cf in containers:
            for slot in range(cf.geometry.n_chunks):
                scan = _check_chunk(cf, slot, meta.instance_id, report)
                if scan is not None:
                    scans[scan.chunk_id] = scan
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        for cf in containers:
            cf.close()
    _check_index(path / INDEX_NAME, meta.instance_id.hex(), scans, report)
    _check_catalog(path / CATALOG_NAME, report)
    _check_last_values(path / lastvalues.NAME, meta.instance_id, report)
    return report


def _check_last_values(path: Path, instance_id: bytes, report: Report) -> None:
    """A cache of last(): a start ignores a damaged file and recomputes (so does --repair)."""
    if path.exists() and not lastvalues.usable(path.read_bytes(), instance_id):
        report.add(True, path.name, "damaged; a start ignores it and recomputes last()", True)


def _check_catalog(path: Path, report: Report) -> None:
    """The tag catalog is not a cache (no scan can rebuild names): SQLite's own check,
    then the engine's own reading of it, on a copy (opening may write to the file)."""
    if not path.exists():
        return
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            result = db.execute("PRAGMA quick_check").fetchall()
        finally:
            db.close()
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        result = [(str(exc),)]
    if result == [("ok",)]:
        with tempfile.TemporaryDirectory(prefix="xtsdb-check-") as tmp:
            for suffix in ("", "-wal"):
                side = Path(str(path) + suffix)
                if side.exists():
                    shutil.copyfile(side, Path(tmp) / (CATALOG_NAME + suffix))
            try:
                Catalog(Path(tmp) / CATALOG_NAME, lambda: -1).close()
            except (XtsdbError, sqlite3.Error, UnicodeDecodeError) as exc:
                result = [(str(exc).replace(tmp, str(path.parent)),)]
    if result != [("ok",)]:
        shown = "; ".join(str(r[0]) for r in result[:5])
        report.add(True, CATALOG_NAME, f"damaged ({shown}); restore it from a backup")


def _check_wal(wal_dir: Path, report: Report) -> None:
    if not wal_dir.is_dir():
        return
    try:
        report.checkpoint_lsn = read_checkpoint(wal_dir)
    except XtsdbError as exc:
        report.add(True, "wal/checkpoint", str(exc))
    for p in wal_dir.glob("wal-*.log"):
        report.wal_segments += 1
        report.wal_bytes += p.stat().st_size


def _open_containers(
    directory: Path, geometry: Geometry, instance_id: bytes, report: Report
) -> list[ContainerFile]:
    out = []
    paths = sorted(directory.iterdir()) if directory.is_dir() else []
    for p in paths:
        if not _CONTAINER.match(p.name):
            continue
        try:
            cf = ContainerFile.open(p, instance_id)
        except XtsdbError as exc:
            report.add(True, p.name, f"{exc}; none of its chunks can be read")
            continue
        if cf.geometry != geometry:
            report.add(True, p.name, f"geometry {cf.geometry} differs from {META_NAME}")
            cf.close()
            continue
        out.append(cf)
    report.containers = len(out)
    return out


def _check_chunk(
    cf: ContainerFile, slot: int, instance_id: bytes, report: Report
) -> ChunkScan | None:
    g = cf.geometry
    where = f"{cf.path.name} chunk {cf.container_no * g.n_chunks + slot}"
    if cf.slot_blank(slot):
        return None  # never allocated: the sparse slot reads as zeros everywhere
    try:
        scan = cf.scan_chunk(slot, instance_id)
    except XtsdbError as exc:
        report.add(True, where, str(exc))
        return None
    if scan.damaged or (not scan.allocated and scan.generation == 0):
        # The header's magic or CRC is wrong, or it is blank while the slot is not.
        rest = cf.read_meta(slot, g.meta_bytes + 4096)[48:]
        if not scan.entries and not any(rest):
            report.add(False, where, "allocation torn by a crash; the slot is reused as free")
        else:
            n = len(scan.entries or [])
            report.add(
                True,
                where,
                f"chunk header damaged or blank with data behind it; {n} "
                "blocks readable from its directory (a start salvages them, restores "
                "what the index still names and reports the rest)",
            )
        return None
    for note in scan.state_notes:
        report.add(True, where, f"{note} (a start rewrites it)", True)
    if not scan.allocated or scan.free or scan.deprecated:
        return None
    report.chunks += 1
    report.sealed += scan.sealed
    anomaly = scan.anomaly.replace("chunk state damaged; ", "").strip("; ")
    if anomaly:
        # Damage, not a crash's torn tail (a tail cut at zeros is no anomaly): a start
        # restores entries the index still holds (each verified by its body CRC),
        # seals a chunk whose seal record is damaged again, and reports the rest.
        report.add(True, where, anomaly, not scan.sealed)
    for e in scan.entries or []:
        _check_body(cf, slot, e, scan, where, report)
    return scan


def _check_body(
    cf: ContainerFile, slot: int, e: BlockEntry, scan: ChunkScan, where: str, report: Report
) -> None:
    report.blocks += 1
    report.points += e.count
    if e.body_len == 0:
        return  # a tombstone: no body
    body = cf.read_body_unchecked(slot, e)
    report.body_bytes += len(body)
    if len(body) == e.body_len and crc32(body) == e.body_crc:
        return
    what = (
        f"entry {e.index}: block body CRC mismatch (tag {e.tag_id}, {e.count} points, "
        f"ts {e.first_ts}..{e.last_ts})"
    )
    if not scan.sealed and e.max_lsn > report.checkpoint_lsn:
        # Written after the checkpoint, so still in the WAL: a crash tore it, nothing is lost.
        report.add(False, where, what + "; torn by a crash, its points are in the WAL")
    else:
        report.add(True, where, what)


def _check_index(
    path: Path, instance_hex: str, scans: dict[int, ChunkScan], report: Report
) -> None:
    try:
        index = MetaIndex.open(path, instance_hex)
    except IndexUnusable as exc:
        report.add(True, INDEX_NAME, f"unusable ({exc}); every start rebuilds it", True)
        return
    try:
        # The start runs only quick_check and finds the rest as it reads; offline,
        # every page is read.
        result = index.conn.execute("PRAGMA integrity_check").fetchall()
        if result != [("ok",)]:
            shown = "; ".join(str(r[0]) for r in result[:3])
            report.add(True, INDEX_NAME, f"damaged ({shown}); a start rebuilds it", True)
            return
        rows = index.chunk_rows()
        report.index_rows = len(index.blocks_of_chunks(rows))
        for chunk_id, scan in sorted(scans.items()):
            row = rows.get(chunk_id)
            want = (scan.generation, 1, scan.seal_n_blocks, scan.seal_dir_crc)
            if not scan.sealed or scan.anomaly:
                continue  # never trusted at start-up: rescanned every time
            if row != want:
                where = f"{INDEX_NAME} chunk {chunk_id}"
                report.add(False, where, "row is stale; the next start rescans the chunk")
                continue
            # A start trusts these rows instead of reading the directory: they must match.
            indexed = set(index.blocks_of_chunks([chunk_id]))
            on_disk = set(scan.entries or [])
            if indexed != on_disk:
                where = f"{INDEX_NAME} chunk {chunk_id}"
                report.add(
                    True,
                    where,
                    f"{len(indexed ^ on_disk)} block rows disagree with the directory on disk",
                    True,
                )
        for chunk_id in sorted(set(rows) - set(scans)):
            where = f"{INDEX_NAME} chunk {chunk_id}"
            report.add(True, where, "names a chunk that is not in use on disk", True)
        for what in index.damaged_summaries():  # bit rot in a block summary
            report.add(True, f"{INDEX_NAME} summaries", what, True)
    except (IndexUnusable, sqlite3.Error, UnicodeDecodeError) as exc:
        report.add(True, INDEX_NAME, f"unreadable rows ({exc}); every start rebuilds it", True)
    finally:
        index.close()
