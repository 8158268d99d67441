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
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from xtsdb.protocol.errors import CorruptionError, InvalidInput, NotFound

from .catalog_rows import (
    COLUMNS,
    DUPLICATE_POLICIES,
    VALUE_TYPES,
    TagInfo,
    check_meta,
    check_name,
    damaged,
    open_checked,
    row_crc,
    row_values,
)
from .name_index import NameIndex

__all__ = [
    "DUPLICATE_POLICIES",
    "VALUE_TYPES",
    "Catalog",
    "IdAllocator",
    "TagInfo",
    "check_meta",
    "check_name",
    "damaged",
]

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
            rows = open_checked(self._db, path)
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
        check_name(name)
        fields = check_meta(meta)
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
            return self._insert(TagInfo(tag_id, name, created_us=time.time_ns() // 1000, **fields))

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
                check_name(name)
                checked.append(check_meta(meta))
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
                rows = [(*row_values(i), row_crc(i)) for i in new.values()]
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        f"INSERT INTO tags ({COLUMNS}, crc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        check_name(name)
        fields = check_meta(meta)
        with self._lock:
            old = self._by_name.get(name)
            if old is not None and old.id == tag_id:
                return old
            if old is not None or tag_id in self._by_id:
                raise _clash(name, tag_id)
            return self._insert(TagInfo(tag_id, name, created_us=time.time_ns() // 1000, **fields))

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
        fields = check_meta(meta)
        with self._lock:
            old = self._require(key)
            new = TagInfo(**{**old.as_dict(), **fields})
            sets = ", ".join(f"{k} = ?" for k in fields)
            if sets:
                self._db.execute(
                    f"UPDATE tags SET {sets}, crc = ? WHERE id = ?",
                    (*fields.values(), row_crc(new), old.id),
                )
            self._put(new)
            return new

    def rename(self, key: int | str, new_name: str) -> TagInfo:
        check_name(new_name)
        with self._lock:
            old = self._require(key)
            if new_name in self._by_name and self._by_name[new_name].id != old.id:
                raise InvalidInput(f"a tag named {new_name!r} exists already")
            new = TagInfo(**{**old.as_dict(), "name": new_name})
            self._db.execute(
                "UPDATE tags SET name = ?, crc = ? WHERE id = ?", (new_name, row_crc(new), old.id)
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

    def _insert(self, info: TagInfo) -> TagInfo:
        """``info`` into SQLite, then into memory (the caller holds the lock)."""
        self._db.execute(
            f"INSERT INTO tags ({COLUMNS}, crc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*row_values(info), row_crc(info)),
        )
        self._put(info)
        return info

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
