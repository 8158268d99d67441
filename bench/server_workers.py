"""``python -m bench.server --workers-only``: workload 1 with ``--workers 0`` against the default.

Server CPU is counted with the worker processes (the server's descendants:
server -> forkserver -> worker), from /proc utime + stime.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench import data
from bench._util import Row, verdict

if TYPE_CHECKING:
    from bench.server import Sizes


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """``cpu_s`` of ``pid`` and every live descendant (the worker processes are grandchildren)."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:  # gone meanwhile
                continue
            kids.setdefault(ppid, []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            total += cpu_s(p)
        todo += kids.get(p, [])
    return total


def bench_workers(base: str, sz: Sizes, rows: list[Row]) -> None:
    """Workload 1 with ``--workers 0`` (all inline) against the default pool, interleaved."""
    from bench.server import Cols, Runs, ingest_run  # bench.server imports this module

    ts = data.timestamps(sz.points)
    q = np.full(sz.points, data.QUALITY_GOOD, np.uint8)
    cols: list[Cols] = [(t, ts, data.tag_values(t, sz.points), q) for t in range(sz.tags)]
    n, w = sz.tags * sz.points, sz.window
    kinds = {"--workers 0 (inline)": ("--workers", "0"), "default workers": ()}
    runs = {k: Runs() for k in kinds}
    for _ in range(sz.reps):
        for kind, flags in kinds.items():
            ingest_run(base, cols, [], w, runs[kind], *flags)
    for kind, r in runs.items():
        srv = statistics.median(c[0] / s for c, s in zip(r.cpu, r.secs, strict=True))
        cli = statistics.median(c[1] / s for c, s in zip(r.cpu, r.secs, strict=True))
        rows.append(
            Row(
                f"1w. ingest {sz.tags:,} tags x {sz.points:,} pts, {kind}",
                f"{r.rate(n):.3g} M pts/s; server+workers {srv:.2f}, client {cli:.2f} "
                f"CPU-s per wall s; ack {r.lat_text()}",
                "server CPU > 1.6, p99 <= 10 ms",
                verdict(srv, 1.6, True) + "/" + verdict(r.p(99), 10, False),
            )
        )
