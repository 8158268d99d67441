"""The crash torture harness, short: a few kill -9 rounds of ``bench/torture.py``.

Each round starts a server subprocess with tiny engine sizes (so block flushes,
chunk seals, WAL rotations and checkpoints are constant), lets several writer
threads write, SIGKILLs the server at a random moment, restarts it and checks
that every acknowledged point is present with its exact value and quality, and
that nothing returned is anything but a point that was sent. Long mode:
``python -m bench.torture --rounds 300``. Seeds are fixed, so the kill moments
are drawn the same way every run (where they land still varies with timing).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` is a folder of scripts, importable from the root
    sys.path.insert(0, str(ROOT))

from bench.torture import run_torture  # noqa: E402


@pytest.mark.timeout(120)
def test_kill_9_rounds_lose_no_acknowledged_point(tmp_path: Path) -> None:
    report = run_torture(5, tmp_path, writers=4, seed=7)
    assert report.ok, report.failure + "\n" + (tmp_path / "server.log").read_text()[-5000:]
    assert report.rounds == 5
    assert report.acked_points > 10_000, "writers made too little progress to test anything"
    assert report.unanswered >= 1  # some writes were cut by a kill: checked whole-or-absent


@pytest.mark.timeout(120)
def test_kill_9_rounds_with_durability_none(tmp_path: Path) -> None:
    # durability=none acknowledges before fsync: a process crash (not power loss)
    # must still lose nothing, since the page cache survives the process.
    report = run_torture(3, tmp_path, writers=3, seed=8, durability="none")
    assert report.ok, report.failure + "\n" + (tmp_path / "server.log").read_text()[-5000:]
    assert report.acked_points > 10_000
