"""Crash points of compaction (bounded subset of bench/compaction_crash.py, real strace kills).

A child process compacts a rewrite-heavy directory and is SIGKILLed at its Nth
pwrite64 / fdatasync on the container files and the SQLite index.
After each kill the directory must answer exactly as before compaction, pass
``check`` without damage, and settle when compacted again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import require_program

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` is a folder of scripts, importable from the root
    sys.path.insert(0, str(ROOT))
from bench.compaction_crash import prepare, run_point  # noqa: E402

# N values spread over each kind's calls: the first writes of the merged blocks,
# the fsyncs around the retire record, the index transaction and what follows.
POINTS = [
    *(("pwrite64", n) for n in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)),
    *(("fdatasync", n) for n in (1, 2, 3, 4, 6, 9)),
]  # no fsync: the engine and SQLite (WAL mode) call fdatasync on these files


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    require_program("strace", "strace")
    return prepare(tmp_path_factory.mktemp("template"))


@pytest.mark.parametrize(("kind", "n"), POINTS)
def test_kill_during_compaction_leaves_old_or_new_set(
    template: tuple[Path, list[bytes]], kind: str, n: int, tmp_path: Path
) -> None:
    data, reference = template
    p = run_point(data, reference, kind, n, tmp_path)
    assert p.problem == "", p.problem
    assert p.fired or n > 3, "the first calls of each kind must be reached"
