"""Aggregate benchmark: 5-minute, 1-hour and 1-day buckets over a year of 1 s data, in process.

    python -m bench.aggregate [--quick] [--out FILE.md]

Workloads (from the historian issue and issue 14):
1. one tag, one year of 1 s data (31.5 M points), 5-minute min/max/avg: target < 100 ms;
   the same year in 1-hour (min/max/avg) and 1-day (avg, target <= 10 ms) buckets,
   answered from block summaries, beside the same query with every block decoded
   (``summary_agg.mode(enabled=False)``, the same-run baseline);
2. 100 tags x 1 day (8.64 M points), the same aggregates, tag after tag;
3. 5-min aggregates of 2 M, 4 M and 7.8 M points (90 days) whole and in two
   halves at once (``split_agg``), which sets ``SPLIT_MIN_POINTS``.
Each is measured end to end through ``Engine.aggregate`` (decoding the blocks
included) with the data sealed in blocks, and beside it the same-run baseline
of only decoding the points (``Engine.query``) and only aggregating decoded
columns, so the table shows where the time goes. Median of several runs.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench._util import Row, check, median_s, table
from xtsdb.server.engine import Engine, EngineConfig, split_agg, summary_agg
from xtsdb.server.engine.aggregate import bucket_aggregate

SEC = 1_000_000
FIVE_MIN = 300 * SEC
HOUR, DAY = 3600 * SEC, 86_400 * SEC
AGGS = ("min", "max", "avg")


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm: page cache, allocator
    return 1e3 * median_s(fn, reps)


def _walk(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(20 + np.cumsum(rng.normal(0, 0.05, n)), 3)


def _fill(eng: Engine, tags: int, points: int) -> None:
    """Write ``points`` 1 s points for each tag, in 1 M-point batches, then seal all."""
    step = 1_000_000
    for tag in range(tags):
        v = _walk(points, tag)
        for lo in range(0, points, step):
            hi = min(points, lo + step)
            eng.write(tag, np.arange(lo, hi, dtype=np.int64) * SEC, v[lo:hi])
    eng.flush()


def _summary_rows(eng: Engine, end: int, reps: int) -> list[Row]:
    """1-hour and 1-day buckets: from block summaries, and with every block decoded."""
    rows = []
    for what, interval, aggs, target in (
        ("1-hour min/max/avg", HOUR, AGGS, None),
        ("1-day avg", DAY, ("avg",), 10.0),
    ):
        got = eng.aggregate(0, 0, end, interval, aggs)
        used = _median_ms(lambda i=interval, a=aggs: eng.aggregate(0, 0, end, i, a), reps)
        with summary_agg.mode(enabled=False):
            base = _median_ms(lambda i=interval, a=aggs: eng.aggregate(0, 0, end, i, a), reps)
        label = f"1 tag x {end // SEC / 1e6:.1f} M points (1 s), {what}, from summaries"
        note = f"{got.blocks_summarised} blocks summarised, {got.stats.blocks_read} decoded"
        if target is None:
            rows.append(Row(label, f"{used:.2f} ms ({note})"))
        else:
            rows.append(check(label, used, "ms", target, higher=False))
            rows.append(Row("   blocks", note))
        rows.append(
            Row("   same query, every block decoded", f"{base:.0f} ms ({base / used:.0f}x)")
        )
    return rows


def _split_rows(eng: Engine, year: int, reps: int) -> list[Row]:
    """5-min aggregates of growing ranges, whole and in two halves at once (split_agg)."""
    rows = []
    saved = split_agg.SPLIT_MIN_POINTS
    try:
        for points in (2_000_000, 4_000_000, 90 * 86_400):
            if points > year:
                continue
            end = points * SEC
            split_agg.SPLIT_MIN_POINTS = 1 << 62
            whole = _median_ms(lambda e=end: eng.aggregate(0, 0, e, FIVE_MIN, AGGS), reps)
            split_agg.SPLIT_MIN_POINTS = 1
            halves = _median_ms(lambda e=end: eng.aggregate(0, 0, e, FIVE_MIN, AGGS), reps)
            what = f"3. {points / 1e6:.1f} M points, 5-min min/max/avg, in two halves at once"
            rows.append(
                Row(what, f"{halves:.1f} ms vs {whole:.1f} ms whole: {whole / halves:.2f}x")
            )
    finally:
        split_agg.SPLIT_MIN_POINTS = saved
    return rows


def day_avg(quick: bool) -> tuple[float, int, int, int]:
    """1-day avg over a year of 1 s data of one tag (a twentieth with ``quick``), for compare.py.

    Returns (median ms, blocks summarised, blocks decoded, points).
    """
    year = 365 * 86_400 // (20 if quick else 1)
    cfg = EngineConfig(read_workers=0, max_memory_points=64_000_000)
    with (
        tempfile.TemporaryDirectory(dir="/tmp", prefix="xtsdb-agg-") as d,
        Engine.open(Path(d) / "year", cfg) as eng,
    ):
        _fill(eng, 1, year)
        end = year * SEC
        got = eng.aggregate(0, 0, end, DAY, ("avg",))
        ms = _median_ms(lambda: eng.aggregate(0, 0, end, DAY, ("avg",)), 7)
        return ms, got.blocks_summarised, got.stats.blocks_read, year


def run(quick: bool) -> list[Row]:
    year = 365 * 86_400 // (20 if quick else 1)
    day_tags = 10 if quick else 100
    reps = 3 if quick else 7
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="xtsdb-agg-") as d:
        cfg = EngineConfig(read_workers=0, max_memory_points=64_000_000)
        with Engine.open(Path(d) / "year", cfg) as eng:
            _fill(eng, 1, year)
            end = year * SEC
            full = _median_ms(lambda: eng.aggregate(0, 0, end, FIVE_MIN, AGGS), reps)
            decode = _median_ms(lambda: eng.query(0, 0, end), reps)
            pts = eng.query(0, 0, end)
            math = _median_ms(
                lambda: bucket_aggregate(
                    pts.timestamps, pts.values, pts.qualities, 0, end, FIVE_MIN, AGGS
                ),
                reps,
            )
            label = f"1 tag x {year / 1e6:.1f} M points (1 s), 5-min min/max/avg"
            rows.append(check(f"1. {label}", full, "ms", 100, higher=False))
            rows.append(Row("   of which: decoding the points (Engine.query)", f"{decode:.0f} ms"))
            rows.append(Row("   of which: aggregating decoded columns", f"{math:.0f} ms"))
            rows.extend(_summary_rows(eng, end, reps))
            rows.extend(_split_rows(eng, year, reps))
        with Engine.open(Path(d) / "day", cfg) as eng:
            _fill(eng, day_tags, 86_400)

            def all_tags() -> None:
                for tag in range(day_tags):
                    eng.aggregate(tag, 0, 86_400 * SEC, FIVE_MIN, AGGS)

            ms = _median_ms(all_tags, reps)
            what = f"2. {day_tags} tags x 1 day (1 s), 5-min min/max/avg, tag by tag"
            rows.append(Row(what, f"{ms:.0f} ms ({ms / day_tags:.2f} ms/tag)"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a twentieth of the year, 10 tags")
    ap.add_argument("--out", type=Path, help="also write the table as Markdown here")
    args = ap.parse_args(argv)
    lines = table(run(args.quick))
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
