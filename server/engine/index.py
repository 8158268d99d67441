"""The metadata index: an SQLite mirror of chunks and block directory entries.

It is a cache. The chunk meta regions on disk are the truth; the index only
saves a full scan at start-up. On open the engine compares every chunk's seal
record with the index and rescans any chunk that disagrees, and when the file
is missing, unreadable or of another schema it is rebuilt from a scan
(:meth:`MetaIndex.replace_all`). Rows are committed only after the blocks they
describe were written, so the index never names a block the disk lacks.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from .container import BlockEntry, ChunkScan
from .summary import Row as SummaryRow
from .summary import SummaryDamaged, SummaryOutdated, SummaryTable, unpack

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE chunks (
    chunk_id INTEGER PRIMARY KEY,
    container INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    sealed INTEGER NOT NULL,
    n_blocks INTEGER NOT NULL,
    dir_crc INTEGER NOT NULL
);
CREATE TABLE blocks (
    chunk_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    tag_id INTEGER NOT NULL,
    codec INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    first_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    count INTEGER NOT NULL,
    body_len INTEGER NOT NULL,
    body_off INTEGER NOT NULL,
    body_crc INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    max_lsn INTEGER NOT NULL,
    mask_seq INTEGER NOT NULL,
    PRIMARY KEY (chunk_id, idx)
) WITHOUT ROWID;
CREATE INDEX blocks_by_tag ON blocks (tag_id, first_ts);
CREATE TABLE tags (
    tag_id INTEGER PRIMARY KEY,
    first_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    points INTEGER NOT NULL
);
"""
# Added beside schema 2 (not a new version): an index written before it gets the
# table at open and its summaries are computed then (see recovery.py).
_SUMMARIES = """
CREATE TABLE IF NOT EXISTS summaries (
    chunk_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    body_crc INTEGER NOT NULL,
    grid INTEGER NOT NULL,
    all_good INTEGER NOT NULL,
    cells BLOB NOT NULL,
    crc INTEGER NOT NULL,
    PRIMARY KEY (chunk_id, idx)
) WITHOUT ROWID;
"""

_BLOCK_COLS = (
    "chunk_id, idx, tag_id, codec, flags, first_ts, last_ts, count, body_len, body_off,"
    " body_crc, generation, seq, max_lsn, mask_seq"
)


class IndexUnusable(Exception):
    """The index file cannot be trusted; the caller rebuilds it from a scan."""


def _row(e: BlockEntry) -> tuple[int, ...]:
    return dataclasses.astuple(e)  # the column order of _BLOCK_COLS is the field order


class MetaIndex:
    """SQLite-backed mirror; every method is called under the engine's seal lock."""

    def __init__(self, conn: sqlite3.Connection, path: Path, instance_hex: str) -> None:
        self.conn = conn
        self.path = path
        self.instance_hex = instance_hex
        self.summaries = SummaryTable()  # in memory; rows go with the block rows

    @classmethod
    def open(cls, path: Path, instance_hex: str) -> MetaIndex:
        """Open an existing index; raises :class:`IndexUnusable` when it must be rebuilt."""
        if not path.exists():
            raise IndexUnusable("index file missing")
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            ok = conn.execute("PRAGMA quick_check").fetchone()
            if not ok or ok[0] != "ok":
                raise IndexUnusable(f"quick_check: {ok}")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            # A damaged schema text can fail to decode before SQLite reports anything.
            raise IndexUnusable(f"sqlite: {exc}") from exc
        if meta.get("schema") != str(SCHEMA_VERSION) or meta.get("instance") != instance_hex:
            conn.close()
            raise IndexUnusable("index belongs to another schema or database instance")
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            conn.executescript(_SUMMARIES)
        except sqlite3.Error as exc:
            conn.close()
            raise IndexUnusable(f"sqlite: {exc}") from exc
        return cls(conn, path, instance_hex)

    @classmethod
    def create(cls, path: Path, instance_hex: str) -> MetaIndex:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA + _SUMMARIES)
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("schema", str(SCHEMA_VERSION)), ("instance", instance_hex)],
        )
        return cls(conn, path, instance_hex)

    def close(self) -> None:
        self.conn.close()

    def checkpoint(self) -> None:
        """Move the SQLite WAL's pages into the index file and truncate the WAL.

        SQLite checkpoints by itself only at 1,000 pages and then reuses the WAL
        file at its full size, so a small index lived in its WAL (2.2 MB for 2,000
        blocks, against 1.5 MB as a file) and each later version of a page added
        to it: du counted the index up to twice.
        """
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def recreate(self) -> None:
        """Start over with an empty file, in place (the old one failed while being rebuilt).

        The summaries held in memory are written again with the next transaction.
        """
        self.conn.close()
        self.conn = MetaIndex.create(self.path, self.instance_hex).conn
        self.summaries.keep_unwritten(self.summaries.rows())

    # -- reads -------------------------------------------------------------

    def chunk_rows(self) -> dict[int, tuple[int, int, int, int]]:
        """chunk_id -> (generation, sealed, n_blocks, dir_crc)."""
        try:
            rows = self.conn.execute(
                "SELECT chunk_id, generation, sealed, n_blocks, dir_crc FROM chunks"
            ).fetchall()
        except UnicodeDecodeError as exc:
            raise IndexUnusable(f"undecodable chunk row ({exc})") from exc
        if not all(type(v) is int for r in rows for v in r):
            raise IndexUnusable("malformed chunk row")
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    def blocks_of_chunks(self, chunk_ids: Iterable[int]) -> list[BlockEntry]:
        ids = list(chunk_ids)
        out: list[BlockEntry] = []
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            try:
                found = self.conn.execute(
                    f"SELECT {_BLOCK_COLS} FROM blocks WHERE chunk_id IN ({marks})", part
                ).fetchall()
            except UnicodeDecodeError as exc:
                raise IndexUnusable(f"undecodable block row ({exc})") from exc
            for r in found:
                # A flipped type byte in an SQLite record can make any column text, a
                # float or a blob; such a row is damage, never a traceback later.
                if not all(type(v) is int for v in r):
                    raise IndexUnusable(f"malformed block row for chunk {r[0]!r}")
                out.append(BlockEntry(*r))
        return out

    # -- writes ------------------------------------------------------------

    def add_blocks(self, entries: list[BlockEntry]) -> None:
        """Block rows, and in the same transaction every summary not yet written.

        A block sealed before a crash has its row and its summary, or neither
        (its chunk is then rescanned and the summary recomputed at open).
        """
        if not entries:
            return
        rows = self.summaries.take_unwritten()
        try:
            with _txn(self.conn):
                self.conn.executemany(
                    f"INSERT OR REPLACE INTO blocks ({_BLOCK_COLS}) VALUES ({','.join('?' * 15)})",
                    [_row(e) for e in entries],
                )
                self._bump_tags(entries)
                self._put_summary_rows(rows)
        except BaseException:
            self.summaries.keep_unwritten(rows)
            raise

    def write_summaries(self) -> None:
        """Write the summaries held but not yet written (healed ones), in one transaction."""
        rows = self.summaries.take_unwritten()
        if not rows:
            return
        try:
            with _txn(self.conn):
                self._put_summary_rows(rows)
        except BaseException:
            self.summaries.keep_unwritten(rows)
            raise

    def _put_summary_rows(self, rows: list[SummaryRow]) -> None:
        self.conn.executemany("INSERT OR REPLACE INTO summaries VALUES (?,?,?,?,?,?,?,?)", rows)

    def summary_rows(self) -> list[tuple[object, ...]]:
        """Every stored summary row, unchecked (see summary.unpack)."""
        return self.conn.execute("SELECT * FROM summaries").fetchall()

    def damaged_summaries(self) -> list[str]:
        """What is wrong with each stored summary row that fails its checks (offline check)."""
        out = []
        for row in self.summary_rows():
            try:
                unpack(row)
            except SummaryOutdated:  # an older cell layout is not damage; a start recomputes it
                continue
            except SummaryDamaged as exc:
                out.append(f"{exc}; a start recomputes it from its block")
        return out

    def delete_summaries(self, keys: list[tuple[int, int]]) -> None:
        with _txn(self.conn):
            self.conn.executemany("DELETE FROM summaries WHERE chunk_id = ? AND idx = ?", keys)

    def forget_summaries(self, entries: list[BlockEntry]) -> None:
        """Drop the stored summaries of blocks compaction superseded (their rows stay:
        the chunk's seal check covers them, and the retire rule hides them)."""
        keys = [(e.chunk_id, e.index) for e in entries]
        if keys:
            self.delete_summaries(keys)

    def _bump_tags(self, entries: list[BlockEntry]) -> None:
        self.conn.executemany(
            "INSERT INTO tags VALUES (?, ?, ?, ?) ON CONFLICT(tag_id) DO UPDATE SET"
            " first_ts = min(first_ts, excluded.first_ts),"
            " last_ts = max(last_ts, excluded.last_ts), points = points + excluded.points",
            [(e.tag_id, e.first_ts, e.last_ts, e.count) for e in entries if not e.is_tombstone],
        )

    def put_chunk(self, scan: ChunkScan, dir_crc: int, n_blocks: int) -> None:
        with _txn(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    scan.chunk_id,
                    scan.container_no,
                    scan.slot,
                    scan.generation,
                    int(scan.sealed),
                    n_blocks,
                    dir_crc,
                ),
            )

    def replace_chunk(self, scan: ChunkScan) -> None:
        """Make the rows of one chunk exactly what a scan of it found."""
        entries = scan.entries or []
        live = scan.allocated and not scan.deprecated and not scan.free
        with _txn(self.conn):
            self.conn.execute("DELETE FROM blocks WHERE chunk_id = ?", (scan.chunk_id,))
            self.conn.execute("DELETE FROM chunks WHERE chunk_id = ?", (scan.chunk_id,))
            if not live:  # a live chunk keeps them: each is checked against its entry
                self.conn.execute("DELETE FROM summaries WHERE chunk_id = ?", (scan.chunk_id,))
                self.summaries.drop_chunk(scan.chunk_id)
            if live:
                self.conn.execute(
                    "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        scan.chunk_id,
                        scan.container_no,
                        scan.slot,
                        scan.generation,
                        int(scan.sealed),
                        scan.seal_n_blocks,
                        scan.seal_dir_crc,
                    ),
                )
                self.conn.executemany(
                    f"INSERT INTO blocks ({_BLOCK_COLS}) VALUES ({','.join('?' * 15)})",
                    [_row(e) for e in entries],
                )

    def recompute_tags(self) -> None:
        with _txn(self.conn):
            self.conn.execute("DELETE FROM tags")
            self.conn.execute(
                "INSERT INTO tags SELECT tag_id, min(first_ts), max(last_ts), sum(count)"
                " FROM blocks WHERE count > 0 GROUP BY tag_id"
            )


class _txn:
    """BEGIN/COMMIT around a block (autocommit connection), ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
