"""The tag catalog: names and metadata for tag ids, in ``catalog.sqlite3``.

Unlike the metadata index, the catalog is not a cache: a chunk scan can
rebuild block locations but not the names people gave their tags. So it is
its own SQLite file with ``synchronous=FULL``: a catalog change is durable
when the call returns, and it is never dropped when the index is rebuilt.

Tag ids stay the engine's key. A named tag gets a fresh id above every id in
use (by the catalog or by data written with raw ids), so a name never
captures someone else's points.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xtsdb.protocol.errors import CorruptionError, InvalidInput, NotFound

from .name_index import NameIndex

DUPLICATE_POLICIES = ("last", "first", "reject")
VALUE_TYPES = ("float64", "int64", "bool", "enum")
log = logging.getLogger("xtsdb.engine")

_MAX_NAME = 256
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f]")

# ``crc``: CRC32 of the row's other columns (see _row_crc). SQLite checks its pages'
# structure but not the bytes of a value, so without it one flipped byte in a name
# would silently rename a tag.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tags (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    unit TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    value_type TEXT NOT NULL DEFAULT 'float64',
    duplicates TEXT NOT NULL DEFAULT 'last',
    retention_us INTEGER NOT NULL DEFAULT 0,
    created_us INTEGER NOT NULL,
    crc INTEGER NOT NULL
);
"""
_COLUMNS = "id, name, unit, description, value_type, duplicates, retention_us, created_us"

_FIELDS = ("unit", "description", "value_type", "duplicates", "retention_us")


@dataclass(frozen=True)
class TagInfo:
    id: int
    name: str
    unit: str = ""
    description: str = ""
    value_type: str = "float64"
    duplicates: str = "last"  # which of two writes of one timestamp is kept
    retention_us: int = 0  # 0: the database's retention applies
    created_us: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


IdAllocator = Callable[
    [Sequence[tuple[str, dict[str, Any]]]], list["tuple[int, dict[str, Any], bool] | InvalidInput"]
]
"""Cluster mode: ids for new names from the catalog every node shares. Per ``(name,
settings)``: ``(id, the settings the shared entry has, whether this call made it)``, or the
:class:`InvalidInput` that refused it. It may block (a network round trip): never called
with the catalog's lock held."""


class Catalog:
    """Thread-safe; reads come from an in-memory copy, writes go to SQLite first."""

    allocator: IdAllocator | None = None
    """Set in cluster mode (docs/cluster.md): new names get their ids from it, not locally."""

    def __init__(self, path: Path, max_used_id: Callable[[], int]) -> None:
        self._lock = threading.Lock()
        self._max_used_id = max_used_id
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            rows = _open_checked(self._db, path)
        except BaseException:
            self._db.close()
            raise
        self._by_id = {r.id: r for r in rows}
        self._by_name = {t.name: t for t in self._by_id.values()}

    # -- cluster mode: the catalog log's position, committed with each change ------------

    def log_seq(self) -> int:
        """The sequence of the last catalog-log frame applied (cluster mode; 0: none)."""
        with self._lock:
            self._db.execute(_LOG_SEQ_TABLE)
            row = self._db.execute("SELECT seq FROM log_seq WHERE k = 0").fetchone()
        return int(row[0]) if row else 0

    @contextlib.contextmanager
    def logged(self, seq: int) -> Iterator[bool]:
        """One transaction for the changes made in the block and ``seq`` as the log's
        position: yields whether ``seq`` is new (False: applied before, change nothing).
        So a frame is applied exactly once (cluster mode has one writer: its applier)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(_LOG_SEQ_TABLE)
            row = self._db.execute("SELECT seq FROM log_seq WHERE k = 0").fetchone()
            fresh = seq > (int(row[0]) if row else 0)
            yield fresh
            if fresh:
                self._db.execute("INSERT OR REPLACE INTO log_seq (k, seq) VALUES (0, ?)", (seq,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reads -------------------------------------------------------------

    def get(self, key: int | str) -> TagInfo | None:
        return self._by_name.get(key) if isinstance(key, str) else self._by_id.get(key)

    def resolve(self, key: int | str) -> int:
        """A tag id for a name or an id (ids need not be in the catalog)."""
        if isinstance(key, str):
            info = self._by_name.get(key)
            if info is None:
                raise NotFound(f"no tag named {key!r}")
            return info.id
        return key

    def find(self, pattern: str = "*", limit: int = 10_000) -> list[TagInfo]:
        """Tags whose name matches a glob pattern (``*``, ``?``, ``[..]``), by name."""
        try:
            rows = self._db.execute(
                "SELECT id FROM tags WHERE name GLOB ? ORDER BY name LIMIT ?", (pattern, limit)
            ).fetchall()
        except sqlite3.DatabaseError as exc:  # damaged since it was opened and checked
            raise CorruptionError(damaged(self.path, str(exc))) from exc
        return [self._by_id[r[0]] for r in rows if r[0] in self._by_id]

    _names: NameIndex[TagInfo] | None = None  # built by the first search

    def search(self, text: str, limit: int, after: str | None = None) -> tuple[list[TagInfo], bool]:
        """Up to ``limit`` tags, by name after ``after``, whose name or description holds
        ``text`` (ignoring case); and whether more match (see name_index)."""
        with self._lock:
            tags = list(self._by_id.values())
        index = self._names
        if index is None or not index.current(tags):
            index = self._names = NameIndex(tags)
        return index.search(text, limit, after)

    def all(self) -> list[TagInfo]:
        return list(self._by_id.values())

    # -- writes ------------------------------------------------------------

    def create(self, name: str, **meta: Any) -> TagInfo:
        _check_name(name)
        fields = _check_meta(meta)
        if self.allocator is not None:
            return self._create_shared(name, fields)
        with self._lock:
            if name in self._by_name:
                raise InvalidInput(
                    f"a tag named {name!r} exists already (id {self._by_name[name].id})"
                )
            tag_id = max(max(self._by_id, default=-1), self._max_used_id()) + 1
            if tag_id > 0xFFFFFFFF:
                raise InvalidInput("no tag ids left")
            info = TagInfo(tag_id, name, created_us=time.time_ns() // 1000, **fields)
            self._db.execute(
                f"INSERT INTO tags ({_COLUMNS}, crc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*_values(info), _row_crc(info)),
            )
            self._put(info)
            return info

    def create_many(
        self, items: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[TagInfo | InvalidInput]:
        """Tags ``(name, settings)``, all new ones in one transaction (one fsync).

        Aligned with ``items``: the tag (new, or already there by that name: a
        concurrent writer may have made it) or the :class:`InvalidInput` that
        refused its name or settings, which refuses nothing else. Nothing is in
        memory before the transaction is committed.
        """
        out: list[TagInfo | InvalidInput] = []
        checked: list[dict[str, Any] | InvalidInput] = []
        for name, meta in items:
            try:
                _check_name(name)
                checked.append(_check_meta(meta))
            except InvalidInput as exc:
                checked.append(exc)
        shared = self._allocate_shared(items, checked)
        with self._lock:
            tag_id = max(max(self._by_id, default=-1), self._max_used_id())
            new: dict[str, TagInfo] = {}
            now = time.time_ns() // 1000
            for (name, _), fields in zip(items, checked, strict=True):
                if isinstance(fields, InvalidInput):
                    out.append(fields)
                    continue
                info = self._by_name.get(name) or new.get(name)
                if info is None and name in shared:
                    got = shared[name]
                    if isinstance(got, InvalidInput) or got[0] in self._by_id:
                        out.append(got if isinstance(got, InvalidInput) else _clash(name, got[0]))
                        continue
                    info = new[name] = TagInfo(got[0], name, created_us=now, **got[1])
                if info is None:
                    tag_id += 1
                    if tag_id > 0xFFFFFFFF:
                        out.append(InvalidInput("no tag ids left"))
                        continue
                    info = new[name] = TagInfo(tag_id, name, created_us=now, **fields)
                out.append(info)
            if new:
                rows = [(*_values(i), _row_crc(i)) for i in new.values()]
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        f"INSERT INTO tags ({_COLUMNS}, crc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                for info in new.values():
                    self._put(info)
        return out

    def adopt(self, name: str, tag_id: int, meta: dict[str, Any]) -> TagInfo:
        """Mirror an entry of the shared catalog (cluster mode): the tag ``name`` with id
        ``tag_id``, inserted unless it is here already; a name or id held otherwise is refused."""
        _check_name(name)
        fields = _check_meta(meta)
        with self._lock:
            old = self._by_name.get(name)
            if old is not None and old.id == tag_id:
                return old
            if old is not None or tag_id in self._by_id:
                raise _clash(name, tag_id)
            info = TagInfo(tag_id, name, created_us=time.time_ns() // 1000, **fields)
            self._db.execute(
                f"INSERT INTO tags ({_COLUMNS}, crc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*_values(info), _row_crc(info)),
            )
            self._put(info)
            return info

    def _create_shared(self, name: str, fields: dict[str, Any]) -> TagInfo:
        if name in self._by_name:
            raise InvalidInput(f"a tag named {name!r} exists already (id {self._by_name[name].id})")
        assert self.allocator is not None
        [got] = self.allocator([(name, fields)])
        if isinstance(got, InvalidInput):
            raise got
        tag_id, shared_fields, made = got
        info = self.adopt(name, tag_id, shared_fields)
        if not made:
            raise InvalidInput(f"a tag named {name!r} exists already (id {tag_id})")
        return info

    def _allocate_shared(
        self,
        items: Sequence[tuple[str, dict[str, Any]]],
        checked: Sequence[dict[str, Any] | InvalidInput],
    ) -> dict[str, tuple[int, dict[str, Any], bool] | InvalidInput]:
        """Cluster mode: the shared catalog's answer for each valid name not here yet."""
        if self.allocator is None:
            return {}
        wanted: dict[str, dict[str, Any]] = {}
        for (name, _), fields in zip(items, checked, strict=True):
            if not isinstance(fields, InvalidInput) and name not in self._by_name:
                wanted.setdefault(name, fields)
        if not wanted:
            return {}
        answers = self.allocator(list(wanted.items()))
        return dict(zip(wanted, answers, strict=True))

    def update(self, key: int | str, **meta: Any) -> TagInfo:
        fields = _check_meta(meta)
        with self._lock:
            old = self._require(key)
            new = TagInfo(**{**old.as_dict(), **fields})
            sets = ", ".join(f"{k} = ?" for k in fields)
            if sets:
                self._db.execute(
                    f"UPDATE tags SET {sets}, crc = ? WHERE id = ?",
                    (*fields.values(), _row_crc(new), old.id),
                )
            self._put(new)
            return new

    def rename(self, key: int | str, new_name: str) -> TagInfo:
        _check_name(new_name)
        with self._lock:
            old = self._require(key)
            if new_name in self._by_name and self._by_name[new_name].id != old.id:
                raise InvalidInput(f"a tag named {new_name!r} exists already")
            new = TagInfo(**{**old.as_dict(), "name": new_name})
            self._db.execute(
                "UPDATE tags SET name = ?, crc = ? WHERE id = ?", (new_name, _row_crc(new), old.id)
            )
            del self._by_name[old.name]
            self._put(new)
            return new

    def remove(self, key: int | str) -> TagInfo:
        with self._lock:
            old = self._require(key)
            self._db.execute("DELETE FROM tags WHERE id = ?", (old.id,))
            del self._by_id[old.id]
            del self._by_name[old.name]
            return old

    def _require(self, key: int | str) -> TagInfo:
        info = self.get(key)
        if info is None:
            raise NotFound(f"no tag {key!r} in the catalog")
        return info

    def _put(self, info: TagInfo) -> None:
        self._by_id[info.id] = info
        self._by_name[info.name] = info


_LOG_SEQ_TABLE = "CREATE TABLE IF NOT EXISTS log_seq (k INTEGER PRIMARY KEY, seq INTEGER)"


def _clash(name: str, tag_id: int) -> InvalidInput:
    return InvalidInput(
        f"the shared catalog gives {name!r} id {tag_id}, which this node's catalog holds "
        "otherwise: this data directory did not start empty in this cluster (docs/cluster.md)"
    )


def damaged(path: Path, detail: str) -> str:
    """The message for a damaged catalog: which file, what, and the way out."""
    return (
        f"tag catalog {path} is damaged ({detail}). It holds the tag names and settings, "
        "which no scan can rebuild: restore catalog.sqlite3 from a backup, and run "
        "`xtsdb-server check --data-dir DIR` to see whether anything else is damaged"
    )


def _values(info: TagInfo) -> tuple[Any, ...]:
    return (
        info.id,
        info.name,
        info.unit,
        info.description,
        info.value_type,
        info.duplicates,
        info.retention_us,
        info.created_us,
    )


def _row_crc(info: TagInfo) -> int:
    # Every column, in a form with one spelling per row (JSON of a list, UTF-8).
    return zlib.crc32(json.dumps(_values(info), ensure_ascii=False).encode())


def _open_checked(db: sqlite3.Connection, path: Path) -> list[TagInfo]:
    """Check the file and every row (migrating rows that have no CRC yet); the rows."""
    try:
        result = db.execute("PRAGMA integrity_check").fetchall()
        if result != [("ok",)]:
            raise CorruptionError(damaged(path, "; ".join(str(r[0]) for r in result[:3])))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        columns = [r[1] for r in db.execute("PRAGMA table_info(tags)")]
        if "crc" not in columns:
            _migrate(db, path)
        rows = db.execute(f"SELECT {_COLUMNS}, crc FROM tags ORDER BY id").fetchall()
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # damaged schema text
        raise CorruptionError(damaged(path, str(exc))) from exc
    infos, bad = [], []
    for *values, crc in rows:
        try:
            info = TagInfo(*values)
            ok = _row_crc(info) == crc
        except (TypeError, ValueError):  # a value of the wrong type: damage too
            ok = False
        if not ok:
            bad.append(str(values[0]))
            continue
        infos.append(info)
    if bad:
        shown = ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise CorruptionError(damaged(path, f"tag {shown} fails its row check"))
    return infos


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """A catalog written before rows had a CRC: compute them once, in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE tags ADD COLUMN crc INTEGER NOT NULL DEFAULT 0")
        rows = db.execute(f"SELECT {_COLUMNS} FROM tags").fetchall()
        db.executemany(
            "UPDATE tags SET crc = ? WHERE id = ?", [(_row_crc(TagInfo(*r)), r[0]) for r in rows]
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    log.warning(
        "tag catalog %s: added a CRC to each of its %d rows (one-time upgrade)", path, len(rows)
    )


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
        raise InvalidInput(f"a tag name is a non-empty string of at most {_MAX_NAME} characters")
    if _BAD_NAME.search(name):
        raise InvalidInput("a tag name may not contain control characters")


def _check_meta(meta: dict[str, Any]) -> dict[str, Any]:
    unknown = set(meta) - set(_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown tag fields: {sorted(unknown)}; known: {list(_FIELDS)}")
    for key in ("unit", "description"):
        if key in meta and (not isinstance(meta[key], str) or len(meta[key]) > 4096):
            raise InvalidInput(f"{key} must be a string of at most 4096 characters")
    if "value_type" in meta and meta["value_type"] not in VALUE_TYPES:
        raise InvalidInput(f"value_type must be one of {VALUE_TYPES}")
    if "duplicates" in meta and meta["duplicates"] not in DUPLICATE_POLICIES:
        raise InvalidInput(f"duplicates must be one of {DUPLICATE_POLICIES}")
    r = meta.get("retention_us", 0)
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise InvalidInput("retention_us must be an integer >= 0")
    return dict(meta)


check_meta = _check_meta
"""A tag's settings checked (unknown fields, types, ranges) as every catalog change checks
them; the shared catalog of cluster mode checks an update before publishing it."""

check_name = _check_name
"""A tag name checked as the catalog checks it (cluster mode: before a rename is published)."""
