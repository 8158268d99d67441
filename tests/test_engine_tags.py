"""Get-or-create of a tag by name: the one path the binary and HTTP writers share."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from xtsdb.protocol.errors import InvalidInput
from xtsdb.server.engine import Engine, EngineConfig

CFG = EngineConfig(read_workers=0, chunk_size=64 * 1024, meta_extents=1, chunks_per_container=2)


def test_get_or_create_returns_the_existing_id_and_creates_once(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "db", CFG) as e:
        made = e.create_tag("TI100.PV", unit="degC")
        assert e.get_or_create_tag("TI100.PV") == made.id
        new = e.get_or_create_tag("TI101.PV")
        assert new != made.id and e.catalog.resolve("TI101.PV") == new
        assert e.get_or_create_tag("TI101.PV") == new
        assert len(e.catalog.all()) == 2
    with Engine.open(tmp_path / "db", CFG) as e:  # the created name is durable
        assert e.get_or_create_tag("TI101.PV") == new


def test_get_or_create_refuses_a_bad_name_and_changes_nothing(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "db", CFG) as e:
        for bad in ("", "a\nb", "x" * 5000):
            with pytest.raises(InvalidInput):
                e.get_or_create_tag(bad)
        assert e.catalog.all() == []


def race(e: Engine, name: str, n_threads: int) -> list[int]:
    """``n_threads`` threads released together, each asking for ``name``'s id."""
    start = threading.Barrier(n_threads)
    ids: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            ids.append(e.get_or_create_tag(name))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    return ids


def test_threads_racing_on_one_name_all_get_the_same_id(tmp_path: Path) -> None:
    names = [f"RACE{i}" for i in range(25)]
    with Engine.open(tmp_path / "db", CFG) as e:
        for name in names:
            ids = race(e, name, 8)
            assert len(ids) == 8 and len(set(ids)) == 1
            assert e.catalog.resolve(name) == ids[0]
        assert sorted(t.name for t in e.catalog.all()) == sorted(names)
