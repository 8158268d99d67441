"""Section 7 of ``bench/engine.py`` (``--workers``): the worker processes against inline.

a) Seal-time encoding: one seal round of ``tags`` x ``block_points`` points
   encoded (and summarised) by ``encode_many`` through the pool, against
   ``encode_inline`` in this process, in the same run.
b) Reads: one tag of 8 M points flushed to blocks, then queries of 10 K .. 8 M
   points decoded inline and split between the caller and the workers
   (``bench.engine_query.query_pair``); the smallest size from which the pool
   wins at every larger size is what ``parallel_min_points`` should be.
"""

from __future__ import annotations

import os
from dataclasses import replace
from time import perf_counter

import numpy as np

from bench import data
from bench._util import fresh_dir, median_s
from bench.engine_query import load_tag0, query_pair, sweep_report
from xtsdb.server.engine import EngineConfig
from xtsdb.server.engine.membuffer import Columns
from xtsdb.server.engine.workers import WorkerPool, default_size, encode_inline, encode_many

SIZES = (10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000)


def seal_round(tags: int, points: int) -> list[Columns]:
    ts = data.timestamps(points)
    q = np.full(points, 192, np.uint8)
    return [(ts, data.tag_values(t, points), q) for t in range(tags)]


def bench_encode(reps: int) -> list[str]:
    lines = ["| seal round | inline ms | pool ms | pool/inline |", "|---|---:|---:|---:|"]
    pool = WorkerPool(default_size(), 256 << 20)
    try:
        pool.start_all()
        for tags, pts in ((4, 8192), (32, 8192), (250, 8192)):
            segs = seal_round(tags, pts)
            encode_many(pool, segs, 3)  # arenas grown to this size once
            inline = 1e3 * median_s(lambda s=segs: encode_inline(s, 3), reps)
            pooled = 1e3 * median_s(lambda s=segs: encode_many(pool, s, 3), reps)
            what = f"{tags} tags x {pts:,} pts ({tags * pts / 1e6:.2f} M)"
            lines.append(f"| {what} | {inline:.1f} | {pooled:.1f} | {pooled / inline:.2f} |")
    finally:
        pool.close()
    return lines


def bench_reads(base: str, reps: int, largest: int) -> list[str]:
    cfg = EngineConfig(read_workers=2, parallel_min_points=1, max_memory_points=64_000_000)
    with fresh_dir(base) as d:
        eng = load_tag0(d, replace(cfg), largest)
        try:
            sweep = [(n, *query_pair(eng, n, reps)) for n in SIZES if n <= largest]
        finally:
            eng.close()
    return sweep_report(sweep, EngineConfig().parallel_min_points)


def main(base: str, quick: bool) -> list[str]:
    t0 = perf_counter()
    load = os.getloadavg()
    out = [
        "",
        f"7. worker processes ({default_size()} workers), load average at start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        "",
        "a) seal-time encoding + summaries, one round (median of reps):",
        "",
        *bench_encode(3 if quick else 7),
        "",
        "b) query of one tag from disk, inline vs caller + workers:",
        "",
        *bench_reads(base, 3 if quick else 5, 1_000_000 if quick else 8_000_000),
        f"section 7 took {perf_counter() - t0:.0f} s, load average at end "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]
    return out
