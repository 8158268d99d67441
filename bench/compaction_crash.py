"""Crash points of compaction: SIGKILL at the Nth syscall of a compaction run, restart, check.

    .venv/bin/python -m bench.compaction_crash                 # every kind, N = 1, 2, ...
    .venv/bin/python -m bench.compaction_crash --kinds fdatasync --most 5

A directory with a rewrite-heavy history (the same timestamps written many
times, late points, deletes; many overlapping blocks and tombstones) is made
once and closed cleanly; its answers are the reference. For each syscall kind
and N = 1, 2, 3, ... a copy of it is opened by a child process that runs one
compaction pass and closes, under
``strace -f -e inject=KIND:signal=SIGKILL:when=N`` restricted (``-P``) to the
container files and the SQLite index, until a run finishes without reaching
the Nth call. After each kill the directory is opened again (no strace): every
answer must equal the reference bit for bit, ``check`` must report no damage,
and a compaction pass run then must settle the tags with the answers unchanged.

Exit status 0 if every crash point recovered.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xtsdb.server.engine import Engine, EngineConfig
from xtsdb.server.engine.verify import check_data_dir

KINDS = ("pwrite64", "fdatasync", "fsync")
CFG = EngineConfig(
    chunk_size=128 * 1024,
    meta_extents=1,
    chunks_per_container=4,
    block_points=100,
    workers=0,
    compaction=False,  # the child runs its pass by hand
)
TAGS = (1, 2, 3)
SPAN = (-(1 << 50), 1 << 50)


def make_history(data: Path, rounds: int = 6) -> None:
    rng = np.random.default_rng(11)
    ts = np.arange(400, dtype=np.int64) * 1_000_000
    with Engine.open(data, CFG) as eng:
        for r in range(rounds):
            for tag in TAGS:
                pick = np.sort(rng.choice(ts, size=250, replace=False))
                eng.write(tag, pick, rng.normal(size=250) + r)
                eng.write(tag, np.sort(rng.choice(ts + 500, 20, replace=False)), rng.random(20))
            eng.flush()
            if r % 2:
                lo = int(rng.integers(0, 350)) * 1_000_000
                eng.delete(1 + r % 3, lo, lo + 30_000_000)
                eng.flush()


def answers(eng: Engine) -> list[bytes]:
    out = []
    for tag in TAGS:
        p = eng.query(tag, *SPAN)
        out += [p.timestamps.tobytes(), p.values.tobytes(), p.qualities.tobytes()]
    return out


def traced_paths(data: Path) -> list[Path]:
    c = data / "containers"
    boxes = [c / f"c-{i:06d}.xtc" for i in range(8)]
    return [*boxes, *(data / f"index.sqlite3{s}" for s in ("", "-wal", "-shm", "-journal"))]


def child(data: Path) -> None:
    with Engine.open(data, CFG) as eng:
        eng.compact()


@dataclass
class Point:
    kind: str
    n: int
    fired: bool
    problem: str = ""


def run_point(template: Path, reference: list[bytes], kind: str, n: int, work: Path) -> Point:
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(template, data)
    cmd = ["strace", "-f", "-o", str(work / "strace.log"), "-e", f"trace={kind}"]
    cmd += [a for p in traced_paths(data) for a in ("-P", str(p))]
    cmd += ["-e", f"inject={kind}:signal=SIGKILL:when={n}"]
    cmd += [sys.executable, "-m", "bench.compaction_crash", "--child", str(data)]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(cmd, cwd=root, capture_output=True, timeout=120)
    fired = proc.returncode == -signal.SIGKILL or proc.returncode == 128 + signal.SIGKILL
    if not fired and proc.returncode != 0:
        return Point(kind, n, fired, f"child failed: {proc.stderr.decode()[-400:]}")
    return Point(kind, n, fired, verify(data, reference))


def verify(data: Path, reference: list[bytes]) -> str:
    """'' if the directory answers as the reference, is undamaged and compacts again."""
    with Engine.open(data, CFG) as eng:
        if answers(eng) != reference:
            return "answers differ from the reference after the restart"
        if [r for r in eng.repairs if "lost" in r or "damage" in r]:
            return f"repairs: {eng.repairs}"
    report = check_data_dir(data)
    if report.damaged:
        return "check: " + "; ".join(report.lines())
    with Engine.open(data, CFG) as eng:
        eng.compact()
        if answers(eng) != reference:
            return "answers differ after compacting again"
        if eng.compact():
            return "a second pass still found work"
    return ""


def prepare(workdir: Path) -> tuple[Path, list[bytes]]:
    template = workdir / "template"
    make_history(template)
    with Engine.open(template, CFG) as eng:
        return template, answers(eng)


def walk(kinds: list[str], most: int, workdir: Path, every: int = 1) -> list[Point]:
    template, reference = prepare(workdir)
    points = []
    for kind in kinds:
        n = 1
        while n <= most:
            p = run_point(template, reference, kind, n, workdir)
            points.append(p)
            print(f"{kind:10s} N={n:4d} {'killed' if p.fired else 'ran out'} {p.problem or 'ok'}")
            if not p.fired:
                break
            n += every
    return points


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--most", type=int, default=10_000, help="largest N per kind")
    ap.add_argument("--every", type=int, default=1, help="step of N")
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    with tempfile.TemporaryDirectory(prefix="xtsdb-compaction-crash-") as tmp:
        points = walk(args.kinds.split(","), args.most, Path(tmp), args.every)
    bad = [p for p in points if p.problem]
    killed = sum(p.fired for p in points)
    print(f"{len(points)} runs, {killed} killed, {len(bad)} not recovered")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
