"""Crash recovery with real processes: SIGKILL after acknowledged group commits.

The C++ original's crash tests used close() as the "crash" and its WAL replay
recovered nothing. Here a child process writes, prints what was acknowledged,
and is killed with SIGKILL at a moment the parent does not choose precisely.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from xtsdb.server.engine import Engine, EngineConfig

SEC = 1_000_000
CFG = dict(
    chunk_size=64 * 1024,
    meta_extents=1,
    chunks_per_container=2,
    block_points=200,
    read_workers=0,
    wal_segment_bytes=32 * 1024,
    wal_checkpoint_bytes=96 * 1024,
)

# Each acknowledged write_batches() call prints "ack <tag> <start> <n>"; values are a
# function of (tag, ts) so the parent can check every recovered value exactly.
CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    from xtsdb.server.engine import Engine, EngineConfig, WriteBatch
    if __name__ == "__main__":
        eng = Engine.open(sys.argv[1], EngineConfig(**eval(sys.argv[2])))
        print("open", flush=True)
        pos = {t: 0 for t in range(6)}
        i = 0
        while True:
            batches = []
            for t in (i % 6, (i + 1) % 6):
                n = 37 + (i % 50)
                ts = np.arange(pos[t], pos[t] + n, dtype=np.int64)
                batches.append((t, pos[t], n, WriteBatch.build(t, ts, ts * 0.5 + t, ts % 256)))
                pos[t] += n
            eng.write_batches([b for *_, b in batches])
            for t, start, n, _ in batches:
                print("ack", t, start, n, flush=True)
            i += 1
    """
)


def run_and_kill(data: Path, min_acks: int, extra_delay: float) -> list[tuple[int, int, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data), repr(CFG)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acks: list[tuple[int, int, int]] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        line = proc.stdout.readline()
        assert line.strip() == "open", proc.stderr.read() if proc.stderr else line
        while len(acks) < min_acks and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            _, t, s, n = line.split()
            acks.append((int(t), int(s), int(n)))
        time.sleep(extra_delay)
    finally:
        proc.kill()  # SIGKILL to this child only
        out, err = proc.communicate(timeout=30)
    # Acks printed after our last read count too; the text after the last newline may
    # be a line cut short by the kill, so it is dropped.
    for line in out.split("\n")[:-1]:
        if line.startswith("ack"):
            _, t, s, n = line.split()
            acks.append((int(t), int(s), int(n)))
    assert acks, f"child acknowledged nothing: {err[-2000:]}"
    return acks


def check_all_present(data: Path, acks: list[tuple[int, int, int]]) -> None:
    with Engine.open(data, EngineConfig(**CFG)) as eng:  # type: ignore[arg-type]
        for tag in range(6):
            want = max((s + n for t, s, n in acks if t == tag), default=0)
            p = eng.query(tag, 0, 1 << 40)
            assert len(p) >= want, f"tag {tag}: {len(p)} points back, {want} acknowledged"
            ts = p.timestamps[:want]
            assert np.array_equal(ts, np.arange(want))
            assert np.array_equal(p.values[:want], ts * 0.5 + tag)
            assert np.array_equal(p.qualities[:want], (ts % 256).astype(np.uint8))


@pytest.mark.parametrize("round_", range(4))
def test_sigkill_after_acks_loses_nothing(tmp_path: Path, round_: int) -> None:
    data = tmp_path / "db"
    # Several kills on the same directory: each recovery must also survive the next crash.
    rng = np.random.default_rng(round_)
    all_acks: list[tuple[int, int, int]] = []
    for _ in range(3):
        all_acks = run_and_kill(data, int(rng.integers(20, 400)), float(rng.uniform(0, 0.05)))
        check_all_present(data, all_acks)
    wal_files = list((data / "wal").glob("wal-*.log"))
    assert len(wal_files) < 20, "checkpoints must recycle WAL segments"


def test_torn_wal_tail_is_truncated(tmp_path: Path) -> None:
    data = tmp_path / "db"
    acks = run_and_kill(data, 50, 0.0)
    segs = sorted((data / "wal").glob("wal-*.log"))
    last = segs[-1]
    size = last.stat().st_size
    with open(last, "ab") as f:  # a torn record: plausible length, garbage after it
        f.write((1000).to_bytes(4, "little") + os.urandom(40))
    with Engine.open(data, EngineConfig(**CFG)) as eng:  # type: ignore[arg-type]
        assert any("truncat" in r or "torn" in r for r in eng.repairs), eng.repairs
        assert last.stat().st_size == size  # cut exactly where the torn record began
    check_all_present(data, acks)
    assert list((data / "wal").glob("wal-*.log")) == [], "a clean close leaves no WAL to replay"


SEALER_CHILD = textwrap.dedent(
    """
    import sys, time, numpy as np
    from xtsdb.server.engine import Engine, EngineConfig
    if __name__ == "__main__":
        eng = Engine.open(sys.argv[1], EngineConfig(**eval(sys.argv[2])))
        for i in range(40):  # block_points=200: the sealer writes blocks, no checkpoint yet
            ts = np.arange(i * 100, (i + 1) * 100, dtype=np.int64)
            eng.write(1, ts, ts * 2.0)
        while eng.stats()["blocks"] < 10:
            time.sleep(0.01)
        print("ready", flush=True)
        time.sleep(60)
    """
)


def test_torn_directory_entry_in_unsealed_chunk_is_cut_and_replayed(tmp_path: Path) -> None:
    from xtsdb.server.engine.container import DIR_OFFSET, ENTRY_SIZE

    data = tmp_path / "db"
    cfg = dict(CFG, chunk_size=1 << 20, wal_checkpoint_bytes=1 << 30)
    proc = subprocess.Popen(
        [sys.executable, "-c", SEALER_CHILD, str(data), repr(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    # Tear entry 3 of chunk 0's directory; entries after it stay intact on disk.
    container = data / "containers" / "c-000000.xtc"
    with open(container, "r+b") as f:
        f.seek(16 * 1024 + DIR_OFFSET + 3 * ENTRY_SIZE + 10)
        f.write(b"\xde\xad")
    with Engine.open(data, EngineConfig(**cfg)) as eng:  # type: ignore[arg-type]
        assert any("torn" in r for r in eng.repairs), eng.repairs
        p = eng.query(1, 0, 1 << 40)
        assert np.array_equal(p.timestamps, np.arange(4000))
        assert np.array_equal(p.values, np.arange(4000) * 2.0)
        eng.write(1, [5000], [1.0])  # writes go on in a fresh chunk
    with Engine.open(data, EngineConfig(**cfg)) as eng:  # type: ignore[arg-type]
        assert len(eng.query(1, 0, 1 << 40)) == 4001


DELETE_CHILD = textwrap.dedent(
    """
    import sys, time, numpy as np
    from xtsdb.server.engine import Engine, EngineConfig
    if __name__ == "__main__":
        eng = Engine.open(sys.argv[1], EngineConfig(**eval(sys.argv[2])))
        eng.write(1, np.arange(2000), np.arange(2000.0))
        eng.flush()
        eng.write(1, np.arange(2000, 2500), np.arange(2000.0, 2500.0))
        eng.delete(1, 1000, 2200)
        eng.write(1, [1500], [-1.0])
        print("done", flush=True)
        time.sleep(60)
    """
)


def test_delete_survives_sigkill_before_checkpoint(tmp_path: Path) -> None:
    data = tmp_path / "db"
    proc = subprocess.Popen(
        [sys.executable, "-c", DELETE_CHILD, str(data), repr(CFG)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "done", proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    expect = np.r_[np.arange(1000), 1500, np.arange(2200, 2500)]
    for _ in range(2):  # replay twice (the second open replays nothing): same answer
        with Engine.open(data, EngineConfig(**CFG)) as eng:  # type: ignore[arg-type]
            p = eng.query(1, 0, 1 << 40)
            assert np.array_equal(p.timestamps, expect)
            assert p.values[1000] == -1.0
