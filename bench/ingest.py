"""Ingest from files and Telegraf: CSV import and line protocol over HTTP, end to end.

    .venv/bin/python -m bench.ingest             # 5 M CSV rows, 400 K line-protocol lines
    .venv/bin/python -m bench.ingest --quick     # 500 K rows, 100 K lines (< 1 min)
    .venv/bin/python -m bench.ingest --parser    # line-protocol parsers alone, no server

The server is a subprocess (``python -m xtsdb.server``, default durability
fsync) with its InfluxDB endpoint on; the importer is this process, exactly
what ``xtsdb import`` runs. Inputs are generated into a temporary directory
before any timer starts. Baselines measured in the same run say where the
time goes: parsing alone (no server) and writing pre-parsed columns alone.
The line-protocol parser alone is timed both ways, the exact parser line by
line (``parse_exact``) and the columnar path (``parse``), on the Telegraf-like
bodies here and on bench/compare_lp.py's bodies (5 fields a line).
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a file: make `bench` and the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import compare_lp
from bench._util import Row, check, table
from bench.server import server
from xtsdb.client import connect
from xtsdb.client.csv_chunks import parse_long
from xtsdb.client.importexport import Importer
from xtsdb.protocol.line_protocol import parse, parse_exact
from xtsdb.server.process import free_port

TAGS = 100
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z, us
LP_BATCH = 5_000  # lines per POST: Telegraf's default metric_batch_size is 1,000


def make_csv(path: Path, rows: int, names: bool = False) -> None:
    """``tag,timestamp,value,quality`` rows: TAGS tags (ids, or names like the ones of a
    plant), 1 s apart each, random-walk values with 3 decimals."""
    labels = [f"PLANT1.UNIT{t // 10}.FIC{t:03d}.PV" if names else str(t) for t in range(TAGS)]
    rng = np.random.default_rng(7)
    with path.open("w") as f:
        f.write("tag,timestamp,value,quality\n")
        for lo in range(0, rows, 500_000):
            n = min(500_000, rows - lo)
            i = np.arange(lo, lo + n)
            values = np.round(20 + np.cumsum(rng.normal(0, 0.05, n)), 3)
            ts = T0 + (i // TAGS) * 1_000_000
            f.writelines(
                f"{labels[t]},{s},{v!r},192\n"
                for t, s, v in zip((i % TAGS).tolist(), ts.tolist(), values.tolist(), strict=True)
            )


def make_lp(lines: int) -> list[bytes]:
    """Telegraf-like bodies: cpu lines with 4 fields (3 floats, 1 int), 16 hosts x 8 cpus."""
    out, batch = [], []
    for i in range(lines):
        ns = (T0 + (i // 128) * 10_000_000) * 1000
        batch.append(
            f"cpu,cpu=cpu{i % 8},host=host{(i // 8) % 16:02d} usage_user={i % 97 * 0.5},"
            f"usage_system={i % 13 * 0.25},usage_idle={90 + i % 10 * 0.5},n={i}i {ns}\n"
        )
        if len(batch) == LP_BATCH:
            out.append("".join(batch).encode())
            batch = []
    if batch:
        out.append("".join(batch).encode())
    return out


def rate(n: int, secs: float, unit: str) -> str:
    """``n`` per second in millions, and the seconds: "1.23 M rows/s (4.5 s)"."""
    return f"{n / secs / 1e6:.3g} M {unit}/s ({secs:.1f} s)"


def bench_csv_names(base: str, path: Path, rows: int, out: list[Row]) -> None:
    with server(base) as (url, _pid), connect(url, timeout=120) as db:
        t0 = time.perf_counter()
        report = Importer(db, progress=False, create_tags=True).run(str(path))
        import_s = time.perf_counter() - t0
    assert report.points == rows and len(report.tags) == TAGS, report
    what = f"  variant: tag names instead of ids ({TAGS} new tags, --create-tags)"
    out.append(Row(what, rate(rows, import_s, "rows")))


def bench_csv(base: str, path: Path, rows: int, out: list[Row]) -> None:
    with path.open("rb") as f:  # baseline 1: parsing alone
        next(f)
        t0 = time.perf_counter()
        total = 0
        while lines := f.readlines(64 << 20):
            total += len(parse_long(lines, 2, True))
        parse_s = time.perf_counter() - t0
    assert total == rows
    with server(base) as (url, _pid), connect(url, timeout=120) as db:
        t0 = time.perf_counter()
        report = Importer(db, progress=False).run(str(path))
        import_s = time.perf_counter() - t0
    assert report.points == rows, report
    tags = np.arange(rows, dtype=np.uint32) % TAGS  # baseline 2: writing pre-parsed columns
    ts = T0 + (np.arange(rows, dtype=np.int64) // TAGS) * 1_000_000
    values = np.random.default_rng(1).normal(size=rows)
    with server(base) as (url, _pid), connect(url, timeout=120) as db:
        t0 = time.perf_counter()
        for lo in range(0, rows, 1_000_000):
            part = slice(lo, lo + 1_000_000)
            db.write(tags[part], ts[part], values[part])
        write_s = time.perf_counter() - t0
    mb = path.stat().st_size / 1e6
    what = f"CSV import, long layout, {rows:,} rows ({mb:.0f} MB), end to end"
    per_s = rows / import_s / 1e6
    out.append(check(what, per_s, "M rows/s", 1.0, True, f" ({import_s:.1f} s)"))
    out.append(
        Row("  baseline: parsing alone (csv_chunks, no server)", rate(rows, parse_s, "rows"))
    )
    what = "  baseline: writing the same number of pre-parsed points (Client.write, 1 M per call)"
    out.append(Row(what, rate(rows, write_s, "pts")))


def parsers(what: str, bodies: list[bytes], precision: str, out: list[Row]) -> None:
    """The exact parser against the columnar path on the same bodies, best of 3 rounds."""
    lines = sum(b.count(b"\n") for b in bodies)
    best = {}
    for fn in (parse_exact, parse):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            for body in bodies:
                fn(body, precision)
            times.append(time.perf_counter() - t0)
        best[fn.__name__] = min(times)
    old, new = best["parse_exact"], best["parse"]
    out.append(Row(f"line protocol parser alone, {what}", ""))
    out.append(
        Row("  exact parser, line by line (parse_exact)", f"{lines / old / 1e3:,.0f} K lines/s")
    )
    speed = f"{lines / new / 1e3:,.0f} K lines/s ({old / new:.2f}x the exact parser)"
    out.append(Row("  columnar path (parse)", speed))


def bench_parsers(lines: int, out: list[Row]) -> None:
    parsers(f"Telegraf-like cpu bodies, {lines:,} lines x 4 fields", make_lp(lines), "ns", out)
    five = compare_lp.bodies(lines // 2_000, 2_000)
    n = sum(b.count(b"\n") for b in five)
    parsers(f"bench/compare_lp.py bodies, {n:,} lines x 5 fields", five, "u", out)


def bench_lp(base: str, lines: int, out: list[Row]) -> None:
    bodies = make_lp(lines)
    t0 = time.perf_counter()
    for body in bodies:  # baseline: the parser alone
        parse(body)
    parse_s = time.perf_counter() - t0
    port = free_port()
    with server(base, "--http-port", str(port)) as (url, _pid):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", "/write?db=telegraf", bodies[0])  # first contact creates the tags
        assert conn.getresponse().read() == b""
        t0 = time.perf_counter()
        for body in bodies:
            conn.request("POST", "/write?db=telegraf", body)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 204, resp.status
        http_s = time.perf_counter() - t0
        conn.close()
        with connect(url) as db:
            written = db.stats()["server"]["points_written"]
    assert written == 4 * (lines + len(bodies[0].splitlines())), written
    what = f"line protocol over HTTP /write, {lines:,} lines x 4 fields, {LP_BATCH:,} lines"
    what += " per POST, 1 connection, 204 after fsync"
    speed = f"{lines / http_s / 1e3:,.0f} K lines/s = {4 * lines / http_s / 1e6:.2f} M pts/s"
    out.append(Row(what, speed))
    parser = f"{lines / parse_s / 1e3:,.0f} K lines/s"
    out.append(Row("  baseline: line protocol parser alone (same bodies)", parser))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500 K rows, 100 K lines")
    ap.add_argument("--dir", default="/tmp/xtsdb-bench", help="parent of the data dirs (real disk)")
    ap.add_argument("--parser", action="store_true", help="only the line-protocol parsers")
    args = ap.parse_args(argv)
    rows, lines = (500_000, 100_000) if args.quick else (5_000_000, 400_000)
    os.makedirs(args.dir, exist_ok=True)
    load = os.getloadavg()[0]
    machine = f"machine: {os.cpu_count()} cores; load average {load:.2f}; numpy {np.__version__}"
    print(f"{machine}; server: python -m xtsdb.server, durability fsync", flush=True)
    out: list[Row] = []
    bench_parsers(lines, out)
    if args.parser:
        print("\n".join(["", *table(out)]))
        return 0
    with tempfile.TemporaryDirectory(prefix="ingest-", dir=args.dir) as d:
        path = Path(d) / "long.csv"
        make_csv(path, rows)
        bench_csv(args.dir, path, rows, out)
        make_csv(path, rows, names=True)
        bench_csv_names(args.dir, path, rows, out)
    bench_lp(args.dir, lines, out)
    print("\n".join(["", *table(out)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
