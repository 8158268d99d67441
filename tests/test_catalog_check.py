"""The tag catalog checks itself at open: damage is a clear error, never a rename or 'internal'.

Damage is done to a closed engine's ``catalog.sqlite3``: one byte of a tag name,
each page zeroed in turn, and a catalog written before rows carried a CRC.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from xtsdb.protocol.errors import CorruptionError
from xtsdb.server.engine import Engine, EngineConfig

CFG = EngineConfig(chunk_size=64 * 1024, meta_extents=1, block_points=500, read_workers=0)
NAMES = [f"plant{i // 10}.unit{i % 10}.FIC{100 + i}.PV" for i in range(60)]


def make_catalog(data: Path, extra: int = 0) -> dict[str, dict[str, object]]:
    """A closed engine with named tags (and ``extra`` more); what the catalog says."""
    with Engine.open(data, CFG) as eng:
        for i, name in enumerate(NAMES):
            eng.create_tag(name, unit="m3/h", description=f"flow {i} " + "x" * 40)
        for i in range(extra):
            eng.create_tag(f"area{i % 7}.tag{i:05d}", unit="degC", description="y" * 150)
        eng.update_tag(NAMES[3], duplicates="reject")
        eng.catalog.rename(NAMES[5], NAMES[5] + ".renamed")
        return {t.name: t.as_dict() for t in eng.catalog.all()}


def catalog_as_opened(data: Path) -> dict[str, dict[str, object]]:
    with Engine.open(data, CFG) as eng:
        listed = {t.name for t in eng.catalog.find("*")}
        tags = {t.name: t.as_dict() for t in eng.catalog.all()}
        assert listed == set(tags)  # 'tag list' answers from the same catalog
        return tags


def assert_clear_refusal(exc: CorruptionError) -> None:
    msg = str(exc)
    assert "catalog.sqlite3" in msg and "backup" in msg and "xtsdb-server check" in msg


def flip_everywhere(path: Path, text: str, offset: int, bit: int = 0x01) -> int:
    """Flip one bit of ``text`` at every place it is stored (row and index entry)."""
    raw = bytearray(path.read_bytes())
    found, at = 0, raw.find(text.encode())
    while at >= 0:
        raw[at + offset] ^= bit
        found += 1
        at = raw.find(text.encode(), at + 1)
    path.write_bytes(bytes(raw))
    return found


@pytest.mark.parametrize("where", ["name in the row", "name in row and index", "description"])
def test_a_changed_byte_is_refused_never_a_silent_rename(tmp_path: Path, where: str) -> None:
    data = tmp_path / "db"
    make_catalog(data)
    path = data / "catalog.sqlite3"
    if where == "description":  # not indexed: only the row's CRC can see it
        assert flip_everywhere(path, "flow 42 ", 2) == 1
    else:  # plant4 -> plant5: still a valid, unique name
        raw = path.read_bytes()
        if where == "name in the row":
            at = raw.find(NAMES[42].encode())
            path.write_bytes(raw[: at + 6] + bytes([raw[at + 6] ^ 1]) + raw[at + 7 :])
        else:
            assert flip_everywhere(path, NAMES[42], 6) == 2
    with pytest.raises(CorruptionError) as err:
        Engine.open(data, CFG)
    assert_clear_refusal(err.value)
    if where == "description":
        assert "tag 42 fails its row check" in str(err.value)
    Engine.open(tmp_path / "other", CFG).close()  # the engine lock was released


def test_every_zeroed_page_is_refused_or_harmless(tmp_path: Path) -> None:
    data = tmp_path / "db"
    want = make_catalog(data, extra=300)
    path = data / "catalog.sqlite3"
    good = path.read_bytes()
    page = 4096
    assert len(good) // page >= 20
    outcomes = {"refused": 0, "intact": 0}
    for n in range(len(good) // page):
        path.write_bytes(good[: n * page] + bytes(page) + good[(n + 1) * page :])
        try:
            got = catalog_as_opened(data)
        except CorruptionError as exc:
            assert_clear_refusal(exc)
            outcomes["refused"] += 1
            continue
        assert got == want, f"page {n}: the catalog changed silently"
        outcomes["intact"] += 1
    path.write_bytes(good)
    assert catalog_as_opened(data) == want
    assert outcomes["refused"] >= 1, outcomes


def test_server_refuses_to_start_on_a_damaged_catalog(tmp_path: Path) -> None:
    data = tmp_path / "db"
    make_catalog(data)
    path = data / "catalog.sqlite3"
    raw = bytearray(path.read_bytes())
    raw[raw.find(NAMES[7].encode()) + 2] ^= 0x20
    path.write_bytes(bytes(raw))
    args = ["--data-dir", str(data), "--port", "0", "--http-port", "0"]
    try:  # a subprocess: a server that wrongly starts is ended by the timeout
        r = subprocess.run(
            [sys.executable, "-m", "xtsdb.server", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the server started on a damaged catalog")
    assert r.returncode == 1
    assert "catalog.sqlite3" in r.stderr and "xtsdb-server check" in r.stderr


OLD_SCHEMA = """
CREATE TABLE tags (
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


def test_a_catalog_without_row_checks_is_migrated(tmp_path: Path) -> None:
    data = tmp_path / "db"
    Engine.open(data, CFG).close()
    path = data / "catalog.sqlite3"
    path.unlink()
    with sqlite3.connect(path) as db:  # as the first version wrote it
        db.executescript(OLD_SCHEMA)
        db.executemany(
            "INSERT INTO tags VALUES (?, ?, 'm', '', 'float64', ?, 0, 1)",
            [(i, name, "reject" if i == 2 else "last") for i, name in enumerate(NAMES[:5])],
        )
    db.close()
    with Engine.open(data, CFG) as eng:
        assert sorted(t.name for t in eng.catalog.all()) == sorted(NAMES[:5])
        assert eng.catalog.get(2).duplicates == "reject"  # type: ignore[union-attr]
    raw = bytearray(path.read_bytes())
    raw[raw.find(NAMES[1].encode()) + 3] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptionError) as err:  # migrated rows are checked from now on
        Engine.open(data, CFG)
    assert_clear_refusal(err.value)
