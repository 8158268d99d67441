"""Line protocol parsed inline or in the worker processes: the threshold, and /write.

    .venv/bin/python -m bench.lp_workers [--quick] [--out FILE]

1. **Threshold**: one body of Telegraf-like lines (bench/compare_lp.py's: 5
   fields a line) cut to sizes from 10 KB to 8 MB; each size parsed inline
   (``protocol.line_protocol.parse``) and through the two workers
   (``server.influx_parse.parse_body``), interleaved, median of several
   reps. ``PARSE_IN_WORKERS_BYTES`` is the smallest size from which the
   workers win in every run.
2. **/write**: bench/compare_lp.py's row (5,000-line bodies, one keep-alive
   connection, each acknowledged before the next) on fresh servers with
   ``--workers 0`` and with the default pool, and VictoriaMetrics, in the
   same run, twice.

Both parts run twice (``--runs``); the load average is printed with each.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import compare_lp
from bench._util import grid, run_parser
from bench.peers import SYSTEMS, System, VictoriaMetrics, Xtsdb
from xtsdb.protocol.line_protocol import parse
from xtsdb.server.engine.workers import WorkerPool, default_size
from xtsdb.server.influx_parse import PARSE_IN_WORKERS_BYTES, parse_body

SIZES_KB = (10, 32, 100, 256, 512, 1024, 2048, 4096, 8192)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def body_of(size: int, lines: bytes) -> bytes:
    cut = lines.rfind(b"\n", 0, size)
    return lines[: cut + 1]


def threshold(
    pool: WorkerPool, lines: bytes, sizes: Sequence[int], budget_s: float
) -> list[tuple[int, float, float]]:
    """(bytes, inline ms, workers ms) per size: medians, the two interleaved."""
    out = []
    for kb in sizes:
        body = body_of(kb * 1024, lines)
        reps = max(3, min(50, int(2e6 // len(body))))
        inline: list[float] = []
        workers: list[float] = []
        stop = time.monotonic() + budget_s
        for _ in range(reps):
            t0 = time.perf_counter()
            parse(body, "us", 1)
            t1 = time.perf_counter()
            parse_body(pool, body, "us", 1, min_bytes=0)
            t2 = time.perf_counter()
            inline.append(t1 - t0)
            workers.append(t2 - t1)
            if time.monotonic() > stop:
                break
        out.append((len(body), statistics.median(inline) * 1e3, statistics.median(workers) * 1e3))
    return out


class XtsdbInline(Xtsdb):
    extra_args = ("--workers", "0")


def write_rate(cls: type[System], workdir: Path, payload: list[bytes], runs: int) -> float:
    """Median lines/s of ``runs`` fresh servers, each sent the first body once untimed
    (the worker processes start on first use: a cost of a server's life, not a body's)."""
    rates = []
    for _ in range(runs):
        sys_ = cls(Path(tempfile.mkdtemp(prefix=f"{cls.name}-lpw-", dir=workdir)))
        try:
            sys_.start()
            compare_lp.one_run(sys_, payload[:1])
            rates.append(compare_lp.one_run(sys_, payload))
        finally:
            sys_.stop()
            shutil.rmtree(sys_.workdir, ignore_errors=True)
    return statistics.median(rates)


def write_rates(
    workdir: Path, payloads: dict[str, list[bytes]], runs: int
) -> list[tuple[str, ...]]:
    kinds: list[tuple[str, type[System]]] = [
        ("xtsdb --workers 0", XtsdbInline),
        ("xtsdb default workers", Xtsdb),
    ]
    if VictoriaMetrics(workdir).missing() is None:
        kinds.append(("victoriametrics", SYSTEMS["victoriametrics"]))
    rows: list[tuple[str, ...]] = [("/write", "system", "lines/s", "vs --workers 0")]
    for what, payload in payloads.items():
        base = 0.0
        for name, cls in kinds:
            rate = write_rate(cls, workdir, payload, runs)
            base = base or rate
            rows.append((what, name, f"{rate:,.0f}", f"{rate / base:.2f}x"))
            print(f"  {what}, {name}: {rate:,.0f} lines/s", flush=True)
    return rows


def from_size(runs: list[list[tuple[int, float, float]]]) -> int | None:
    """The smallest size from which the workers win at every size, in every run."""
    sizes = [n for n, _, _ in runs[0]]
    for k in range(len(sizes)):
        if all(w < i for got in runs for _, i, w in got[k:]):
            return sizes[k]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    ap = run_parser(__doc__)
    ap.add_argument("--runs", type=int, default=2, help="whole runs of both parts")
    a = ap.parse_args(argv)
    tags, points, per_system = (20, 500, 1) if a.quick else (100, 2000, 3)
    sizes = SIZES_KB[:4] if a.quick else SIZES_KB
    bodies = compare_lp.bodies(tags, points)
    big = [b"".join(bodies[i : i + 20]) for i in range(0, len(bodies), 20)]
    payloads = {"5,000-line bodies": bodies, f"{20 * 5000:,}-line bodies": big}
    lines = b"".join(compare_lp.bodies(400, 1000))  # 2,000 bodies' worth: > 8 MB
    report = [f"workers: {default_size()}; PARSE_IN_WORKERS_BYTES = {PARSE_IN_WORKERS_BYTES:,}"]
    Path(a.dir).mkdir(parents=True, exist_ok=True)
    parsed: list[list[tuple[int, float, float]]] = []
    for run in range(1, a.runs + 1):
        report.append(f"\n=== run {run} (load {load()} at start) ===")
        pool = WorkerPool(default_size(), 128 * 1024 * 1024)
        try:
            pool.start_all()
            got = threshold(pool, lines, sizes, 3.0 if a.quick else 10.0)
        finally:
            pool.close()
        parsed.append(got)
        rows: list[tuple[str, ...]] = [("body", "inline ms", "workers ms", "workers / inline")]
        rows += [(f"{n / 1024:,.0f} KB", f"{i:.2f}", f"{w:.2f}", f"{w / i:.2f}") for n, i, w in got]
        report += ["parse of one body (median):", grid(rows)]
        with tempfile.TemporaryDirectory(prefix="xtsdb-lpw-", dir=a.dir) as wd:
            rows = write_rates(Path(wd), payloads, per_system)
        report += [f"/write, one connection ({per_system} fresh servers each, median):", grid(rows)]
        report.append(f"load at end: {load()}")
        print("\n".join(report[-6:]), flush=True)
    at = from_size(parsed)
    report.append(
        f"\nworkers faster at every size from {at / 1024:,.0f} KB on, in every run"
        if at
        else "\nworkers not faster at every larger size in every run"
    )
    return emit(report, a.out)


def emit(report: list[str], out: Path | None) -> int:
    """Print the whole report, and write it to ``out`` if given."""
    text = "\n".join(report) + "\n"
    print("\n" + text)
    if out:
        Path(out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
