"""Rows of bench/compare.py for issue 14's Targets table beyond the original workloads.

- server CPU per wall second during ingest: /proc/<pid>/stat of the server and every
  live descendant (worker processes), plus the reaped children's times (cutime/cstime);
- write ack p99 under the ingest workload of bench/server.py (one AsyncClient, 8
  writes of one tag's 10,000 points in flight), through its ``sdk_ingest``;
- 5-min min/max/avg over 90 days of 1 s data of one tag, xtsdb against VictoriaMetrics
  (InfluxDB is left out: loading 7.8 M points and its multi-second answers would take
  minutes of the run's bound for a row whose target names VictoriaMetrics only);
- 1-day avg over a year of 1 s data: bench/aggregate.py's engine, in process;
- the 1 M-point sealed query end to end: bench/query_e2e.py's ``measure``;
- blocks read by a full query of a tag after 10 rounds of rewriting it.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import data
from bench.peers import System

Note = Callable[[str], None]
DAY_S = 86_400
TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_tree_s(pid: int) -> float:
    """CPU seconds of ``pid``, its reaped children and every live descendant."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue  # ended while listed
    tree, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        tree += kids
        todo += kids
    total = 0
    for i, p in enumerate(tree):
        try:
            f = _stat(p)
        except OSError:
            continue
        total += int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if i == 0 else 0)
    return total / TICK


class CpuMeter:
    """Server CPU-s per wall second between ``__init__`` and ``rate()``."""

    def __init__(self, sys: System) -> None:
        self.pid = sys.pid()
        self.cpu0, self.t0 = cpu_tree_s(self.pid), time.perf_counter()

    def rate(self) -> float:
        return (cpu_tree_s(self.pid) - self.cpu0) / (time.perf_counter() - self.t0)


def ack_workload(cls: type[System], workdir: Path, res: dict[str, float], note: Note) -> None:
    """bench/server.py's workload 1 on a fresh xtsdb: ack p50/p99 and server CPU."""
    import uvloop

    from bench.server import sdk_ingest  # xtsdb only: imports the SDK

    tags, points = 300, 10_000
    ts = data.timestamps(points)
    q = np.full(points, data.QUALITY_GOOD, np.uint8)
    cols = [(t, ts, data.tag_values(t, points), q) for t in range(tags)]
    sys = cls(Path(tempfile.mkdtemp(prefix="ack-", dir=workdir)))
    try:
        sys.start()
        meter = CpuMeter(sys)
        secs, lat, _stats = uvloop.run(sdk_ingest(sys.url, cols, 8))  # type: ignore[attr-defined]
        res["cpu_ack"] = meter.rate()
    finally:
        sys.stop()
    ms = np.asarray(lat) * 1e3
    res["ack_p99"] = float(np.percentile(ms, 99))
    note(
        f"ack workload: {tags} writes of {points:,} points, 8 in flight, "
        f"{tags * points / secs / 1e6:.2f} M pts/s, ack p50 {np.percentile(ms, 50):.1f} ms, "
        f"p99 {res['ack_p99']:.1f} ms, server {res['cpu_ack']:.2f} CPU-s per wall s"
    )


def _load_one_tag(sys: System, points: int) -> None:
    """One tag (id 0) of ``points`` 1 s points in 1 M-point pieces, then settled."""
    c = sys.client()
    try:
        step = 1_000_000
        for lo in range(0, points, step):
            n = min(step, points - lo)
            if sys.name == "xtsdb":
                c.c.write(0, data.timestamps(n, lo), data.tag_values(0, n, lo))
            else:
                for body in data.line_batches([0], n, sys.lines_per_batch, offset=lo):
                    c.write(body)
    finally:
        c.close()


def long_range(
    cls: type[System], workdir: Path, res: dict[str, float], note: Note, days: int, reps: int
) -> None:
    """5-min min/max/avg over ``days`` of 1 s data of one tag, median of ``reps``."""
    points = days * DAY_S
    sys = cls(Path(tempfile.mkdtemp(prefix=f"{cls.name}-long-", dir=workdir)))
    try:
        sys.start()
        t0 = time.perf_counter()
        _load_one_tag(sys, points)
        how = sys.settle()
        note(f"{days} days: {points:,} points loaded in {time.perf_counter() - t0:.0f}s; {how}")
        c = sys.client()
        try:
            bucket = 300 * data.INTERVAL_US
            end = data.START_US + points * data.INTERVAL_US
            want = math.ceil(points * data.INTERVAL_US / bucket)
            got = c.aggregate(0, data.START_US, end, bucket)
            if got != want:
                note(f"CHECK {days}-day aggregate: {got} buckets, expected {want}")
            times = []
            for _ in range(reps):
                t1 = time.perf_counter()
                c.aggregate(0, data.START_US, end, bucket)
                times.append((time.perf_counter() - t1) * 1e3)
            res["agg_long"] = statistics.median(times)
        finally:
            c.close()
    finally:
        sys.stop()


def year_day_avg(res: dict[str, float], note: Note, quick: bool) -> None:
    from bench.aggregate import day_avg  # the engine in process

    ms, summarised, decoded, points = day_avg(quick)
    res["year_day_avg"] = ms
    note(
        f"1-day avg over {points / 1e6:.1f} M points of 1 s (engine in process, "
        f"bench/aggregate.py): {ms:.2f} ms, {summarised} blocks summarised, {decoded} decoded"
    )


def query_1m(workdir: Path, res: dict[str, float], note: Note, quick: bool) -> None:
    from bench.query_e2e import measure

    points = 200_000 if quick else 1_000_000
    got = measure(str(workdir), points, 5 if quick else 15)
    res["q1m_sealed"], res["q1m_memory"] = got["sealed"], got["memory"]
    note(
        f"{points:,}-point query end to end (bench/query_e2e.py): sealed {got['sealed']:.1f} ms, "
        f"in memory {got['memory']:.1f} ms"
    )


def _full_query_blocks(eng: object, points: int) -> int:
    got = eng.query(1, 0, points * 1_000_000)  # type: ignore[attr-defined]
    if len(got.timestamps) != points:
        raise AssertionError(f"full query returned {len(got.timestamps)} points, not {points}")
    return int(got.stats.blocks_read)


def rewrite_blocks(res: dict[str, float], note: Note, quick: bool) -> None:
    """A tag rewritten 10 times (every timestamp again, then sealed), read in full.

    The block count is the engine's own (``stats.blocks_read`` of the query). With
    compaction on main (its background thread, default settings), it is read once the
    count has not changed for a compaction interval (bounded wait: 60 s).
    """
    from xtsdb.server.engine import Engine, EngineConfig

    points, block_points = (5_000 if quick else 30_000), 1000
    bound = math.ceil(points / block_points) + 1
    res["rewrite_bound"] = bound
    # On main when the engine has it (a module alone in a working tree may not be wired).
    built = hasattr(Engine, "compact")
    with tempfile.TemporaryDirectory(prefix="xtsdb-rewrite-") as d:
        cfg = EngineConfig(block_points=block_points, read_workers=0)
        with Engine.open(Path(d) / "db", cfg) as eng:
            ts = np.arange(points, dtype=np.int64) * 1_000_000
            for r in range(10):
                eng.write(1, ts, np.full(points, float(r)))
                eng.flush()
            before = _full_query_blocks(eng, points)
            if not built:
                note(
                    f"rewrite: compaction not built on this commit; the full query read "
                    f"{before} blocks (bound {bound})"
                )
                return
            # Settled: no change for a whole compaction interval and a bit (bounded wait).
            quiet = float(getattr(cfg, "compaction_interval_s", 1.0)) + 2
            end, last, since = time.monotonic() + 60, before, time.monotonic()
            while time.monotonic() < end and time.monotonic() - since < quiet:
                time.sleep(0.25)
                now = _full_query_blocks(eng, points)
                if now != last:
                    last, since = now, time.monotonic()
                if now <= bound:
                    break
            res["rewrite_blocks"] = last
            note(f"rewrite: {before} blocks before compaction, {last} after (bound {bound})")
