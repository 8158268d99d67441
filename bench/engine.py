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

import argparse
import array
import mmap
import os
import platform
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from time import perf_counter, thread_time

import numpy as np

if __package__ in (None, ""):  # run as a file: make `bench` and the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zstandard

from bench import data
from bench._util import Row, check, fresh_dir, median_s, table
from xtsdb.server.engine import Engine, EngineConfig, WriteBatch
from xtsdb.server.engine.block_codec import decode_block
from xtsdb.server.engine.container import ENTRY_SIZE
from xtsdb.server.engine.reader import _read_checked

INLINE = 1 << 62  # a parallel_min_points no query reaches: every read decodes inline


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


FULL = Sizes(1000, 10_000, 100, 5, 2_000_000, 1_000_000, 11, 41, (10_000, 50_000, 100_000,
             250_000, 500_000, 1_000_000))  # fmt: skip
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
        rows += [
            check(f"{what}: acked (build+WAL+fsync+apply)", total_pts / ack / 1e6, "M pts/s", 10,
                  True),
            check(f"{what}: incl. flush to blocks", total_pts / tot / 1e6, "M pts/s", 10, True),
            Row(f"   of which WriteBatch.build (validate+pack), {per_call}/commit",
                f"{1e3 * build:.0f} ms of {1e3 * ack:.0f} ms acked"),
            Row(f"   baseline: raw write+fdatasync of the same {mb:.0f} MB, {per_call} batch/sync",
                f"{mpts(total_pts, raw)} ({mb / raw:.0f} MB/s)", "ceiling",
                f"engine acked = {100 * raw / ack:.0f}% of it"),
        ]  # fmt: skip
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
    rows.append(check(f"2. write_point x {n:,} over {n_tags} tags + commit()",
                      n / wall["engine"] / 1e6, "M pts/s", 1, True,
                      f" (CPU: {n / cpu['engine'] / 1e6:.3g})"))  # fmt: skip
    for key, label in (("bare", "bare loop, 4 array.append"),
                       ("call", "one Python call per point, 4 appends")):  # fmt: skip
        rows.append(Row(f"   baseline: {label}",
                        f"{mpts(n, wall[key])} (CPU: {n / cpu[key] / 1e6:.3g})", "ceiling",
                        f"engine CPU = {100 * cpu[key] / cpu['engine']:.0f}% of it"))  # fmt: skip


# -- 3, 4, 6. range queries ------------------------------------------------------------


def query_pair(eng: Engine, n: int, reps: int, rounds: int = 3) -> tuple[float, float, float]:
    """Median ms of the same query decoded inline and in the pool, and the inline CPU ms.

    Modes alternate in rounds of ``reps`` queries: strict per-query alternation
    measured inline ~3 ms slower at 1 M points (the pool's workers and their
    page faults disturb the next inline query), and rounds still spread the
    load of other jobs on this shared machine over both modes. The inline
    decode runs on the calling thread, so its thread CPU time is the figure
    least disturbed by those jobs.
    """
    start = data.START_US
    end = start + n * data.INTERVAL_US
    times: dict[int, list[tuple[float, float]]] = {INLINE: [], 1: []}
    for _ in range(rounds):
        for mode, acc in times.items():
            eng._reader.parallel_min_points = mode
            for _ in range(reps):
                w0, c0 = perf_counter(), thread_time()
                p = eng.query(0, start, end)
                acc.append((perf_counter() - w0, thread_time() - c0))
                if len(p) != n:
                    raise AssertionError(f"query returned {len(p)} points, expected {n}")
    eng._reader.parallel_min_points = 1
    med = [1e3 * statistics.median(t[k] for t in times[m]) for m, k in ((INLINE, 0), (1, 0),
                                                                       (INLINE, 1))]  # fmt: skip
    return med[0], med[1], med[2]


def load_tag0(d: str, cfg: EngineConfig, n: int) -> Engine:
    eng = Engine.open(d, cfg)
    ts, vals = data.timestamps(n), data.tag_values(0, n)
    eng.write(0, ts, vals, None)
    eng.flush()
    p = eng.query(0, int(ts[0]), int(ts[-1]) + 1)
    if not (np.array_equal(p.timestamps, ts) and np.array_equal(p.values, vals)):
        raise AssertionError("tag 0 does not read back exactly")
    eng._reader.warm_up()  # worker start-up is a one-off, not part of a query
    query_pair(eng, min(n, 100_000), 2, 1)  # warm page cache, worker imports, allocator
    return eng


def breakdown(eng: Engine, reps: int) -> tuple[float, float]:
    """Median thread-CPU ms to pread+CRC every block of tag 0, and to decode them from memory.

    CPU time, to compare with the inline query's CPU time: wall time on this shared
    machine swings by 2-3x between consecutive measurements.
    """
    refs = [eng._store.ref(b) for b in eng._tags[0].blocks]
    total = sum(r.count for r in refs)
    bodies: list[bytes] = []

    def read_all() -> None:
        bodies[:] = [_read_checked(eng._reader._fd(r.path), r) for r in refs]

    out = (np.empty(total, np.int64), np.empty(total, np.float64), np.empty(total, np.uint8))

    def decode_all() -> None:
        at = 0
        for r, body in zip(refs, bodies, strict=True):
            end = at + r.count
            decode_block(
                body, r.count, r.codec, out=(out[0][at:end], out[1][at:end], out[2][at:end])
            )
            at = end

    return 1e3 * median_s(read_all, reps, thread_time), 1e3 * median_s(
        decode_all, reps, thread_time
    )


def first_touch_ms(nbytes: int, reps: int) -> float:
    """Median ms to fault in a fresh /dev/shm mapping: what the pool's result buffer costs.

    Inline results come from malloc, which reuses freed heap pages; the pool maps
    a new shm file per query, and every page of it is faulted in by the workers.
    """

    def once() -> None:
        fd, path = tempfile.mkstemp(prefix="xtsdb-bench-", dir="/dev/shm")
        try:
            os.ftruncate(fd, nbytes)
            with mmap.mmap(fd, nbytes) as buf:
                view = np.frombuffer(buf, np.uint8)
                view[:: mmap.PAGESIZE] = 1
                del view
        finally:
            os.close(fd)
            os.unlink(path)

    return 1e3 * median_s(once, reps)


def bench_queries(base: str, sz: Sizes, cfg: EngineConfig, rows: list[Row]) -> dict:
    qcfg = replace(cfg, read_workers=2, parallel_min_points=1)
    info: dict = {}
    with fresh_dir(base) as d:
        eng = load_tag0(d, qcfg, sz.q_points)
        try:
            st = eng.stats()
            info["bpp_big_blocks"] = (st["block_bytes"] / st["block_points"], st["blocks"])
            inline, pool, cpu = query_pair(eng, sz.q_points, sz.q_reps)
            what = f"3. query {sz.q_points:,} pts of 1 tag, {st['blocks']} blocks"
            rd, dec = breakdown(eng, sz.q_reps)
            nbytes = 17 * sz.q_points
            rows += [
                check(f"{what}, inline", inline, "ms", 20, False, f" (CPU {cpu:.3g} ms)"),
                check(f"{what}, pool (2 workers)", pool, "ms", 20, False),
                Row("   inline CPU time: pread+CRC | decode_block | rest of query",
                    f"{rd:.1f} | {dec:.1f} | {cpu - rd - dec:.1f} ms"),
                Row(f"   first touch of a fresh {nbytes / 1e6:.0f} MB /dev/shm mapping "
                    "(the pool's result buffer)", f"{first_touch_ms(nbytes, sz.q_reps):.1f} ms"),
            ]  # fmt: skip
            info["sweep"] = [
                (n, *query_pair(eng, n, max(3, sz.q_reps))) for n in sz.sweep if n <= sz.q_points
            ]
        finally:
            eng.close()
    n_small = 70_000
    with fresh_dir(base) as d:
        eng = load_tag0(d, replace(qcfg, block_points=700), n_small)
        try:
            blocks = eng.stats()["blocks"]
            inline, pool, cpu = query_pair(eng, n_small, sz.small_reps)
            what = f"4. query {n_small:,} pts in {blocks} blocks of 700"
            rows += [check(f"{what}, inline", inline, "ms", 2, False, f" (CPU {cpu:.3g} ms)"),
                     check(f"{what}, pool (2 workers)", pool, "ms", 2, False)]  # fmt: skip
        finally:
            eng.close()
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test, < 30 s)")
    ap.add_argument("--out", type=Path, help="also write the report as Markdown here")
    ap.add_argument("--dir", default="/tmp/xtsdb-bench", help="parent of the data dirs (real disk)")
    args = ap.parse_args(argv)
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
    rows += [
        check(f"5. bytes/point, block bodies ({st['blocks']} blocks, workload 1 data)", bpp,
              "B/pt", 1.4, False),
        check(f"5. bytes/point incl. {ENTRY_SIZE} B directory entry per block", bpp_dir, "B/pt",
              1.4, False),
        check(f"5. bytes/point, one tag in {nb} full blocks (workload 3 data)", b, "B/pt", 1.4,
              False),
    ]  # fmt: skip

    sweep = info["sweep"]
    sweep_lines = ["| points | inline ms | inline CPU ms | pool ms | pool/inline |",
                   "|---:|---:|---:|---:|---:|"]  # fmt: skip
    sweep_lines += [
        f"| {n:,} | {i:.2f} | {c:.2f} | {p:.2f} | {p / i:.2f} |" for n, i, p, c in sweep
    ]
    # The threshold the data supports: the smallest size from which the pool wins every time.
    wins = [n for k, (n, *_) in enumerate(sweep) if all(p < i for _, i, p, _ in sweep[k:])]
    advice = (
        f"pool wins from {wins[0]:,} points on (measured sizes); current "
        f"parallel_min_points = {cfg.parallel_min_points:,}"
        if wins
        else "the pool never beat inline decode at the measured sizes: keep reads inline "
        "(parallel_min_points above the largest query, or read_workers=0) on this machine"
    )

    elapsed = f"total bench time {perf_counter() - t_start:.0f} s"
    out = ["", *table(rows), "", "6. pool vs inline sweep (one tag, 8192-point blocks):", "",
           *sweep_lines, "", advice, elapsed]  # fmt: skip
    print("\n".join(out))
    if args.out:
        md = ["# xtsdb engine benchmark", "", *[f"- {x}" for x in facts], *out]
        args.out.write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
