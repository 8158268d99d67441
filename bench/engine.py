"""In-process benchmark of the xtsdb storage engine (no network, no server).

    .venv/bin/python -m bench.engine                  # full run, ~1-2 min
    .venv/bin/python -m bench.engine --quick          # smoke run, < 30 s
    .venv/bin/python -m bench.engine --out engine.md  # also write the table as Markdown

Data is the deterministic 1 Hz random walk of bench/data.py (3 decimals, quality
192). Data directories live under /tmp on the real disk, never /dev/shm, so the
fsync figures are honest. Every figure is the median of several runs because the
machine is shared. Queries read warm blocks (page cache), as a historian mostly does.
"""

from __future__ import annotations

import array
import os
import platform
import statistics
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from time import perf_counter, thread_time

import numpy as np

if __package__ in (None, ""):  # run as a file: make `bench` and the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zstandard

from bench import data, engine_workers
from bench._util import Row, check, fresh_dir, run_parser, table
from bench.engine_query import bench_queries, sweep_report
from xtsdb.server.engine import Engine, EngineConfig, WriteBatch
from xtsdb.server.engine.container import ENTRY_SIZE


@dataclass(frozen=True)
class Sizes:
    tags: int  # workload 1: tags ingested
    points: int  # workload 1: points per tag
    batch_tags: int  # workload 1: tags per WriteBatch
    reps: int  # workload 1 and 2: fresh-engine repetitions
    wp_points: int  # workload 2
    q_points: int  # workload 3
    q_reps: int
    small_reps: int  # workload 4
    sweep: tuple[int, ...]  # workload 6


SWEEP = (10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000)
FULL = Sizes(1000, 10_000, 100, 5, 2_000_000, 1_000_000, 11, 41, SWEEP)
QUICK = Sizes(200, 5_000, 20, 1, 200_000, 250_000, 3, 7, (10_000, 50_000, 250_000))


def mpts(points: int, secs: float) -> str:
    return f"{points / secs / 1e6:.2f} M pts/s"


# -- 1. durable columnar ingest ------------------------------------------------


def ingest_once(base: str, frames: list[data.Frame], per_call: int, cfg: EngineConfig) -> dict:
    with fresh_dir(base) as d:
        eng = Engine.open(d, cfg)
        try:
            build = 0.0
            t0 = perf_counter()
            for i in range(0, len(frames), per_call):
                tb = perf_counter()
                # Validation and packing into WAL bytes is part of what a writer pays.
                batches = [
                    WriteBatch.build(f.tags, f.timestamps, f.values, f.qualities)
                    for f in frames[i : i + per_call]
                ]
                build += perf_counter() - tb
                eng.write_batches(batches)
            ack = perf_counter() - t0
            eng.flush()
            total = perf_counter() - t0
            st = eng.stats()
            f = frames[-1]  # spot check: the last tag written reads back exactly
            tag, n = int(f.tags[-1]), int(np.count_nonzero(f.tags == f.tags[-1]))
            got = eng.query(tag, int(f.timestamps[0]), int(f.timestamps[-1]) + 1)
            if len(got) != n or not np.array_equal(got.values, f.values[-n:]):
                raise AssertionError(f"ingest read-back of tag {tag} is wrong")
        finally:
            eng.close()
    return {"ack": ack, "total": total, "build": build, "stats": st}


def raw_fdatasync_once(base: str, payloads: list[bytearray], per_call: int) -> float:
    """The disk's ceiling: the same WAL payload bytes, appended, one fdatasync per group."""
    with fresh_dir(base) as d:
        fd = os.open(os.path.join(d, "raw.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            t0 = perf_counter()
            for i in range(0, len(payloads), per_call):
                for p in payloads[i : i + per_call]:
                    os.write(fd, p)
                os.fdatasync(fd)
            return perf_counter() - t0
        finally:
            os.close(fd)


def bench_ingest(base: str, sz: Sizes, cfg: EngineConfig, rows: list[Row]) -> dict:
    tags = list(range(sz.tags))
    frames = [
        data.frame(tags[i : i + sz.batch_tags], sz.points) for i in range(0, sz.tags, sz.batch_tags)
    ]
    total_pts = sz.tags * sz.points
    payloads = [
        WriteBatch.build(f.tags, f.timestamps, f.values, f.qualities).payload for f in frames
    ]
    mb = sum(len(p) for p in payloads) / 1e6
    last: dict = {}
    for per_call in (1, 4):
        runs = [ingest_once(base, frames, per_call, cfg) for _ in range(sz.reps)]
        raw = statistics.median(
            raw_fdatasync_once(base, payloads, per_call) for _ in range(sz.reps)
        )
        ack = statistics.median(r["ack"] for r in runs)
        tot = statistics.median(r["total"] for r in runs)
        build = statistics.median(r["build"] for r in runs)
        what = f"1. ingest {sz.tags} tags x {sz.points:,} pts, {per_call} batch/commit"
        acked, flushed = total_pts / ack / 1e6, total_pts / tot / 1e6
        rows.append(check(f"{what}: acked (build+WAL+fsync+apply)", acked, "M pts/s", 10, True))
        rows.append(check(f"{what}: incl. flush to blocks", flushed, "M pts/s", 10, True))
        of_which = f"   of which WriteBatch.build (validate+pack), {per_call}/commit"
        rows.append(Row(of_which, f"{1e3 * build:.0f} ms of {1e3 * ack:.0f} ms acked"))
        disk = f"   baseline: raw write+fdatasync of the same {mb:.0f} MB, {per_call} batch/sync"
        speed = f"{mpts(total_pts, raw)} ({mb / raw:.0f} MB/s)"
        rows.append(Row(disk, speed, "ceiling", f"engine acked = {100 * raw / ack:.0f}% of it"))
        last = runs[-1]["stats"]
    # Diagnostic: the same writes with the sealer idle until flush() shows what
    # the concurrent background sealing costs the acknowledged rate.
    runs = [ingest_once(base, frames, 1, replace(cfg, block_points=10**9)) for _ in range(sz.reps)]
    ack = statistics.median(r["ack"] for r in runs)
    tot = statistics.median(r["total"] for r in runs)
    rows.append(
        Row(
            "   diagnostic: 1 batch/commit, sealing deferred to flush (block_points=1e9)",
            f"acked {mpts(total_pts, ack)}, incl. flush {mpts(total_pts, tot)}",
        )
    )
    return last


# -- 2. single-point path -----------------------------------------------------------


def bench_write_point(
    base: str, sz: Sizes, cfg: EngineConfig, n_tags: int, rows: list[Row]
) -> None:
    per_tag = sz.wp_points // n_tags
    n = per_tag * n_tags
    # Point i is sample i // n_tags of tag i % n_tags: round-robin, time increasing.
    tags = list(range(n_tags)) * per_tag
    ts = np.repeat(data.timestamps(per_tag), n_tags).tolist()
    vals = data.slab_values(range(n_tags), per_tag, 0).T.ravel().tolist()

    def bare_loop() -> None:
        ct, cs, cv, cq = array.array("I"), array.array("q"), array.array("d"), array.array("B")
        at, as_, av, aq = ct.append, cs.append, cv.append, cq.append
        for t, s, v in zip(tags, ts, vals, strict=True):
            at(t)
            as_(s)
            av(v)
            aq(192)

    def call_loop() -> None:  # the same appends behind one Python call per point
        ct, cs, cv, cq = array.array("I"), array.array("q"), array.array("d"), array.array("B")

        def put(t: int, s: int, v: float, q: int = 192) -> None:
            ct.append(t)
            cs.append(s)
            cv.append(v)
            cq.append(q)

        for t, s, v in zip(tags, ts, vals, strict=True):
            put(t, s, v, 192)

    # Engine and baselines take turns, so load from other jobs hits all of them alike.
    runs: dict[str, list[tuple[float, float]]] = {"engine": [], "bare": [], "call": []}
    for _ in range(sz.reps):
        with fresh_dir(base) as d, Engine.open(d, cfg) as eng:
            wp = eng.write_point
            w0, c0 = perf_counter(), thread_time()
            for t, s, v in zip(tags, ts, vals, strict=True):
                wp(t, s, v, 192)
            eng.commit()
            runs["engine"].append((perf_counter() - w0, thread_time() - c0))
            if eng.stats()["points_written"] != n:
                raise AssertionError("write_point lost points")
        for key, fn in (("bare", bare_loop), ("call", call_loop)):
            w0, c0 = perf_counter(), thread_time()
            fn()
            runs[key].append((perf_counter() - w0, thread_time() - c0))
    wall = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
    what = f"2. write_point x {n:,} over {n_tags} tags + commit()"
    engine_cpu = f" (CPU: {n / cpu['engine'] / 1e6:.3g})"
    rows.append(check(what, n / wall["engine"] / 1e6, "M pts/s", 1, True, engine_cpu))
    labels = {"bare": "bare loop, 4 array.append", "call": "one Python call per point, 4 appends"}
    for key, label in labels.items():
        speed = f"{mpts(n, wall[key])} (CPU: {n / cpu[key] / 1e6:.3g})"
        share = f"engine CPU = {100 * cpu[key] / cpu['engine']:.0f}% of it"
        rows.append(Row(f"   baseline: {label}", speed, "ceiling", share))


def main(argv: list[str] | None = None) -> int:
    ap = run_parser(__doc__)
    ap.add_argument("--workers", action="store_true", help="only section 7: worker processes")
    args = ap.parse_args(argv)
    if args.workers:  # section 7 alone (bench/engine_workers.py)
        os.makedirs(args.dir, exist_ok=True)
        lines = engine_workers.main(args.dir, args.quick)
        print("\n".join(lines))
        if args.out:
            args.out.write_text("\n".join(lines) + "\n")
        return 0
    sz = QUICK if args.quick else FULL
    os.makedirs(args.dir, exist_ok=True)
    cfg = EngineConfig()
    t_start = perf_counter()

    facts = [
        f"machine: nproc={os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), "
        f"{platform.machine()}, {platform.system()} {platform.release()}",
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"zstandard {zstandard.__version__}; data under {args.dir}",
        f"EngineConfig: {asdict(cfg)}",
        "queries: read_workers=2; inline vs pool chosen per query via the reader's "
        "parallel_min_points (1 = pool, 2**62 = inline); warm page cache",
    ]
    for line in facts:
        print(line, flush=True)

    rows: list[Row] = []
    st = bench_ingest(args.dir, sz, cfg, rows)
    print("ingest done", flush=True)
    bench_write_point(args.dir, sz, cfg, min(1000, sz.tags), rows)
    print("write_point done", flush=True)
    info = bench_queries(args.dir, sz, cfg, rows)
    bpp = st["block_bytes"] / st["block_points"]
    bpp_dir = (st["block_bytes"] + ENTRY_SIZE * st["blocks"]) / st["block_points"]
    b, nb = info["bpp_big_blocks"]
    sized = [
        (f"5. bytes/point, block bodies ({st['blocks']} blocks, workload 1 data)", bpp),
        (f"5. bytes/point incl. {ENTRY_SIZE} B directory entry per block", bpp_dir),
        (f"5. bytes/point, one tag in {nb} full blocks (workload 3 data)", b),
    ]
    rows += [check(what, value, "B/pt", 1.4, False) for what, value in sized]

    sweep_lines = sweep_report(info["sweep"], cfg.parallel_min_points)

    elapsed = f"total bench time {perf_counter() - t_start:.0f} s"
    out = ["", *table(rows), "", "6. pool vs inline sweep (one tag, 8192-point blocks):", ""]
    out += [*sweep_lines, elapsed]
    print("\n".join(out))
    if args.out:
        md = ["# xtsdb engine benchmark", "", *[f"- {x}" for x in facts], *out]
        args.out.write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
