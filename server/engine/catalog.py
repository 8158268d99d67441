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

import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xtsdb.protocol.errors import CorruptionError, InvalidInput, NotFound

DUPLICATE_POLICIES = ("last", "first", "reject")
VALUE_TYPES = ("float64", "int64", "bool", "enum")
_MAX_NAME = 256
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f]")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tags (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    unit TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    value_type TEXT NOT NULL DEFAULT 'float64',
    duplicates TEXT NOT NULL DEFAULT 'last',
    retention_us INTEGER NOT NULL DEFAULT 0,
    created_us INTEGER NOT NULL
);
"""

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


class Catalog:
    """Thread-safe; reads come from an in-memory copy, writes go to SQLite first."""

    def __init__(self, path: Path, max_used_id: Callable[[], int]) -> None:
        self._lock = threading.Lock()
        self._max_used_id = max_used_id
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            rows = self._db.execute(
                "SELECT id, name, unit, description, value_type, duplicates, retention_us,"
                " created_us FROM tags"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise CorruptionError(f"tag catalog {path} is unreadable: {exc}") from exc
        self._by_id = {r[0]: TagInfo(*r) for r in rows}
        self._by_name = {t.name: t for t in self._by_id.values()}

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
        rows = self._db.execute(
            "SELECT id FROM tags WHERE name GLOB ? ORDER BY name LIMIT ?", (pattern, limit)
        ).fetchall()
        return [self._by_id[r[0]] for r in rows if r[0] in self._by_id]

    def all(self) -> list[TagInfo]:
        return list(self._by_id.values())

    # -- writes ------------------------------------------------------------

    def create(self, name: str, **meta: Any) -> TagInfo:
        _check_name(name)
        fields = _check_meta(meta)
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
                "INSERT INTO tags VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (info.id, info.name, info.unit, info.description, info.value_type,
                 info.duplicates, info.retention_us, info.created_us),
            )  # fmt: skip
            self._put(info)
            return info

    def update(self, key: int | str, **meta: Any) -> TagInfo:
        fields = _check_meta(meta)
        with self._lock:
            old = self._require(key)
            new = TagInfo(**{**old.as_dict(), **fields})
            sets = ", ".join(f"{k} = ?" for k in fields)
            if sets:
                self._db.execute(f"UPDATE tags SET {sets} WHERE id = ?", (*fields.values(), old.id))
            self._put(new)
            return new

    def rename(self, key: int | str, new_name: str) -> TagInfo:
        _check_name(new_name)
        with self._lock:
            old = self._require(key)
            if new_name in self._by_name and self._by_name[new_name].id != old.id:
                raise InvalidInput(f"a tag named {new_name!r} exists already")
            self._db.execute("UPDATE tags SET name = ? WHERE id = ?", (new_name, old.id))
            del self._by_name[old.name]
            new = TagInfo(**{**old.as_dict(), "name": new_name})
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
