"""Side-by-side benchmark of xtsdb against InfluxDB 1.x and VictoriaMetrics.

    .venv/bin/python -m bench.compare                 # full run, ~10 min
    .venv/bin/python -m bench.compare --quick         # smoke run, < 1 min
    .venv/bin/python -m bench.compare --systems influxdb,victoriametrics --quick

The Grafana dashboard row is bench/compare_grafana.py (runnable alone too).

Each system runs alone (one server process at a time on this machine) on the
same deterministic data (bench/data.py). Payloads are built before any timer
starts. See bench/README.md for the workloads and how to read the report.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import compare_extra, compare_grafana, compare_lp, compare_targets, data, report
from bench.compare_conc import concurrency
from bench.peers import SYSTEMS, System, dir_bytes

HOUR = 3600


class DeadlineExceeded(RuntimeError):
    pass


@dataclass
class Deadline:
    end: float

    def check(self, what: str) -> None:
        if time.monotonic() > self.end:
            raise DeadlineExceeded(f"global deadline reached during {what}")

    def left(self) -> float:
        return self.end - time.monotonic()


@dataclass
class Run:
    tags: int
    points: int
    reps: int
    conc_seconds: float
    deadline: Deadline
    workdir: Path
    long_days: int = 90
    results: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    _payloads: dict[str, list[tuple[Any, int]]] = field(default_factory=dict)

    @property
    def end_us(self) -> int:
        return data.START_US + self.points * data.INTERVAL_US

    def note(self, system: str, text: str) -> None:
        print(f"  [{system}] {text}", flush=True)
        self.notes.setdefault(system, []).append(text)

    def payloads(self, sys: System) -> list[tuple[Any, int]]:
        """The main data set in the system's native write format, built once per format."""
        kind = "frames" if sys.name == "xtsdb" else f"lines{sys.lines_per_batch}"
        if kind not in self._payloads:
            t0 = time.perf_counter()
            if kind == "frames":
                # Multi-tag columnar frames of 100 tags x all points (1M points at defaults).
                groups = [range(i, min(i + 100, self.tags)) for i in range(0, self.tags, 100)]
                frames = [data.frame(g, self.points) for g in groups]
                self._payloads[kind] = [(f, f.points) for f in frames]
            else:
                per = sys.lines_per_batch
                bodies = list(data.line_batches(range(self.tags), self.points, per))
                total = self.tags * self.points
                sizes = [min(per, total - i * per) for i in range(len(bodies))]
                self._payloads[kind] = list(zip(bodies, sizes, strict=True))
            print(f"  built {kind} payloads in {time.perf_counter() - t0:.1f}s", flush=True)
        return self._payloads[kind]


def _threads(targets: Sequence[Callable[[], None]], join_timeout: float) -> list[BaseException]:
    """Run callables on threads; return the exceptions they raised (bounded join)."""
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # collected and re-raised by the caller
                errors.append(e)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_timeout)
    if any(t.is_alive() for t in threads):
        errors.append(TimeoutError("worker threads did not finish in time"))
    return errors


def ingest(run: Run, sys: System, nclients: int) -> float:
    batches = run.payloads(sys)
    clients = [sys.client() for _ in range(nclients)]

    def writer(c: Any, mine: list[tuple[Any, int]]) -> Callable[[], None]:
        def go() -> None:
            for payload, _n in mine:
                run.deadline.check("ingest")
                c.write(payload)

        return go

    try:
        meter = compare_extra.CpuMeter(sys)
        t0 = time.perf_counter()
        if nclients == 1:
            writer(clients[0], batches)()
        else:
            jobs = [writer(c, batches[i::nclients]) for i, c in enumerate(clients)]
            errors = _threads(jobs, join_timeout=max(run.deadline.left(), 1) + 30)
            if errors:
                raise errors[0]
        elapsed = time.perf_counter() - t0
        run.results.setdefault(sys.name, {})[f"cpu_{nclients}"] = meter.rate()
    finally:
        for c in clients:
            c.close()
    return sum(n for _p, n in batches) / elapsed


def timed(run: Run, fn: Callable[[], int], expect: int, what: str, sysname: str) -> float:
    """Median milliseconds of ``run.reps`` calls; notes a wrong result size once."""
    times = []
    for _ in range(run.reps):
        run.deadline.check(what)
        t0 = time.perf_counter()
        got = fn()
        times.append((time.perf_counter() - t0) * 1000)
        if got != expect:
            run.note(sysname, f"CHECK {what}: returned {got}, expected {expect}")
            break
    return statistics.median(times)


def hour_windows(run: Run, count: int, seed: int) -> list[tuple[int, int, int]]:
    """(tag, start_us, end_us) one-hour windows inside the ingested range, deterministic."""
    rng = np.random.default_rng(seed)
    span = min(HOUR, run.points)
    tags = rng.integers(0, run.tags, count)
    starts = rng.integers(0, run.points - span + 1, count)
    return [
        (
            int(t),
            data.START_US + int(s) * data.INTERVAL_US,
            data.START_US + int(s + span) * data.INTERVAL_US,
        )
        for t, s in zip(tags, starts, strict=True)
    ]


def queries(run: Run, sys: System, res: dict[str, float]) -> None:
    c = sys.client()
    try:
        tag = run.tags // 2
        res["raw_one"] = timed(
            run,
            lambda: c.query_range(tag, data.START_US, run.end_us),
            run.points,
            "raw query 1 tag",
            sys.name,
        )
        wins = hour_windows(run, 100, seed=1)
        span = min(HOUR, run.points)
        total = timed(
            run,
            lambda: sum(c.query_range(t, s, e) for t, s, e in wins),
            span * len(wins),
            "raw query 100x1h",
            sys.name,
        )
        res["raw_100"], res["raw_100_each"] = total, total / len(wins)
        all_tags = np.arange(run.tags, dtype=np.uint32)
        res["last"] = timed(
            run, lambda: c.last_all(all_tags, run.end_us), run.tags, "last value", sys.name
        )
        bucket = 300 * data.INTERVAL_US
        probe = c.aggregate(tag, data.START_US, run.end_us, bucket)
        if probe is None:
            run.note(sys.name, "aggregate: n/a (client has no aggregate())")
        else:
            n_buckets = math.ceil(run.points * data.INTERVAL_US / bucket)
            res["aggregate"] = timed(
                run,
                lambda: c.aggregate(tag, data.START_US, run.end_us, bucket) or 0,
                n_buckets,
                "aggregate 5m",
                sys.name,
            )
    finally:
        c.close()


def bench_system(run: Run, cls: type[System]) -> None:
    name = cls.name
    res = run.results.setdefault(name, {})
    main = cls(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=run.workdir)))
    print(f"\n== {name} {main.version()} ==", flush=True)
    run.note(name, f"durability: {main.durability}")
    run.payloads(main)  # build before any server runs, so no timer or server sees it
    try:
        main.start()
        res["ingest_1"] = ingest(run, main, 1)
        print(f"  ingest 1 client: {res['ingest_1']:,.0f} points/s", flush=True)
        how = main.settle()
        size, stored = dir_bytes(main.data_dir), main.stored_bytes()
        res["bytes_per_point"] = size / (run.tags * run.points)
        res["stored_per_point"] = stored / (run.tags * run.points)
        run.note(name, f"disk: du {size:,} bytes, stored data {stored:,} bytes, after {how}")
        queries(run, main, res)
        print(f"  queries: { {k: round(v, 2) for k, v in res.items()} }", flush=True)
        run.deadline.check("grafana dashboard")  # after the disk figures: it adds a day of data
        compare_grafana.dashboard(main, 10 * run.reps, res, lambda text: run.note(name, text))
        run.deadline.check("concurrency")
        res["conc_write"], res["conc_p99"], nq = concurrency(run, main, res["ingest_1"])
        run.note(name, f"concurrency: {nq} reader queries in {run.conc_seconds:.0f}s")
    finally:
        main.stop()
        shutil.rmtree(main.workdir, ignore_errors=True)
    run.deadline.check("ingest 4 clients")
    fresh = cls(Path(tempfile.mkdtemp(prefix=f"{name}-4c-", dir=run.workdir)))
    try:
        fresh.start()
        res["ingest_4"] = ingest(run, fresh, 4)
        print(f"  ingest 4 clients (fresh instance): {res['ingest_4']:,.0f} points/s")
    finally:
        fresh.stop()
        shutil.rmtree(fresh.workdir, ignore_errors=True)
    note = functools.partial(run.note, name)
    cpu = "/".join(f"{res[k]:.2f}" for k in ("cpu_1", "cpu_4") if k in res)
    note(f"server CPU-s per wall s during ingest (1 / 4 clients, with children): {cpu}")
    if name == "xtsdb":
        run.deadline.check("ack workload")
        compare_extra.ack_workload(cls, run.workdir, res, note)
    if name in ("xtsdb", "victoriametrics"):
        run.deadline.check("90-day aggregate")
        compare_extra.long_range(cls, run.workdir, res, note, run.long_days, run.reps)
    run.deadline.check("line protocol")
    compare_lp.row(cls, run.workdir, res, lambda text: run.note(name, text))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--systems", default="xtsdb,influxdb,victoriametrics")
    p.add_argument("--tags", type=int, default=1000)
    p.add_argument("--points", type=int, default=10_000, help="points per tag (1 s apart)")
    p.add_argument("--quick", action="store_true", help="100 tags x 1,000 points, 3 s concurrency")
    p.add_argument("--concurrency-seconds", type=float, default=20.0)
    p.add_argument("--reps", type=int, default=5, help="repetitions of each query (median)")
    p.add_argument("--deadline", type=float, default=900.0, help="global time limit (s)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--workdir", type=Path, default=None, help="parent of the data dirs")
    a = p.parse_args(argv)
    if a.quick:
        a.tags, a.points, a.concurrency_seconds, a.reps = 100, 1000, 3.0, 3
    names = [s.strip() for s in a.systems.split(",") if s.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        p.error(f"unknown systems {unknown}; choose from {sorted(SYSTEMS)}")
    workdir = Path(tempfile.mkdtemp(prefix="xtsdb-bench-", dir=a.workdir))
    deadline = Deadline(time.monotonic() + a.deadline)
    run = Run(a.tags, a.points, a.reps, a.concurrency_seconds, deadline, workdir)
    runnable: list[type[System]] = []
    versions: dict[str, str] = {}
    for n in names:
        cls = SYSTEMS[n]
        probe = cls(workdir)
        why = probe.missing()
        if why:
            print(f"SKIP {n}: not available. To include it run: {why}")
            run.note(n, f"skipped: {why}")
            continue
        runnable.append(cls)
        versions[n] = probe.version()
    facts = report.machine_facts(workdir, versions)
    print("machine:", "; ".join(f"{k}: {v}" for k, v in facts.items()))
    print(f"data: {a.tags} tags x {a.points} points, concurrency {a.concurrency_seconds:.0f}s")
    run.long_days = 9 if a.quick else 90
    status = 0
    try:
        if "xtsdb" in versions:  # in process / own servers: before the peers load the machine
            note = functools.partial(run.note, "xtsdb")
            res = run.results.setdefault("xtsdb", {})
            compare_extra.year_day_avg(res, note, a.quick)
            compare_extra.query_1m(workdir, res, note, a.quick)
            compare_extra.rewrite_blocks(res, note, a.quick)
        for cls in runnable:
            try:
                bench_system(run, cls)
            except DeadlineExceeded as e:
                run.note(cls.name, f"ABORTED: {e}")
                status = 2
                break
            except Exception as e:  # one broken system must not hide the others' results
                run.note(cls.name, f"FAILED: {type(e).__name__}: {e}")
                status = 1
    except KeyboardInterrupt:
        print("interrupted: writing partial results")
        status = 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # Other work on the machine skews every number; the report says how busy it was.
    facts["load average at end (1/5/15 min)"] = "/".join(f"{x:.2f}" for x in os.getloadavg())
    stem = "quick" if a.quick else "latest"
    shape = f"{a.tags} tags x {a.points} points; concurrency {a.concurrency_seconds:.0f}s"
    verdicts = [compare_grafana.verdict(run.results), compare_lp.verdict(run.results)]
    verdicts.append(compare_targets.table(run.results))
    report.emit(run.results, names, facts, run.notes, a.out, stem, shape, None, verdicts)
    return status


if __name__ == "__main__":
    sys.exit(main())
