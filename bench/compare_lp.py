"""The line-protocol row of bench/compare.py: the same /write bodies to all three systems.

    .venv/bin/python -m bench.compare                  # every row, this one included
    .venv/bin/python -m bench.compare_lp [--quick]     # this row alone

What Telegraf does to a database: POST bodies of 5,000 lines (5 fields a line,
precision microseconds) one after another on one keep-alive connection, each
acknowledged before the next is sent. The bodies are bench/data.py's line
batches (tag-major, ``m,tag=t0000 ...``) with five fields ``f0..f4`` instead
of one, built before any server starts. Each system gets a fresh instance per
run, so creating its series is part of every run, alike. Reported: lines/s of
each run and their median (the row), and the ratios xtsdb / peer.

xtsdb's /write answers 204 once the points are fsynced (its default
durability), InfluxDB 1.6 after its WAL fsync; VictoriaMetrics acknowledges
before anything is on disk (bench/README.md, "Durability").
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench import data, report
from bench.clients import Http
from bench.influx_config import HOST
from bench.peers import SYSTEMS, System

LINES_PER_BODY = 5_000
FIELDS = 5
GOAL = 2.0  # xtsdb's lines/s at least 2x VictoriaMetrics' (issue 14)


def bodies(tags: int, points: int) -> list[bytes]:
    """``tags`` x ``points`` lines of 5 fields each, cut into bodies of 5,000 lines.

    Field k of tag t is tag t's random walk (bench/data.py) plus k, written as
    Python's shortest repr, as bench/data.py writes its one field.
    """
    lines: list[str] = []
    stamps = data.timestamps(points).tolist()
    for t in range(tags):
        walk = data.tag_values(t, points)
        cols = [list(map(repr, np.round(walk + k, 3).tolist())) for k in range(FIELDS)]
        head = f"{data.MEASUREMENT},tag={data.tag_name(t)} "
        lines += [
            head + ",".join(f"f{k}={v}" for k, v in enumerate(vals)) + f" {ts}\n"
            for *vals, ts in zip(*cols, stamps, strict=True)
        ]
    return [
        "".join(lines[i : i + LINES_PER_BODY]).encode()
        for i in range(0, len(lines), LINES_PER_BODY)
    ]


def write_path(sys_: System) -> str:
    if sys_.name == "victoriametrics":
        return "/write?precision=us"
    return "/write?db=bench&precision=u"


def one_run(sys_: System, payload: list[bytes]) -> float:
    """Lines/s of sending every body, in order, on one connection, to a running system."""
    conn = Http(HOST, sys_.http_port)
    path = write_path(sys_)
    try:
        t0 = time.perf_counter()
        for body in payload:
            conn.request("POST", path, body, ok=(204,))
        elapsed = time.perf_counter() - t0
    finally:
        conn.close()
    return sum(b.count(b"\n") for b in payload) / elapsed


def stored_points(sys_: System) -> int | None:
    """Points xtsdb says it wrote (a check that nothing was dropped); None for the peers."""
    if sys_.name != "xtsdb":
        return None
    c = sys_.client()
    try:
        return int(c.c.stats()["server"]["points_written"])
    finally:
        c.close()


def measure(
    cls: type[System],
    workdir: Path,
    payload: list[bytes],
    runs: int,
    res: dict[str, float],
    note: Callable[[str], None],
) -> None:
    """``runs`` runs on fresh instances; the median lines/s into ``res['lp_lines']``."""
    rates = []
    want = FIELDS * sum(b.count(b"\n") for b in payload)
    for _ in range(runs):
        sys_ = cls(Path(tempfile.mkdtemp(prefix=f"{cls.name}-lp-", dir=workdir)))
        try:
            sys_.start()
            rates.append(one_run(sys_, payload))
            got = stored_points(sys_)
            if got is not None and got != want:
                note(f"CHECK line protocol: {got:,} points written, expected {want:,}")
        finally:
            sys_.stop()
            shutil.rmtree(sys_.workdir, ignore_errors=True)
    res["lp_lines"] = statistics.median(rates)
    each = ", ".join(f"{r:,.0f}" for r in rates)
    note(
        f"line protocol: {len(payload)} bodies x {LINES_PER_BODY:,} lines; lines/s per run: {each}"
    )


def row(
    cls: type[System], workdir: Path, res: dict[str, float], note: Callable[[str], None]
) -> None:
    """The row as bench/compare.py runs it: 100 tags x 1,000 points, two runs."""
    measure(cls, workdir, bodies(100, 1_000), 2, res, note)


def verdict(results: dict[str, dict[str, float]]) -> str:
    x = results.get("xtsdb", {}).get("lp_lines")
    vm = results.get("victoriametrics", {}).get("lp_lines")
    if x is None or vm is None:
        return "Line protocol target (xtsdb >= 2x VictoriaMetrics' lines/s): not measured"
    r = x / vm
    head = "MET" if r >= GOAL else f"NOT MET (missed by {GOAL / r:.2f}x)"
    parts = [
        f"{p}: {x / v:.2f}x" for p in report.PEERS if (v := results.get(p, {}).get("lp_lines"))
    ]
    return f"Line protocol target (xtsdb >= {GOAL:g}x VictoriaMetrics' lines/s): {head}. " + (
        "xtsdb vs " + "; ".join(parts)
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--systems", default="xtsdb,influxdb,victoriametrics")
    p.add_argument("--tags", type=int, default=100)
    p.add_argument("--points", type=int, default=2_000, help="lines per tag")
    p.add_argument("--runs", type=int, default=3, help="fresh instances per system")
    p.add_argument("--quick", action="store_true", help="50 tags x 1,000 points, 2 runs")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--workdir", type=Path, default=None, help="parent of the data dirs")
    a = p.parse_args(argv)
    if a.quick:
        a.tags, a.points, a.runs = 50, 1_000, 2
    names = [s.strip() for s in a.systems.split(",") if s.strip()]
    t0 = time.perf_counter()
    payload = bodies(a.tags, a.points)
    print(f"built {len(payload)} bodies in {time.perf_counter() - t0:.1f}s", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="xtsdb-lp-", dir=a.workdir))
    results: dict[str, dict[str, float]] = {}
    notes: dict[str, list[str]] = {}
    versions = {}
    load_start = "/".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        for n in names:
            cls = SYSTEMS[n]
            why = cls(workdir).missing()
            if why:
                notes.setdefault(n, []).append(f"skipped: {why}")
                continue
            versions[n] = cls(workdir).version()
            print(f"\n== {n} {versions[n]} ==", flush=True)

            def note(text: str, n: str = n) -> None:
                print(f"  [{n}] {text}", flush=True)
                notes.setdefault(n, []).append(text)

            measure(cls, workdir, payload, a.runs, results.setdefault(n, {}), note)
        facts = report.machine_facts(workdir, versions)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    facts["load average at start (1/5/15 min)"] = load_start
    facts["load average at end (1/5/15 min)"] = "/".join(f"{x:.2f}" for x in os.getloadavg())
    shape = f"{a.tags} tags x {a.points} lines of {FIELDS} fields; {a.runs} runs (median)"
    stem = "lp-quick" if a.quick else "lp"
    report.emit(results, names, facts, notes, a.out, stem, shape, {"lp_lines"}, [verdict(results)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
