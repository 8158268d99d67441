"""Small calls answered on the event loop against the query pool: the compare row.

    .venv/bin/python -m bench.inline_calls [--quick] [--runs 2] [--out FILE]

bench/compare.py's row "aggregate 5 min min/max/avg, 1 tag, 10 K points":
100 tags x 10,000 points (1 s apart) written as frames, sealed by
flush_server(), then the whole range of one tag in 5-minute buckets, the
median of ``--reps`` calls on one connection. Three servers per run, each
fresh on the same data: xtsdb with every engine call through the query pool
(``inline_calls.CALLS.max_points = 0``, the code before the fast path),
xtsdb as shipped, and VictoriaMetrics (bench/clients.py's query). Also a
``last`` of 10 tags and a 1-hour raw query of one tag, xtsdb both ways. And
the engine alone, in this process: the row's aggregate, and an aggregate over
``INLINE_MAX_POINTS`` points (the most a call may touch on the loop).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import data
from bench._util import grid, run_parser
from bench.lp_workers import emit, load
from bench.peers import System, VictoriaMetrics, Xtsdb
from xtsdb.server.engine import Engine
from xtsdb.server.inline_calls import INLINE_MAX_POINTS

TAGS, POINTS, BUCKET_US = 100, 10_000, 300 * data.INTERVAL_US
POOL_ONLY = (
    sys.executable,
    "-c",
    "import sys; from xtsdb.server import inline_calls; inline_calls.CALLS.max_points = 0; "
    "from xtsdb.server.main import main; sys.exit(main(sys.argv[1:]))",
)


class XtsdbPoolOnly(Xtsdb):
    command = POOL_ONLY


def median_ms(fn: Callable[[], Any], reps: int) -> float:
    for _ in range(max(3, reps // 10)):  # warm: connections, caches, the page cache
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def ingest(sys_: System) -> None:
    c = sys_.client()
    try:
        if sys_.name == "xtsdb":
            for g in range(0, TAGS, 100):
                c.write(data.frame(range(g, min(g + 100, TAGS)), POINTS))
            c.flush_server()
        else:
            for body in data.line_batches(range(TAGS), POINTS, sys_.lines_per_batch):
                c.write(body)
    finally:
        c.close()
    sys_.settle()


def measure(cls: type[System], workdir: Path, reps: int) -> dict[str, float]:
    sys_ = cls(Path(tempfile.mkdtemp(prefix=f"{cls.name}-inl-", dir=workdir)))
    out: dict[str, float] = {}
    tag, end = TAGS // 2, data.START_US + POINTS * data.INTERVAL_US
    try:
        sys_.start()
        ingest(sys_)
        c = sys_.client()
        try:
            want = -(-POINTS * data.INTERVAL_US // BUCKET_US)
            got = c.aggregate(tag, data.START_US, end, BUCKET_US)
            assert got == want, (sys_.name, got, want)
            out["aggregate"] = median_ms(
                lambda: c.aggregate(tag, data.START_US, end, BUCKET_US), reps
            )
            if sys_.name == "xtsdb":
                ids = np.arange(10, dtype=np.uint32)
                out["last"] = median_ms(lambda: c.last_all(ids), reps)
                hour = data.START_US + 3600 * data.INTERVAL_US
                out["query"] = median_ms(lambda: c.query_range(tag, data.START_US, hour), reps)
        finally:
            c.close()
    finally:
        sys_.stop()
        shutil.rmtree(sys_.workdir, ignore_errors=True)
    return out


def engine_alone(workdir: Path, reps: int) -> dict[str, float]:
    """The engine's own time for the row's aggregate and for the inline bound."""
    path = Path(tempfile.mkdtemp(prefix="engine-inl-", dir=workdir))
    out = {}
    try:
        with Engine.open(path) as e:
            f = data.frame(range(2), max(POINTS, INLINE_MAX_POINTS))
            e.write(f.tags, f.timestamps, f.values, f.qualities)
            e.flush()
            aggs = ("min", "max", "avg")
            for name, n in (("row", POINTS), ("bound", INLINE_MAX_POINTS)):
                end = data.START_US + n * data.INTERVAL_US

                def call(end: int = end) -> None:
                    e.aggregate(0, data.START_US, end, BUCKET_US, aggs)

                out[name] = median_ms(call, reps)
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = run_parser(__doc__)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=300)
    a = ap.parse_args(argv)
    reps = 50 if a.quick else a.reps
    Path(a.dir).mkdir(parents=True, exist_ok=True)
    report = [f"{TAGS} tags x {POINTS:,} points; median of {reps} calls on one connection"]
    kinds: list[tuple[str, type[System]]] = [("xtsdb, every call in the pool", XtsdbPoolOnly)]
    kinds.append(("xtsdb, small calls inline", Xtsdb))
    if VictoriaMetrics(Path(a.dir)).missing() is None:
        kinds.append(("victoriametrics", VictoriaMetrics))
    for run in range(1, a.runs + 1):
        report.append(f"\n=== run {run} (load {load()} at start) ===")
        with tempfile.TemporaryDirectory(prefix="xtsdb-inl-", dir=a.dir) as wd:
            res = {name: measure(cls, Path(wd), reps) for name, cls in kinds}
            alone = engine_alone(Path(wd), reps)
        base = res[kinds[0][0]]
        vm = res.get("victoriametrics", {}).get("aggregate")
        rows: list[tuple[str, ...]] = [
            ("system", "aggregate ms", "vs pool", "vs VM", "last 10 ms", "query 1 h ms")
        ]
        for name, r in res.items():
            rows.append(
                (
                    name,
                    f"{r['aggregate']:.3f}",
                    f"{base['aggregate'] / r['aggregate']:.2f}x",
                    f"{vm / r['aggregate']:.2f}x" if vm else "-",
                    f"{r['last']:.3f}" if "last" in r else "-",
                    f"{r['query']:.3f}" if "query" in r else "-",
                )
            )
        report.append(grid(rows))
        report.append(
            f"engine alone: the row's aggregate {alone['row']:.3f} ms; "
            f"{INLINE_MAX_POINTS:,} points (the inline bound) {alone['bound']:.3f} ms"
        )
        report.append(f"load at end: {load()}")
        print("\n".join(report[-4:]), flush=True)
    return emit(report, a.out)


if __name__ == "__main__":
    sys.exit(main())
