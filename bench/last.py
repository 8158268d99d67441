"""``last()`` of many tags right after a restart, against the same call warm.

    .venv/bin/python -m bench.last            # 10,000 tags
    .venv/bin/python -m bench.last --quick    # 1,000 tags

A data directory gets ``--tags`` tags of 1,000 points each, sealed into blocks,
and is closed cleanly. It is then opened three ways and ``last()`` of every tag
is timed: the first call after a clean restart (answered from the last-value
file the close wrote), the first call when that file is missing (every tag's
newest block is read and decoded: the behaviour before the file existed), and
a warm call (the median of several). The baseline is the warm call of the same
run; the target is a first call within 3x of it. Opening times are shown too,
since the file is read while the directory is opened.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from time import perf_counter

import numpy as np

if __package__ in (None, ""):  # run as a file: make `bench` and the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import Row, check, table
from xtsdb.server.engine import Engine, EngineConfig, WriteBatch, lastvalues

CFG = EngineConfig(read_workers=0)


def build(path: Path, n_tags: int, points: int) -> None:
    ts = np.arange(points, dtype=np.int64) * 1_000_000
    with Engine.open(path, CFG) as eng:
        for lo in range(0, n_tags, 500):  # one WAL record per 500 tags
            tags = np.arange(lo, min(lo + 500, n_tags))
            ids = np.repeat(tags, points)
            eng.write_batches(
                [
                    WriteBatch.build(
                        ids, np.tile(ts, tags.size), np.sin(ids + np.tile(ts, tags.size))
                    )
                ]
            )
        eng.flush()


def timed_open(path: Path, ids: np.ndarray, warm_reps: int) -> tuple[float, float, float]:
    """Seconds to open, of the first last(), and the median of warm calls."""
    t0 = perf_counter()
    eng = Engine.open(path, CFG)
    opened = perf_counter() - t0
    try:
        t0 = perf_counter()
        first = eng.last(ids)
        first_s = perf_counter() - t0
        assert len(first) == ids.size, "a tag is missing from last()"
        warm = []
        for _ in range(warm_reps):
            t0 = perf_counter()
            eng.last(ids)
            warm.append(perf_counter() - t0)
        return opened, first_s, statistics.median(warm)
    finally:
        eng.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1,000 tags instead of 10,000")
    ap.add_argument("--tags", type=int, help="number of tags (overrides --quick)")
    ap.add_argument("--dir", default="/tmp/xtsdb-bench", help="parent of the data dir (real disk)")
    args = ap.parse_args(argv)
    n_tags = args.tags or (1_000 if args.quick else 10_000)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    ids = np.arange(n_tags, dtype=np.uint32)
    with tempfile.TemporaryDirectory(prefix="last-", dir=args.dir) as tmp:
        path = Path(tmp) / "db"
        build(path, n_tags, 1_000)
        timed_open(path, ids, 1)  # fill the page cache, write the file (clean close)
        open_f, first_f, warm_f = timed_open(path, ids, 9)
        (path / lastvalues.NAME).unlink()
        open_n, first_n, warm_n = timed_open(path, ids, 9)
    warm = min(warm_f, warm_n)
    rows = [
        Row(f"open, last-value file ({n_tags:,} tags)", f"{open_f * 1e3:.1f} ms"),
        Row("open, no last-value file", f"{open_n * 1e3:.1f} ms"),
        check(
            "first last() after a clean restart",
            first_f * 1e3,
            "ms",
            3 * warm * 1e3,
            False,
            f" ({first_f / warm:.1f}x warm)",
        ),
        Row(
            "first last() without the file (before)",
            f"{first_n * 1e3:.1f} ms ({first_n / warm:.0f}x warm)",
        ),
        Row("warm last() (baseline, median of 9)", f"{warm * 1e3:.2f} ms"),
    ]
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
