"""The tag catalog's rows: what a tag is (:class:`TagInfo`), how a row is stored and
checked in ``catalog.sqlite3``, and the checks of names and settings.

Split from :mod:`.catalog` (the catalog's operations) to keep each under the size the
project aims at; :mod:`.catalog` re-exports what its users import from it.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xtsdb.protocol.errors import CorruptionError, InvalidInput

DUPLICATE_POLICIES = ("last", "first", "reject")
VALUE_TYPES = ("float64", "int64", "bool", "enum")
log = logging.getLogger("xtsdb.engine")

_MAX_NAME = 256
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f]")

# ``crc``: CRC32 of the row's other columns (see row_crc). SQLite checks its pages'
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
COLUMNS = "id, name, unit, description, value_type, duplicates, retention_us, created_us"

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


def damaged(path: Path, detail: str) -> str:
    """The message for a damaged catalog: which file, what, and the way out."""
    return (
        f"tag catalog {path} is damaged ({detail}). It holds the tag names and settings, "
        "which no scan can rebuild: restore catalog.sqlite3 from a backup, and run "
        "`xtsdb-server check --data-dir DIR` to see whether anything else is damaged"
    )


def row_values(info: TagInfo) -> tuple[Any, ...]:
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


def row_crc(info: TagInfo) -> int:
    # Every column, in a form with one spelling per row (JSON of a list, UTF-8).
    return zlib.crc32(json.dumps(row_values(info), ensure_ascii=False).encode())


def open_checked(db: sqlite3.Connection, path: Path) -> list[TagInfo]:
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
        rows = db.execute(f"SELECT {COLUMNS}, crc FROM tags ORDER BY id").fetchall()
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # damaged schema text
        raise CorruptionError(damaged(path, str(exc))) from exc
    infos, bad = [], []
    for *values, crc in rows:
        try:
            info = TagInfo(*values)
            ok = row_crc(info) == crc
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
        rows = db.execute(f"SELECT {COLUMNS} FROM tags").fetchall()
        db.executemany(
            "UPDATE tags SET crc = ? WHERE id = ?", [(row_crc(TagInfo(*r)), r[0]) for r in rows]
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    log.warning(
        "tag catalog %s: added a CRC to each of its %d rows (one-time upgrade)", path, len(rows)
    )


def check_name(name: Any) -> None:
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
        raise InvalidInput(f"a tag name is a non-empty string of at most {_MAX_NAME} characters")
    if _BAD_NAME.search(name):
        raise InvalidInput("a tag name may not contain control characters")


def check_meta(meta: dict[str, Any]) -> dict[str, Any]:
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
