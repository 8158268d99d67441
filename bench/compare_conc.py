"""The mixed-load row of bench/compare.py: 8 writers appending new time + 4 readers."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from bench import data
from bench.peers import System

if TYPE_CHECKING:
    from bench.compare import Run


def concurrency(run: Run, sys: System, est_rate: float) -> tuple[float, float, int]:
    """8 writers appending new time to their own tags + 4 readers; (points/s, p99 ms, queries)."""
    from bench.compare import _threads, hour_windows  # here: compare imports this module

    n_writers, n_readers = 8, 4
    writer_tags = [list(range(w, run.tags, n_writers)) for w in range(n_writers)]
    slab = max(1, 10_000 // max(len(t) for t in writer_tags))  # ~10,000 points per request
    # Pre-built pool: 3x what the system ingested alone in the time given (parallel
    # writers can beat one client), capped for memory, so no formatting happens while
    # timed; a writer that exhausts its pool stops early and that is noted.
    cap = (64e6 if sys.name == "xtsdb" else 32e6) if run.tags * run.points > 1e6 else 4e6
    budget = min(est_rate * run.conc_seconds * 3, cap)
    slabs = max(1, math.ceil(budget / n_writers / (slab * len(writer_tags[0]))))
    t0 = time.perf_counter()
    pools = [
        (data.slab_frames if sys.name == "xtsdb" else data.slab_lines)(
            tags, slabs * slab, slab, run.points
        )
        for tags in writer_tags
    ]
    print(f"  built concurrency pool ({slabs} slabs/writer) in {time.perf_counter() - t0:.1f}s")
    stop = threading.Event()
    done_at = [0.0] * n_writers
    written = [0] * n_writers
    latencies: list[list[float]] = [[] for _ in range(n_readers)]
    exhausted: list[int] = []

    def writer(w: int) -> Callable[[], None]:
        def go() -> None:
            c = sys.client()
            try:
                for payload in pools[w]:
                    if stop.is_set():
                        break
                    c.write(payload)
                    written[w] += slab * len(writer_tags[w])
                else:
                    exhausted.append(w)
            finally:
                done_at[w] = time.perf_counter()
                c.close()

        return go

    def reader(r: int) -> Callable[[], None]:
        def go() -> None:
            c = sys.client()
            try:
                for t, s, e in hour_windows(run, 100_000, seed=100 + r):  # bounded count
                    if stop.is_set():
                        break
                    q0 = time.perf_counter()
                    c.query_range(t, s, e)
                    latencies[r].append((time.perf_counter() - q0) * 1000)
            finally:
                c.close()

        return go

    timer = threading.Timer(run.conc_seconds, stop.set)
    start = time.perf_counter()
    timer.start()
    try:
        jobs = [writer(w) for w in range(n_writers)] + [reader(r) for r in range(n_readers)]
        errors = _threads(jobs, join_timeout=run.conc_seconds + 120)
    finally:
        timer.cancel()
        stop.set()
    if errors:
        raise errors[0]
    if exhausted:
        run.note(sys.name, f"concurrency: {len(exhausted)} writer(s) used their whole pool early")
    elapsed = max(done_at) - start
    lat = np.concatenate([np.asarray(x) for x in latencies]) if any(latencies) else np.zeros(1)
    return sum(written) / elapsed, float(np.percentile(lat, 99)), int(lat.size)
