"""Workloads 3, 4 and 6 of ``bench/engine.py``: range queries, decoded inline or in the pool.

One tag loaded and flushed to blocks, then queried with the read pool forced on
(``parallel_min_points = 1``) or off (:data:`INLINE`): the same query both ways,
a breakdown of the inline query's CPU time, the cost of the pool's fresh result
mapping, small blocks, and a sweep over query sizes that says from which size
on the pool wins on this machine.
"""

from __future__ import annotations

import mmap
import os
import statistics
import tempfile
from dataclasses import replace
from time import perf_counter, thread_time
from typing import TYPE_CHECKING

import numpy as np

from bench import data
from bench._util import Row, check, fresh_dir, median_s
from xtsdb.server.engine import Engine, EngineConfig
from xtsdb.server.engine.block_codec import decode_block
from xtsdb.server.engine.reader import _read_checked

if TYPE_CHECKING:
    from bench.engine import Sizes

INLINE = 1 << 62  # a parallel_min_points no query reaches: every read decodes inline
Sweep = list[tuple[int, float, float, float]]  # (points, inline ms, pool ms, inline CPU ms)


def query_pair(eng: Engine, n: int, reps: int, rounds: int = 3) -> tuple[float, float, float]:
    """Median ms of the same query decoded inline and in the pool, and the inline CPU ms.

    Modes alternate in rounds of ``reps`` queries: strict per-query alternation
    made the inline figure slower (the pool's workers and their page faults
    disturb the next inline query; bench/README.md has the figure), and rounds
    still spread the load of other jobs on this shared machine over both modes.
    The inline decode runs on the calling thread, so its thread CPU time is the
    figure least disturbed by those jobs.
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

    def median_ms(mode: int, column: int) -> float:
        return 1e3 * statistics.median(t[column] for t in times[mode])

    return median_ms(INLINE, 0), median_ms(1, 0), median_ms(INLINE, 1)


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

    CPU time, to compare with the inline query's CPU time: wall time on a shared
    machine swings too much between consecutive measurements (bench/README.md).
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
            split = f"{rd:.1f} | {dec:.1f} | {cpu - rd - dec:.1f} ms"
            touch = f"   first touch of a fresh {nbytes / 1e6:.0f} MB /dev/shm mapping"
            touch += " (the pool's result buffer)"
            rows += [
                check(f"{what}, inline", inline, "ms", 20, False, f" (CPU {cpu:.3g} ms)"),
                check(f"{what}, pool (2 workers)", pool, "ms", 20, False),
                Row("   inline CPU time: pread+CRC | decode_block | rest of query", split),
                Row(touch, f"{first_touch_ms(nbytes, sz.q_reps):.1f} ms"),
            ]
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
            rows.append(check(f"{what}, inline", inline, "ms", 2, False, f" (CPU {cpu:.3g} ms)"))
            rows.append(check(f"{what}, pool (2 workers)", pool, "ms", 2, False))
        finally:
            eng.close()
    return info


def sweep_report(sweep: Sweep, parallel_min_points: int) -> list[str]:
    """The sweep as a Markdown table, then what it says about ``parallel_min_points``."""
    lines = ["| points | inline ms | inline CPU ms | pool ms | pool/inline |", "|---:" * 5 + "|"]
    lines += [f"| {n:,} | {i:.2f} | {c:.2f} | {p:.2f} | {p / i:.2f} |" for n, i, p, c in sweep]
    # The threshold the data supports: the smallest size from which the pool wins every time.
    wins = [n for k, (n, *_) in enumerate(sweep) if all(p < i for _, i, p, _ in sweep[k:])]
    advice = (
        f"pool wins from {wins[0]:,} points on (measured sizes); current "
        f"parallel_min_points = {parallel_min_points:,}"
        if wins
        else "the pool never beat inline decode at the measured sizes: keep reads inline "
        "(parallel_min_points above the largest query, or read_workers=0) on this machine"
    )
    return [*lines, "", advice]
