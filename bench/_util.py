"""Small helpers shared by the bench scripts: result rows, verdicts, timers, table printers."""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any


@dataclass
class Row:
    workload: str
    result: str
    target: str = ""
    status: str = "info"


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    if ok:
        return "meets"
    miss = (1 - value / target) if higher_is_better else (value / target - 1)
    return f"MISSED by {100 * miss:.0f}%"


def check(
    workload: str, value: float, unit: str, target: float, higher: bool, extra: str = ""
) -> Row:
    """A row with a target: ``value`` against ``target`` (both in ``unit``)."""
    sign = ">=" if higher else "<="
    result = f"{value:.3g} {unit}{extra}"
    return Row(workload, result, f"{sign} {target:g} {unit}", verdict(value, target, higher))


def run_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options of a table-printing bench: ``--quick``, ``--out FILE``, ``--dir DIR``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test, < 30 s)")
    ap.add_argument("--out", type=Path, help="also write the report as Markdown here")
    ap.add_argument("--dir", default="/tmp/xtsdb-bench", help="parent of the data dirs (real disk)")
    return ap


def median_s(fn: Callable[[], Any], reps: int, clock: Callable[[], float] = perf_counter) -> float:
    """Median seconds of ``reps`` calls of ``fn`` by ``clock`` (wall time unless told)."""
    times = []
    for _ in range(reps):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def fresh_dir(base: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="engine-", dir=base)


def grid(rows: list[tuple[str, ...]]) -> str:
    """Rows of cells as a Markdown-style table body, each column padded to its widest."""
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |" for r in rows)


def table(rows: list[Row]) -> list[str]:
    head = ("workload", "result", "target", "status")
    cells = [head] + [(r.workload, r.result, r.target, r.status) for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = ["| " + " | ".join(c[i].ljust(w[i]) for i in range(4)) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (x + 2) for x in w) + "|")
    return lines
