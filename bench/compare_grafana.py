"""The Grafana dashboard row of bench/compare.py: mean per 1 min over 24 h of 10 tags.

    .venv/bin/python -m bench.compare                      # every row, this one included
    .venv/bin/python -m bench.compare_grafana [--quick]    # this row alone

Each system receives the same day of 1 s data for 10 series (line protocol
``dash,tag=t0000 value=...``, 864,000 points, through its HTTP ``/write``),
settles it as it keeps data long term, and is then asked what a Grafana panel
asks for it, over HTTP on a keep-alive connection:

- xtsdb and InfluxDB, Grafana's InfluxDB data source in InfluxQL mode with a
  multi-value variable ``$tag`` and ``GROUP BY time($__interval), "tag"``:
  ``GET /query?db=..&epoch=ms&q=SELECT mean("value") FROM "dash" WHERE
  ("tag" =~ /^(t0000|...)$/) AND time >= Ams and time <= Bms GROUP BY
  time(1m), "tag" fill(null)`` (``$timeFilter`` expanded as Grafana does);
- VictoriaMetrics, a Grafana Prometheus panel: ``GET /api/v1/query_range``
  with ``avg_over_time(dash_value{tag=~"(t0000|...)"}[1m])``, step 60 s.

The clock runs from the request until its JSON is parsed (Grafana parses it
too), warm: two untimed calls first, the first of which is checked against
means computed here from the data (InfluxDB's buckets are ``[t, t+1m)``,
Prometheus' windows ``(t-1m, t]``). Reported: median and p95 in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench import data, report
from bench.clients import Http, HttpError
from bench.influx_config import HOST
from bench.peers import SYSTEMS, System

TAGS = 10
POINTS = 86_400  # one day at 1 s
STEP_S = 60
MEASUREMENT = "dash"
START_MS = data.START_US // 1000
DAY_MS = POINTS * 1000
NAMES = [data.tag_name(t) for t in range(TAGS)]
GOAL = 3.0  # xtsdb at least 3x faster than each peer (issue 13)


def bodies() -> list[bytes]:
    """The day of data as line protocol (precision us), 10,000 lines per body.

    bench/data.py writes the measurement ``m``; a line starts with ``m,tag=``
    and nothing else in it can (values and times are digits), so renaming the
    prefix gives the same points under ``dash``, apart from the main data set.
    """
    lines = data.line_batches(range(TAGS), POINTS, 10_000)
    return [b.replace(b"m,tag=", f"{MEASUREMENT},tag=".encode()) for b in lines]


def influxql() -> str:
    """The statement Grafana's InfluxQL editor sends for the panel, ``$timeFilter`` expanded."""
    tags = "|".join(NAMES)
    end = START_MS + DAY_MS - 1  # Grafana's range end is inclusive, in ms
    return (
        f'SELECT mean("value") FROM "{MEASUREMENT}" WHERE ("tag" =~ /^({tags})$/) AND '
        f'time >= {START_MS}ms and time <= {end}ms GROUP BY time(1m), "tag" fill(null)'
    )


def promql() -> str:
    return f'avg_over_time({MEASUREMENT}_value{{tag=~"({"|".join(NAMES)})"}}[1m])'


def expected(prometheus: bool) -> npt.NDArray[np.float64]:
    """(TAGS, 1440) means: per ``[t, t+1m)`` bucket, or per ``(t-1m, t]`` window."""
    out = []
    for t in range(TAGS):
        v = data.tag_values(t, POINTS)
        if prometheus:
            # Window j holds points 60j+1 .. 60j+60; the last one lacks point 86,400.
            starts = np.arange(1, POINTS, STEP_S)
            sums = np.add.reduceat(v, starts)
            counts = np.diff(np.append(starts, POINTS))
            out.append(sums / counts)
        else:
            out.append(v.reshape(-1, STEP_S).mean(axis=1))
    return np.stack(out)


def ask(sys_: System, conn: Http) -> Callable[[], bytes]:
    """A call that sends the panel's request and returns the answer's body."""
    if sys_.name == "victoriametrics":
        params = {
            "query": promql(),
            "start": str(START_MS // 1000 + STEP_S),
            "end": str((START_MS + DAY_MS) // 1000),
            "step": str(STEP_S),
        }
        path = "/api/v1/query_range?" + urllib.parse.urlencode(params)
    else:
        params = {"db": "bench", "q": influxql(), "epoch": "ms"}
        path = "/query?" + urllib.parse.urlencode(params)
    return lambda: conn.request("GET", path)


def columns(sys_: System, answer: Any) -> dict[str, tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
    """tag -> (times in ms, means) from either answer shape."""
    out = {}
    if sys_.name == "victoriametrics":
        for r in answer["data"]["result"]:
            rows = np.asarray(r["values"], dtype=np.float64)
            out[r["metric"]["tag"]] = (rows[:, 0] * 1000, rows[:, 1])
        return out
    res = answer["results"][0]
    if "error" in res:
        raise HttpError(res["error"])
    for s in res.get("series", []):
        rows = np.asarray(s["values"], dtype=np.float64)  # null means would be NaN
        out[s["tags"]["tag"]] = (rows[:, 0], rows[:, 1])
    return out


def check(sys_: System, answer: Any) -> str | None:
    """None if the answer holds the expected 10 x 1440 means (1e-9 relative), else why not."""
    prom = sys_.name == "victoriametrics"
    got = columns(sys_, answer)
    if sorted(got) != NAMES:
        return f"series {sorted(got)}, expected {NAMES}"
    want = expected(prom)
    first = START_MS + (STEP_S * 1000 if prom else 0)
    times = first + np.arange(want.shape[1]) * STEP_S * 1000
    for i, name in enumerate(NAMES):
        ts, vals = got[name]
        if ts.shape != times.shape or not np.array_equal(ts, times):
            return f"{name}: {ts.size} rows or times not the expected {times.size} buckets"
        if not np.allclose(vals, want[i], rtol=1e-9, atol=0):
            return f"{name}: means differ from the data's (max {np.nanmax(abs(vals - want[i]))})"
    return None


def load(sys_: System) -> str:
    """Write the day into a running system and settle it; says how it was settled."""
    conn = Http(HOST, sys_.http_port)
    path = (
        "/write?precision=us" if sys_.name == "victoriametrics" else "/write?db=bench&precision=u"
    )
    try:
        for body in bodies():
            conn.request("POST", path, body, ok=(204,))
    finally:
        conn.close()
    return sys_.settle()


def dashboard(sys_: System, reps: int, res: dict[str, float], note: Callable[[str], None]) -> None:
    """Load, check, then time ``reps`` warm panel queries into ``res['grafana*']``."""
    t0 = time.perf_counter()
    how = load(sys_)
    note(f"grafana: {TAGS * POINTS:,} points loaded in {time.perf_counter() - t0:.0f}s; {how}")
    conn = Http(HOST, sys_.http_port)
    try:
        call = ask(sys_, conn)
        wrong = check(sys_, json.loads(call()))
        if wrong:
            note(f"CHECK grafana dashboard: {wrong}")
        call()
        ms, parse_ms = [], []
        for _ in range(reps):
            q0 = time.perf_counter()
            body = call()
            q1 = time.perf_counter()
            json.loads(body)
            q2 = time.perf_counter()
            ms.append((q2 - q0) * 1000)
            parse_ms.append((q2 - q1) * 1000)
    finally:
        conn.close()
    res["grafana"] = float(np.median(ms))
    res["grafana_p95"] = float(np.percentile(ms, 95))
    med, p95 = res["grafana"], res["grafana_p95"]
    note(f"grafana: {reps} timed queries, median {med:.1f} ms, p95 {p95:.1f} ms")
    # The client's share, so a reader can tell the server's time from the JSON's size.
    size = len(body) / 1024
    note(f"grafana: answer {size:,.0f} KiB, parsed by the client in {np.median(parse_ms):.1f} ms")


def verdict(results: dict[str, dict[str, float]]) -> str:
    """One plain sentence: is xtsdb's panel at least GOAL x faster than both peers?"""
    x = results.get("xtsdb", {})
    if "grafana" not in x:
        return "Grafana dashboard target: not measured for xtsdb"
    parts, met = [], True
    for p in report.PEERS:
        peer = results.get(p, {})
        if "grafana" not in peer:
            parts.append(f"{p} not measured")
            met = False
            continue
        r50, r95 = peer["grafana"] / x["grafana"], peer["grafana_p95"] / x["grafana_p95"]
        met = met and r50 >= GOAL and r95 >= GOAL
        parts.append(f"{p}: {_times(r50)} (median), {_times(r95)} (p95)")
    head = "MET" if met else "NOT MET"
    what = f"Grafana dashboard target (xtsdb >= {GOAL:g}x faster than both)"
    return f"{what}: {head}. xtsdb vs " + "; ".join(parts)


def _times(r: float) -> str:
    return f"{r:.2f}x faster" if r >= 1 else f"{1 / r:.2f}x slower"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--systems", default="xtsdb,influxdb,victoriametrics")
    p.add_argument("--reps", type=int, default=50, help="timed queries per system")
    p.add_argument("--quick", action="store_true", help="20 timed queries")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--workdir", type=Path, default=None, help="parent of the data dirs")
    a = p.parse_args(argv)
    reps = 20 if a.quick else a.reps
    names = [s.strip() for s in a.systems.split(",") if s.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="xtsdb-grafana-", dir=a.workdir))
    results: dict[str, dict[str, float]] = {}
    notes: dict[str, list[str]] = {}
    versions = {}
    try:
        for n in names:
            sys_ = SYSTEMS[n](Path(tempfile.mkdtemp(prefix=f"{n}-", dir=workdir)))
            why = sys_.missing()
            if why:
                notes.setdefault(n, []).append(f"skipped: {why}")
                continue
            versions[n] = sys_.version()
            print(f"\n== {n} {versions[n]} ==", flush=True)

            def note(text: str, n: str = n) -> None:
                print(f"  [{n}] {text}", flush=True)
                notes.setdefault(n, []).append(text)

            try:
                sys_.start()
                dashboard(sys_, reps, results.setdefault(n, {}), note)
            finally:
                sys_.stop()
        facts = report.machine_facts(workdir, versions)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    facts["load average at end (1/5/15 min)"] = "/".join(f"{x:.2f}" for x in os.getloadavg())
    shape = f"{TAGS} tags x {POINTS} points (1 s); {reps} timed queries"
    stem = "grafana-quick" if a.quick else "grafana"
    keys = {"grafana", "grafana_p95"}
    report.emit(results, names, facts, notes, a.out, stem, shape, keys, [verdict(results)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
