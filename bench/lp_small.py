"""Small line-protocol bodies: where reading line by line beats the columnar scan.

    .venv/bin/python -m bench.lp_small [--quick] [--out FILE]

1. **Parse, in process**: bodies of 1 to 1,000 lines of two shapes (one field
   a line, bench/data.py's; five fields a line, bench/compare_lp.py's), each
   parsed by the columnar scan (``parse``), by the exact parser
   (``parse_exact``) and by ``parse_by_size`` (what the server runs), median of
   interleaved reps. ``SMALL_BODY_BYTES`` should sit below every crossover.
2. **/write, end to end**: 1-line, 10-line and 100-line bodies (five fields a
   line) sent one after another on one keep-alive connection, each
   acknowledged before the next, to a fresh xtsdb (acknowledged after fsync)
   and to VictoriaMetrics (acknowledged before anything is on disk) in the
   same run: requests/s and lines/s.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import compare_lp, data
from bench._util import grid, run_parser
from bench.clients import Http
from bench.lp_workers import emit
from bench.peers import SYSTEMS, System
from xtsdb.protocol.line_protocol import (
    SMALL_BODY_BYTES,
    ParsedBatch,
    parse,
    parse_by_size,
    parse_exact,
)

LINES = (1, 10, 50, 100, 200, 300, 500, 1000)
Parser = Callable[[bytes, str, int], ParsedBatch]


def shapes() -> dict[str, list[bytes]]:
    one = next(iter(data.line_batches(range(10), 1_000, 10_000))).splitlines(keepends=True)
    five = compare_lp.bodies(10, 1_000)[0].splitlines(keepends=True)
    return {"1 field": one, "5 fields": five}


def parse_ms(body: bytes, budget_s: float) -> list[float]:
    """Median ms of each parser on ``body``, interleaved."""
    parsers: list[Parser] = [parse, parse_exact, parse_by_size]
    times: list[list[float]] = [[] for _ in parsers]
    stop = time.monotonic() + budget_s
    for _ in range(max(5, min(400, 200_000 // len(body)))):
        for fn, got in zip(parsers, times, strict=True):
            t0 = time.perf_counter()
            fn(body, "us", 1)
            got.append(time.perf_counter() - t0)
        if time.monotonic() > stop:
            break
    return [statistics.median(t) * 1e3 for t in times]


def parse_rows(budget_s: float) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        ("lines", "shape", "bytes", "columnar ms", "exact ms", "by size ms", "picks")
    ]
    for shape, lines in shapes().items():
        for n in LINES:
            body = b"".join(lines[:n])
            col, exact, chosen = parse_ms(body, budget_s)
            pick = "exact" if len(body) < SMALL_BODY_BYTES else "columnar"
            rows.append(
                (
                    str(n),
                    shape,
                    f"{len(body):,}",
                    f"{col:.3f}",
                    f"{exact:.3f}",
                    f"{chosen:.3f}",
                    pick,
                )
            )
    return rows


def write_rate(sys_: System, body: bytes, seconds: float) -> float:
    """Requests/s of sending ``body`` again and again for ``seconds`` (at most 20,000)."""
    conn = Http("127.0.0.1", sys_.http_port)
    path = compare_lp.write_path(sys_)
    try:
        conn.request("POST", path, body, ok=(204,))  # series created before the timer
        done = 0
        t0 = time.perf_counter()
        while done < 20_000 and time.perf_counter() - t0 < seconds:
            conn.request("POST", path, body, ok=(204,))
            done += 1
        return done / (time.perf_counter() - t0)
    finally:
        conn.close()


def write_rows(workdir: Path, seconds: float) -> list[tuple[str, ...]]:
    five = shapes()["5 fields"]
    rows: list[tuple[str, ...]] = [("body", "system", "requests/s", "lines/s", "xtsdb / peer")]
    for n in (1, 10, 100):
        body = b"".join(five[:n])
        got: dict[str, float] = {}
        for name in ("xtsdb", "victoriametrics"):
            cls = SYSTEMS[name]
            if cls(workdir).missing() is not None:
                continue
            sys_ = cls(Path(tempfile.mkdtemp(prefix=f"{name}-lps-", dir=workdir)))
            try:
                sys_.start()
                got[name] = write_rate(sys_, body, seconds)
            finally:
                sys_.stop()
                shutil.rmtree(sys_.workdir, ignore_errors=True)
            print(f"  {n}-line bodies, {name}: {got[name]:,.0f} requests/s", flush=True)
        for name, rate in got.items():
            ratio = "" if name == "xtsdb" else f"{got.get('xtsdb', 0) / rate:.2f}x"
            rows.append((f"{n} lines", name, f"{rate:,.0f}", f"{rate * n:,.0f}", ratio))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    a = run_parser(__doc__).parse_args(argv)
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    report = [f"SMALL_BODY_BYTES = {SMALL_BODY_BYTES:,}; load at start {load}"]
    report += ["\nparse of one body (median ms):", grid(parse_rows(0.5 if a.quick else 3.0))]
    print("\n".join(report), flush=True)
    Path(a.dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xtsdb-lps-", dir=a.dir) as wd:
        rows = write_rows(Path(wd), 1.0 if a.quick else 5.0)
    report += ["\n/write, one connection, each body acknowledged before the next:", grid(rows)]
    report.append(f"load at end: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    return emit(report, a.out)


if __name__ == "__main__":
    sys.exit(main())
