"""Crash points: SIGKILL at exact syscalls of the write path, then restart and check.

The harness is ``bench/crashpoints.py`` (its docstring says how the crash points
are chosen); here CI runs a fixed, bounded subset of it against the real server
process, plus the half-made-file cases without strace.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_ENGINE, require_program

from xtsdb.protocol.errors import CorruptionError
from xtsdb.server.engine import Engine, EngineConfig

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` is a folder of scripts, importable from the root
    sys.path.insert(0, str(ROOT))
from bench.crashpoints import Point, run_point, run_recovery_point  # noqa: E402

CFG = EngineConfig(
    chunk_size=64 * 1024, meta_extents=1, chunks_per_container=2, block_points=200, read_workers=0
)


def _write(eng: Engine, n: int) -> None:
    ts = np.arange(n, dtype=np.int64)
    eng.write(7, ts, ts * 0.5)
    eng.flush()


def test_unfinished_container_files_are_removed_at_open(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Engine.open(data, CFG) as eng:
        _write(eng, 1000)
    box = data / "containers"
    size = (data / "containers" / "c-000000.xtc").stat().st_size
    # What a crash leaves at each step of making a file: a temporary file (new way),
    # a 0-byte file and a sized file without a header (made in place by older versions).
    (box / "c-000001.xtc.tmp").write_bytes(b"")
    (box / "c-000002.xtc").write_bytes(b"")
    with open(box / "c-000003.xtc", "wb") as f:
        f.truncate(size)
    with Engine.open(data, CFG) as eng:
        assert sorted(p.name for p in box.iterdir()) == ["c-000000.xtc"]
        assert len(eng.query(7, 0, 10_000)) == 1000
        removed = [r for r in eng.repairs if "unfinished container file removed" in r]
        assert len(removed) == 3, eng.repairs
        _write(eng, 2000)  # and the next container can be made again


def test_container_with_data_behind_a_blank_header_is_refused_not_removed(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with Engine.open(data, CFG) as eng:
        _write(eng, 1000)
    path = data / "containers" / "c-000000.xtc"
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(16 * 1024), 0)  # the header is lost, its chunks are not
    finally:
        os.close(fd)
    with pytest.raises(CorruptionError, match="bad magic"):
        Engine.open(data, CFG)
    assert path.exists()


def _run(tmp_path: Path, group: str, kind: str, n: int) -> Point:
    work = tmp_path / f"{group}-{kind}-{n}"
    work.mkdir()
    return run_point(group, kind, n, work)


# Each step of making the first container file: create, size, reserve, header, fsync,
# rename, fsync of the directory. Before the fix a kill on entry to ftruncate left a
# 0-byte c-000000.xtc and every later start failed with "bad magic".
STEPS = [
    ("openat", 1),
    ("ftruncate", 1),
    ("fallocate", 1),
    ("pwrite64", 1),
    ("fsync", 1),
    ("rename", 1),
    ("fsync", 2),
]


@pytest.mark.parametrize(("kind", "n"), STEPS)
def test_kill_at_each_step_of_making_a_container(tmp_path: Path, kind: str, n: int) -> None:
    require_program("strace", "strace")
    p = _run(tmp_path, "containers", kind, n)
    assert p.reached, f"{kind} #{n} on the container files was never reached"
    assert p.ok, p.problems


# A bounded, fixed spread over every group of files and every syscall kind that
# the workload makes there; N is kept below each thread's count in the workload
# so every point is really reached. `python -m bench.crashpoints` walks them all.
SUBSET = [
    ("top", "mkdir", 1),
    ("top", "openat", 3),
    ("top", "write", 1),
    ("top", "fsync", 2),
    ("top", "fdatasync", 2),
    ("top", "rename", 1),
    ("segments", "openat", 4),
    ("segments", "pwritev2", 10),
    ("segments", "fdatasync", 30),
    ("segments", "fsync", 8),
    ("segments", "unlink", 3),
    ("walmeta", "pwritev2", 2),
    ("walmeta", "rename", 3),
    ("walmeta", "fsync", 9),
    ("containers", "fallocate", 4),
    ("containers", "pwrite64", 10),
    ("containers", "pwrite64", 33),
    ("containers", "fdatasync", 6),
    ("sqlite", "openat", 4),
    ("sqlite", "pwrite64", 25),
    ("sqlite", "fdatasync", 7),
]


@pytest.mark.parametrize(("group", "kind", "n"), SUBSET)
def test_crash_point_recovers(tmp_path: Path, group: str, kind: str, n: int) -> None:
    require_program("strace", "strace")
    p = _run(tmp_path, group, kind, n)
    assert p.reached, f"{group} {kind} #{n} was never reached: the workload changed"
    assert p.ok, p.problems


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def test_read_worker_killed_at_a_syscall_breaks_no_later_query(tmp_path: Path) -> None:
    """SIGKILL one decode worker at its next pread64 (strace -p on that process only)."""
    strace = require_program("strace", "strace")
    # Two workers, and every query decoded in them.
    cfg = EngineConfig(**{**SMALL_ENGINE, "read_workers": 2}, parallel_min_points=0)
    with Engine.open(tmp_path / "data", cfg) as eng:
        ts = np.arange(20_000, dtype=np.int64)
        eng.write(1, ts, ts * 0.5)
        eng.flush()
        assert len(eng.query(1, 0, 1 << 40)) == 20_000  # starts the pool
        workers = [w for fs in _children(os.getpid()) for w in _children(fs)]
        assert workers, "no worker processes found"
        cmd = [
            strace,
            "-qq",
            "-o",
            "/dev/null",
            "-p",
            str(workers[0]),
            "-e",
            "trace=pread64",
            "-e",
            "inject=pread64:signal=SIGKILL:when=1",
        ]
        tracer = subprocess.Popen(cmd)
        try:
            deadline = time.monotonic() + 10
            while "TracerPid:\t0" in Path(f"/proc/{workers[0]}/status").read_text():
                assert time.monotonic() < deadline, "strace did not attach"
                time.sleep(0.02)
            # Until the traced worker has taken a job (the other one may take them all).
            while tracer.poll() is None and time.monotonic() < deadline + 20:
                with contextlib.suppress(Exception):
                    eng.query(1, 0, 1 << 40)  # the query the kill lands in may fail
            tracer.wait(10)
        finally:
            if tracer.poll() is None:
                tracer.kill()
                tracer.wait(10)
        r = eng.query(1, 0, 1 << 40)
        assert len(r) == 20_000 and bool((r.values == r.timestamps * 0.5).all())


# A crash that leaves something to repair (a leftover .tmp container, a WAL cut
# mid-batch), then a kill inside the start that repairs it: the start after that
# must still recover everything. `python -m bench.crashpoints --recovery` walks all.
RECOVERY = [
    (("containers", "ftruncate", 1), "unlink", 1),
    (("segments", "pwritev2", 5), "fdatasync", 1),
    (("segments", "pwritev2", 5), "rename", 1),
]


@pytest.mark.parametrize(("seed", "kind", "n"), RECOVERY)
def test_crash_during_recovery_recovers(
    tmp_path: Path, seed: tuple[str, str, int], kind: str, n: int
) -> None:
    require_program("strace", "strace")
    (tmp_path / "first").mkdir()
    crashed = tmp_path / "crashed"
    first = run_point(*seed, tmp_path / "first", keep=crashed)
    assert first.reached and first.ok and first.outcome is not None, first.problems
    p = run_recovery_point(crashed, first.outcome, kind, n, tmp_path / "second")
    assert p.reached, f"the start never made {kind} call #{n}"
    assert p.ok, p.problems
