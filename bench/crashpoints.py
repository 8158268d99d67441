"""Crash points: SIGKILL the server at its Nth call of one syscall, restart, check.

    .venv/bin/python -m bench.crashpoints                    # every group and kind, N = 1, 2, ...
    .venv/bin/python -m bench.crashpoints --groups containers --kinds ftruncate,rename

Random kill timing rarely lands inside the short windows between the steps of
making a file (create, size, header, fsync, rename, fsync of the directory).
This walks them: the server (``python -m xtsdb.server``, the real process) runs
the workload of :mod:`bench.crashload` under
``strace -f -e inject=SYSCALL:signal=SIGKILL:when=N`` for each syscall of the
write path and N = 1, 2, 3, ... until the workload finishes without reaching
the Nth call. After each kill the server is started again on the directory
without strace and checked (:func:`bench.crashload.check`): it starts, every
acknowledged point is there and exact, no deleted point is back, an unanswered
request is whole or absent, and it stops cleanly.

Only calls on the engine's own files count: strace's ``-P`` (exact paths) lists
them by group (:func:`traced_paths`: top-level files, WAL segments, ``wal/``
and the checkpoint, containers, SQLite files), so the interpreter's imports and
the sockets do not use up N. (``--seccomp-bpf`` is not used: with it strace
6.1 stopped injecting after the first matching call.)

Threads. strace counts each syscall per thread ("per tracee"), so ``when=N``
fires at the first thread to make its Nth such call. Within one group a
syscall is mostly made by one thread, and that is how the sealer thread is
reached without naming it (strace cannot select a thread by name): the
container files and the checkpoint are written by the sealer (plus one
``flush`` request's seal and the seal at shutdown, which come later than the
sealer's calls of the same number), so those walks are the sealer's own Nth
calls; the WAL segments are the group-commit thread's. A call that a busier
thread's call of the same number always precedes (the sealer's fsync of
``wal/`` after a recycle, behind the commit thread's fsync of it after a
rotation) is not reached.

Read worker processes: this server starts none (a query decodes in worker
processes only from ``parallel_min_points``, 8 million points, which is not a
server setting), so their crash points are exercised on the engine in
``tests/test_crashpoints.py``, with ``strace -p`` on one worker.

Exit status 0 if every crash point recovered.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import grid
from bench.crashload import N_WRITES, Outcome, check, plan, traced_run

# One syscall per kind: strace counts each syscall of a set separately, so a set
# would make "the Nth call" ambiguous.
KINDS = (
    "openat",
    "mkdir",
    "ftruncate",
    "fallocate",
    "write",
    "pwrite64",
    "pwritev2",
    "fdatasync",
    "fsync",
    "rename",
    "unlink",
    "truncate",
)
GROUPS = ("top", "segments", "walmeta", "containers", "sqlite")
# --recovery: crashes that leave something to repair, then a crash inside that repair.
RECOVERY_SEEDS = [
    ("segments", "pwritev2", 5),
    ("segments", "openat", 4),
    ("containers", "ftruncate", 1),
    ("containers", "pwrite64", 20),
    ("walmeta", "rename", 2),
    ("sqlite", "pwrite64", 30),
]
# The kinds walked inside a recovering start: those of KINDS less mkdir, fallocate, write.
RECOVERY_KINDS = tuple(k for k in KINDS if k not in ("mkdir", "fallocate", "write"))
MAX_LSN = 400  # WAL segment names to list for -P (one record per write or delete)


def traced_paths(data_dir: Path) -> dict[str, list[Path]]:
    """Every path the engine may touch in ``data_dir``, by group (strace ``-P`` is exact)."""
    d, w, c = data_dir, data_dir / "wal", data_dir / "containers"
    return {
        "top": [
            d.parent,
            d,
            d / "LOCK",
            d / "xtsdb.meta",
            d / "xtsdb.tmp",
            *(d / f"last-values.bin{s}" for s in ("", ".tmp")),
        ],
        "segments": [w / f"wal-{lsn:020d}.log" for lsn in range(1, MAX_LSN)],
        "walmeta": [w, w / "checkpoint", w / "checkpoint.tmp"],
        "containers": [c, *(c / f"c-{i:06d}.xtc{s}" for i in range(4) for s in ("", ".tmp"))],
        "sqlite": [
            d / f"{n}.sqlite3{s}"
            for n in ("index", "catalog")
            for s in ("", "-wal", "-shm", "-journal")
        ],
    }


@dataclass
class Point:
    group: str
    kind: str
    n: int
    reached: bool = False
    ok: bool = True
    acked: int = 0
    problems: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    outcome: Outcome | None = None


def _traced(
    data_dir: Path, workdir: Path, paths: list[Path], kind: str, n: int, out: Outcome | None
) -> bool:
    """Run the server on ``data_dir`` under strace until the injection fires or ``out``'s
    workload ends (no workload: until it is ready, then a clean stop); True if it fired."""
    strace = ["-o", str(workdir / "strace.log"), "-e", f"trace={kind}"]
    strace += [a for p in paths for a in ("-P", str(p))]
    strace += ["-e", f"inject={kind}:signal=SIGKILL:when={n}"]
    # strace ends the way its tracee ended: killed by SIGKILL means the injection fired.
    return traced_run(data_dir, workdir, strace, out) == -signal.SIGKILL


def run_point(
    group: str, kind: str, n: int, workdir: Path, *, via: str = "server", keep: Path | None = None
) -> Point:
    """One crash point in a fresh data directory under ``workdir``.

    ``keep``: where to copy the directory as the crash left it (before the check
    recovers it), for :func:`run_recovery_point`.
    """
    started = time.monotonic()
    data_dir = workdir / "data"
    out = Outcome(plan(N_WRITES))
    reached = _traced(data_dir, workdir, traced_paths(data_dir)[group], kind, n, out)
    if keep is not None and data_dir.exists():
        shutil.copytree(data_dir, keep)
    point = Point(group, kind, n, reached=reached, acked=out.acked)
    verdict = check(data_dir, out, via=via)
    point.ok, point.problems, point.repairs = verdict.ok, verdict.problems, verdict.repairs
    if not point.reached and not out.finished:
        point.ok = False
        point.problems.append(f"workload failed without a crash: {out.error}")
    point.seconds = time.monotonic() - started
    point.outcome = out
    return point


def run_recovery_point(crashed: Path, out: Outcome, kind: str, n: int, workdir: Path) -> Point:
    """Crash the start-up that recovers ``crashed`` (a copy) at its Nth ``kind`` call, then check.

    ``out`` is what the first crash had acknowledged. A crash during recovery must
    leave a directory the next start still recovers in full.
    """
    started = time.monotonic()
    data_dir = workdir / "data"
    shutil.copytree(crashed, data_dir)
    paths = [p for ps in traced_paths(data_dir).values() for p in ps]
    reached = _traced(data_dir, workdir, paths, kind, n, None)
    point = Point("recovery", kind, n, reached=reached, acked=out.acked)
    verdict = check(data_dir, out)
    point.ok, point.problems, point.repairs = verdict.ok, verdict.problems, verdict.repairs
    point.seconds = time.monotonic() - started
    return point


def walk(
    group: str,
    kind: str,
    ns: list[int] | None,
    base: Path,
    *,
    max_n: int = 10_000,
    progress: bool = False,
) -> list[Point]:
    """Crash at each N in ``ns`` (or 1, 2, ... until not reached); returns the points."""
    points: list[Point] = []
    for n in ns if ns is not None else range(1, max_n + 1):
        workdir = Path(tempfile.mkdtemp(prefix=f"{group}-{kind}-{n}-", dir=base))
        p = run_point(group, kind, n, workdir)
        points.append(p)
        if progress and (p.reached or not p.ok):
            state = "ok" if p.ok else "FAIL " + "; ".join(p.problems)
            print(
                f"{group:>10} {kind:>10} N={n:<4} acked={p.acked:<3} {p.seconds:4.1f}s {state}",
                flush=True,
            )
        if p.ok:
            shutil.rmtree(workdir, ignore_errors=True)
        elif progress:
            print(f"  kept {workdir}", flush=True)
        if not p.reached and ns is None:
            break
    return points


def walk_recovery(
    seed: tuple[str, str, int], base: Path, *, max_n: int = 10_000, progress: bool = False
) -> list[Point]:
    """Crash at ``seed``, then crash the recovering start at every N of every kind."""
    group, kind, n = seed
    first_dir = Path(tempfile.mkdtemp(prefix=f"seed-{group}-{kind}-{n}-", dir=base))
    first = run_point(group, kind, n, first_dir, keep=first_dir / "crashed")
    assert first.outcome is not None
    points = [first]
    for k in RECOVERY_KINDS:
        for m in range(1, max_n + 1):
            workdir = Path(tempfile.mkdtemp(prefix=f"rec-{k}-{m}-", dir=first_dir))
            p = run_recovery_point(first_dir / "crashed", first.outcome, k, m, workdir)
            points.append(p)
            if progress and (p.reached or not p.ok):
                state = "ok" if p.ok else "FAIL " + "; ".join(p.problems)
                print(f"{group}/{kind}/{n} then {k} N={m}: {state}", flush=True)
            if p.ok:
                shutil.rmtree(workdir, ignore_errors=True)
            if not p.reached:
                break
    if all(p.ok for p in points):
        shutil.rmtree(first_dir, ignore_errors=True)
    return points


def summary(points: list[Point]) -> str:
    by: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        by.setdefault((p.group, p.kind), []).append(p)
    rows = [("files", "syscall", "crash points", "failed", "with repairs")]
    for (group, kind), ps in by.items():
        reached = [p for p in ps if p.reached]
        if reached or any(not p.ok for p in ps):
            rows.append(
                (
                    group,
                    kind,
                    str(len(reached)),
                    str(sum(not p.ok for p in ps)),
                    str(sum(bool(p.repairs) for p in reached)),
                )
            )
    rows.append(
        (
            "total",
            "",
            str(sum(p.reached for p in points)),
            str(sum(not p.ok for p in points)),
            str(sum(bool(p.repairs) for p in points if p.reached)),
        )
    )
    return grid(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.crashpoints", description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", default=",".join(GROUPS), help="comma-separated file groups")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated syscalls")
    p.add_argument("--max-n", type=int, default=10_000)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--jobs", type=int, default=2, help="walks run side by side")
    p.add_argument("--recovery", action="store_true", help="crash the recovery of crashes")
    args = p.parse_args(argv)
    if args.recovery:
        base = Path(tempfile.mkdtemp(prefix="xtsdb-crashpoints-", dir=args.workdir))
        rpoints = [q for seed in RECOVERY_SEEDS for q in walk_recovery(seed, base, progress=True)]
        print(summary(rpoints))
        return 1 if any(not q.ok for q in rpoints) else 0
    walks = [(g, k) for g in args.groups.split(",") for k in args.kinds.split(",")]
    base = Path(tempfile.mkdtemp(prefix="xtsdb-crashpoints-", dir=args.workdir))
    started = time.monotonic()
    results: dict[tuple[str, str], list[Point]] = {}
    todo = list(walks)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                g, k = todo.pop(0)
            results[(g, k)] = walk(g, k, None, base, max_n=args.max_n, progress=True)

    threads = [threading.Thread(target=worker) for _ in range(max(1, args.jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    points = [pt for w in walks for pt in results.get(w, [])]
    print(summary(points))
    failed = sum(not pt.ok for pt in points)
    print(
        f"{sum(pt.reached for pt in points)} crash points visited, {failed} failed, "
        f"{time.monotonic() - started:.0f} s"
    )
    if not failed:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
