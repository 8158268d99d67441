"""End-to-end benchmark of the xtsdb server over loopback: SDK client -> TCP -> server -> disk.

    .venv/bin/python -m bench.server                   # full run, ~70 s
    .venv/bin/python -m bench.server --quick           # smoke run, < 30 s
    .venv/bin/python -m bench.server --out server.md   # also write the table as Markdown
    .venv/bin/python -m bench.server --baseline-rev REV  # workload 3 with REV's code as well

The server is a subprocess (``python -m xtsdb.server``, default durability fsync: every
acknowledged write was fdatasync'ed); the client is this process, on uvloop. Client and
server share the machine's cores, so client-side Python (encoding frames, decoding answers)
takes CPU the server could use. Data directories live under /tmp on the real disk, never
/dev/shm (where fsync is free). Figures are medians of repeated runs (the machine is shared).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: make `bench` and the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from bench import data, query_e2e
from bench._util import Row, check, run_parser, table, verdict
from bench.ceiling import raw_send
from bench.server_workers import bench_workers, tree_cpu_s
from xtsdb.client import AsyncClient, connect
from xtsdb.protocol import WRITE, encode_frame
from xtsdb.server.config import ServerConfig
from xtsdb.server.process import SERVER, ServerProcess

Stats = dict[str, Any]  # the server's counters (the stats op)
# The HTTP port (on servers that have one) is off unless set; say so explicitly.
NO_HTTP = ["--http-port", "-1"] if "http_port" in ServerConfig.__dataclass_fields__ else []
REPO = Path(__file__).resolve().parent.parent
Cols = tuple[int, np.ndarray, np.ndarray, np.ndarray]  # one tag's (tag, ts, values, q)


@dataclass(frozen=True)
class Sizes:
    tags: int  # workload 1: tags x points, one frame per tag
    points: int
    reps: int  # workload 1 and 2 repetitions (fresh server for each ingest run)
    window: int  # workload 1: write requests in flight
    wp_points: int  # workload 2
    q_points: int  # workload 3
    q_reps: int
    q_rounds: int  # fresh servers per kind (sealed, memory): median of their medians
    last_tags: int  # workload 4
    last_reps: int
    small_writes: int  # workload 5b: writes per client (bounded by small_secs too)
    small_secs: float


FULL = Sizes(1000, 10_000, 5, 8, 1_000_000, 1_000_000, 15, 2, 10_000, 20, 1000, 10.0)
QUICK = Sizes(300, 10_000, 1, 8, 200_000, 200_000, 5, 1, 10_000, 10, 150, 2.0)
SMALL_CLIENTS = 8
SMALL_POINTS = 100


def mpts(points: int, secs: float) -> float:
    return points / secs / 1e6


def pct(lat: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(lat) * 1e3, p))


# -- processes -----------------------------------------------------------------------------


@contextlib.contextmanager
def server(base: str, *flags: str, ceiling: bool = False) -> Iterator[tuple[str, int]]:
    """A fresh xtsdb (or ceiling) server process on a free port; yields (URL, pid)."""
    with tempfile.TemporaryDirectory(prefix="server-", dir=base) as d:
        args = ["--port", "0", "--data-dir", f"{d}/data", "--log-level", "WARNING", *NO_HTTP]
        args, command = [*args, *flags], SERVER
        if ceiling:
            args, command = [f"{d}/log"], (sys.executable, "-m", "bench.ceiling")
        with ServerProcess(args, workdir=Path(d), command=command, cwd=REPO) as srv:
            srv.wait_ready(60)
            yield srv.url, srv.pid
            srv.stop(60)  # SIGTERM: xtsdb stops gracefully (commit, seal, checkpoint)


# -- clients -------------------------------------------------------------------------------


async def sdk_ingest(url: str, cols: list[Cols], window: int) -> tuple[float, list[float], Stats]:
    """One AsyncClient, ``window`` write() calls in flight; (seconds, latencies, server stats)."""
    async with await AsyncClient.connect(url, timeout=120) as c:
        todo = iter(cols)  # shared by the workers: each takes the next frame when it is free
        lat: list[float] = []

        async def worker() -> None:
            for tag, ts, values, q in todo:
                t0 = perf_counter()
                await c.write(tag, ts, values, q)
                lat.append(perf_counter() - t0)

        t0 = perf_counter()
        await asyncio.gather(*(worker() for _ in range(window)))
        secs = perf_counter() - t0
        return secs, lat, (await c.stats())["server"]


# -- workloads -----------------------------------------------------------------------------


@dataclass
class Runs:
    """Ingest runs of one kind: wall seconds, ack latencies, CPU seconds (server, client)."""

    secs: list[float] = field(default_factory=list)
    lat: list[list[float]] = field(default_factory=list)  # one list per run
    cpu: list[tuple[float, float]] = field(default_factory=list)
    stats: Stats = field(default_factory=dict)

    def rate(self, n: int) -> float:
        return mpts(n, statistics.median(self.secs))

    def p(self, q: float) -> float:
        """Median over runs of each run's ``q``-th latency percentile (one bad run is one vote)."""
        return statistics.median(pct(lat, q) for lat in self.lat)

    def lat_text(self) -> str:
        return f"p50 {self.p(50):.3g} ms, p99 {self.p(99):.3g} ms"


def ingest_run(
    base: str,
    cols: list[Cols],
    frames: list[bytes],
    window: int,
    runs: Runs,
    *flags: str,
    mode: str = "sdk",
) -> None:
    """One ingest on a fresh server: ``sdk`` (AsyncClient), ``raw`` frames, or the ``ceiling``."""
    with server(base, *flags, ceiling=mode == "ceiling") as (url, pid):
        srv0, cli0 = tree_cpu_s(pid), time.process_time()
        if mode == "sdk":
            secs, lat, runs.stats = uvloop.run(sdk_ingest(url, cols, window))
        else:
            secs, lat = uvloop.run(raw_send(int(url.rsplit(":", 1)[1]), frames, window))
        runs.cpu.append((tree_cpu_s(pid) - srv0, time.process_time() - cli0))
    runs.secs.append(secs)
    runs.lat.append(lat)


def bench_ingest(base: str, sz: Sizes, rows: list[Row]) -> None:
    ts = data.timestamps(sz.points)
    q = np.full(sz.points, data.QUALITY_GOOD, np.uint8)
    cols: list[Cols] = [(t, ts, data.tag_values(t, sz.points), q) for t in range(sz.tags)]
    frames = [encode_frame(WRITE.build(i + 1, *c)) for i, c in enumerate(cols)]
    n, w = sz.tags * sz.points, sz.window
    sdk, half, unsealed, raw, ceil = Runs(), Runs(), Runs(), Runs(), Runs()
    no_seal = ("--block-points", str(2 * sz.points))  # no tag fills a block during the run
    for _ in range(sz.reps):  # interleaved, so a burst of load elsewhere hits every kind alike
        ingest_run(base, cols, frames, w, ceil, mode="ceiling")
        ingest_run(base, cols, frames, w, sdk)
        ingest_run(base, cols, frames, w, raw, mode="raw")
        ingest_run(base, cols, frames, w // 2, half)
        ingest_run(base, cols, frames, w, unsealed, *no_seal)
    if sdk.stats["points_written"] != n:
        raise AssertionError(f"server committed {sdk.stats['points_written']} points, sent {n}")
    x, c = sdk.rate(n), ceil.rate(n)
    srv_cpu, cli_cpu = (statistics.median(col) for col in zip(*sdk.cpu, strict=True))
    wall, st = statistics.median(sdk.secs), sdk.stats
    what = f"1. columnar durable ingest, 1 client, {sz.tags:,} tags x {sz.points:,} pts"
    lat_what = f"{len(sdk.lat[0]):,} writes of {sz.points:,} pts; median of {sz.reps} runs"
    commits = f"{st['commits']} commits, {st['writes_per_commit']:.2f} writes/commit"
    vs_ceiling = f" (= {x / c:.2f}x ceiling)"
    rows.append(
        check(f"{what}, AsyncClient, {w} frames in flight", x, "M pts/s", 8, True, vs_ceiling)
    )
    p99 = verdict(sdk.p(99), 15, False)
    rows.append(
        Row(
            f"5. write ack latency under workload 1 ({lat_what})",
            sdk.lat_text(),
            "p99 <= 15 ms",
            p99,
        )
    )
    info = [
        ("1. baseline: raw uvloop loopback + 1 fdatasync per frame (ceiling)", f"{c:.3g} M pts/s"),
        (
            "1. diagnostic: xtsdb server fed pre-encoded frames (no SDK cost)",
            f"{raw.rate(n):.3g} M pts/s",
        ),
        (
            "1. diagnostic: CPU during the SDK run (2 cores = 2 CPU-s per wall s)",
            f"server {srv_cpu / wall:.2f}, client {cli_cpu / wall:.2f} CPU-s per wall s",
        ),
        (
            "1. diagnostic: server group commit (last SDK run)",
            f"{commits}, max {st['max_writes_per_commit']}",
        ),
        ("5. baseline: ceiling ack latency, same window", ceil.lat_text()),
        (
            f"5. diagnostic: {w // 2} frames in flight (Little: latency ~ window / rate)",
            f"{half.rate(n):.3g} M pts/s, {half.lat_text()}",
        ),
        (
            f"5. diagnostic: {w} in flight, no sealing during the run ({' '.join(no_seal)})",
            f"{unsealed.rate(n):.3g} M pts/s, {unsealed.lat_text()}",
        ),
    ]
    rows += [Row(workload, result) for workload, result in info]  # sorted by number later


class _NoOp:
    def write_point(self, tag: int, ts: int, value: float, quality: int = 192) -> None:
        return None


def bench_write_point(url: str, sz: Sizes, rows: list[Row]) -> None:
    n, tags = sz.wp_points, 1000
    # Python lists built before the timer: the loop body is the API call and nothing else.
    tag_l = [500_000 + i % tags for i in range(n)]
    vals = data.tag_values(7, n).tolist()
    times: list[float] = []
    noop: list[float] = []
    with connect(url, timeout=60) as c:
        for rep in range(sz.reps):
            ts_l = data.timestamps(n // tags + 1, rep * (n // tags + 1)).repeat(tags)[:n].tolist()
            for obj, out in ((_NoOp(), noop), (c, times)):
                wp = obj.write_point
                t0 = perf_counter()
                for tag, ts, v in zip(tag_l, ts_l, vals, strict=True):
                    wp(tag, ts, v)
                if obj is c:
                    c.flush()  # returns once every point is durable: part of the cost
                out.append(perf_counter() - t0)
    x, b = mpts(n, statistics.median(times)), mpts(n, statistics.median(noop))
    what = f"2. Client.write_point x {n:,} (1,000 tags round robin) + flush()"
    rows.append(check(what, x, "M pts/s", 1, True, f" (= {x / b:.2f}x no-op)"))
    rows.append(Row("2. baseline: same loop calling a no-op Python method", f"{b:.3g} M pts/s"))


def bench_last(url: str, sz: Sizes, rows: list[Row]) -> None:
    tags = np.arange(100_000, 100_000 + sz.last_tags, dtype=np.uint32)
    with connect(url, timeout=60) as c:
        c.write(tags, np.full(tags.size, data.START_US, np.int64), np.ones(tags.size))
        times = []
        for _ in range(sz.last_reps):
            t0 = perf_counter()
            r = c.last(tags)
            times.append(perf_counter() - t0)
        if len(r) != tags.size:
            raise AssertionError(f"last returned {len(r)} tags, expected {tags.size}")
    ms = statistics.median(times) * 1e3
    rows.append(check(f"4. last() of {sz.last_tags:,} tags", ms, "ms", 10, False))


def bench_small(url: str, sz: Sizes, rows: list[Row]) -> None:
    """8 connections, each writing 100 points and waiting for the ack, in a loop."""
    v = np.linspace(0.0, 1.0, SMALL_POINTS)

    async def one(k: int, c: AsyncClient, deadline: float) -> list[float]:
        lat = []
        for i in range(sz.small_writes):
            ts = data.timestamps(SMALL_POINTS, i * SMALL_POINTS)
            t0 = perf_counter()
            await c.write(300_000 + k, ts, v)
            lat.append(perf_counter() - t0)
            if t0 > deadline:
                break
        return lat

    async def run() -> tuple[list[list[float]], float, Stats, Stats]:
        clients = [await AsyncClient.connect(url, timeout=60) for _ in range(SMALL_CLIENTS)]
        try:
            before = (await clients[0].stats())["server"]
            t0 = perf_counter()
            lats = await asyncio.gather(
                *(one(k, c, t0 + sz.small_secs) for k, c in enumerate(clients))
            )
            secs = perf_counter() - t0
            return lats, secs, before, (await clients[0].stats())["server"]
        finally:
            for c in clients:
                await c.close()

    lats, secs, before, after = uvloop.run(run())
    lat = [x for one_client in lats for x in one_client]
    per = (after["writes"] - before["writes"]) / max(after["commits"] - before["commits"], 1)
    load = f"{len(lat):,} writes, {len(lat) / secs:,.0f}/s, {per:.2f} writes/commit"
    what = f"5. {SMALL_CLIENTS} clients x single {SMALL_POINTS}-pt writes ({load})"
    rows.append(Row(what, f"p50 {pct(lat, 50):.3g} ms, p99 {pct(lat, 99):.3g} ms"))


def main(argv: list[str] | None = None) -> int:
    ap = run_parser(__doc__)
    ap.add_argument("--baseline-rev", help="also time the query workload with REV's code")
    ap.add_argument("--workers-only", action="store_true", help="only --workers 0 vs default")
    args = ap.parse_args(argv)
    sz = QUICK if args.quick else FULL
    os.makedirs(args.dir, exist_ok=True)
    if args.workers_only:
        load0, wrows = os.getloadavg()[0], []
        bench_workers(args.dir, sz, wrows)
        load = f"load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end"
        print("\n".join(["", *table(wrows), "", load]))
        return 0
    t_start = perf_counter()
    facts = [
        f"machine: nproc={os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), "
        f"{platform.machine()}, {platform.system()} {platform.release()}; "
        f"load average at start {os.getloadavg()[0]:.2f}",
        f"python {platform.python_version()}, uvloop {metadata.version('uvloop')} (server "
        f"and client loops), numpy {np.__version__}; data under {args.dir}",
        "server: python -m xtsdb.server, default --durability fsync (every acknowledged write "
        "fdatasync'ed); one fresh server per ingest run, one shared by workloads 2-5",
        "client and server share the cores: client-side Python competes with the server for CPU",
    ]
    for line in facts:
        print(line, flush=True)

    rows: list[Row] = []
    bench_ingest(args.dir, sz, rows)
    print("ingest done", flush=True)
    with server(args.dir) as (url, _pid):
        bench_write_point(url, sz, rows)
        bench_last(url, sz, rows)
        bench_small(url, sz, rows)
    # Sealed against all in memory (block_points above the query size), each on a fresh
    # server, with the previous receive path and --baseline-rev's code as baselines.
    rev = args.baseline_rev
    figures = query_e2e.compare(args.dir, sz.q_points, sz.q_reps, rev, sz.q_rounds)
    rows += query_e2e.rows(sz.q_points, figures, rev)

    rows.sort(key=lambda r: r.workload.split(".")[0])  # by workload number; stable
    load = f"load average at end {os.getloadavg()[0]:.2f}"
    tail = f"total bench time {perf_counter() - t_start:.0f} s, {load}"
    out = ["", *table(rows), "", tail]
    print("\n".join(out))
    if args.out:
        md = ["# xtsdb server benchmark (end to end over loopback)", ""]
        md += [*[f"- {x}" for x in facts], *out]
        args.out.write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
