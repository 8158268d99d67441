"""Write ack latency with and without a compaction backlog, in the same run.

    .venv/bin/python -m bench.compaction [--seconds 8] [--backlog-tags 40]

Two phases on one engine, each ``--seconds`` long, with the same writer: a
thread writing batches of ``--batch`` points to ``--tags`` live tags, one
``write`` (WAL append + fsync) per batch, timing each acknowledgement.

1. *baseline*: compaction on, nothing to compact;
2. *backlog*: first ``--backlog-tags`` other tags are given a rewrite-heavy
   history (the same timestamps written ``--rounds`` times, deletes), then the
   compactor (interval 0.2 s, the default rate limit) works through them while
   the writer runs.

Prints ack p50/p99/max per phase, the backlog's blocks before and after, and
how many tags were compacted during the phase. The load average is printed too:
the machine is shared.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xtsdb.server.engine import Engine, EngineConfig


def _writer(eng: Engine, tags: int, batch: int, seconds: float, t0: int) -> np.ndarray:
    lat = []
    ts = t0
    end = time.monotonic() + seconds
    rng = np.random.default_rng(1)
    while time.monotonic() < end and len(lat) < 1_000_000:
        per = batch // tags
        tag_ids = np.repeat(np.arange(tags, dtype=np.uint32), per)
        stamps = np.tile(ts + np.arange(per, dtype=np.int64) * 1000, tags)
        a = time.perf_counter()
        eng.write(tag_ids, stamps, rng.random(tag_ids.shape[0]))
        lat.append(time.perf_counter() - a)
        ts += per * 1000
    return np.array(lat) * 1000


def _backlog(eng: Engine, first_tag: int, n_tags: int, rounds: int, points: int) -> None:
    rng = np.random.default_rng(2)
    ts = np.arange(points, dtype=np.int64) * 1_000_000
    for r in range(rounds):
        for tag in range(first_tag, first_tag + n_tags):
            eng.write(tag, ts, rng.random(points) + r)
        eng.flush()
        for tag in range(first_tag, first_tag + n_tags, 3):
            eng.delete(tag, int(ts[r * 10]), int(ts[r * 10 + 5]))


def _blocks(eng: Engine, tags: range) -> tuple[int, int]:
    """(blocks, the policy's bound summed over the tags)."""
    n = bound = 0
    for tag in tags:
        t = eng._tags.get(tag)
        if t is None:
            continue
        n += len(t.blocks)
        pts = len(eng.query(tag, -(1 << 50), 1 << 50))
        bound += math.ceil(pts / eng.config.block_points) + 1
    return n, bound


def _row(name: str, lat: np.ndarray) -> str:
    p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
    top = lat.max()
    return (
        f"{name:9s} acks {lat.shape[0]:6d}  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  max {top:7.2f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--tags", type=int, default=100)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--backlog-tags", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--points", type=int, default=20_000)
    args = ap.parse_args(argv)
    cfg = EngineConfig(compaction=True, compaction_interval_s=0.2, workers=0)
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="xtsdb-bench-compaction-") as tmp:
        run(Path(tmp) / "data", cfg, args)
    print(f"load average at end: {os.getloadavg()}")
    return 0


def run(data: Path, cfg: EngineConfig, args: argparse.Namespace) -> None:
    with Engine.open(data, cfg) as eng:
        t0 = 10**15
        base = _writer(eng, args.tags, args.batch, args.seconds, t0)
        print(_row("baseline", base))
        comp = eng._compactor
        comp.stop.set()  # hold the backlog back while it is written
        back = range(10_000, 10_000 + args.backlog_tags)
        _backlog(eng, back.start, len(back), args.rounds, args.points)
        before, bound = _blocks(eng, back)
        done0 = eng.stats()["compactions"]
        comp.stop.clear()
        th = threading.Thread(target=comp.run, daemon=True)
        th.start()
        lat = _writer(eng, args.tags, args.batch, args.seconds, t0 + 10**12)
        print(_row("backlog", lat))
        done = eng.stats()["compactions"] - done0
        after_phase, _ = _blocks(eng, back)
        comp.stop.set()
        th.join()
        comp.stop.clear()
        while comp.run_once():  # settle what is left, unpaced
            pass
        settled, _ = _blocks(eng, back)
        print(
            f"backlog: {len(back)} tags x {args.points} points x {args.rounds} rounds; "
            f"blocks {before} before, {after_phase} after the phase "
            f"({done} tags compacted during it), {settled} settled; bound {bound}"
        )
        ratio = np.percentile(lat, 99) / np.percentile(base, 99)
        print(f"p99 ratio backlog/baseline: {ratio:.2f}")


if __name__ == "__main__":
    sys.exit(main())
