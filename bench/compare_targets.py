"""Issue 14's Targets table, each row from figures measured in the same compare run.

Printed after the main table by bench/compare.py (``table``). A row whose figure
is missing (system skipped, step aborted) says so instead of a verdict.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.report import fmt_value as _fmt

Results = dict[str, dict[str, float]]
VM, INFLUX = "victoriametrics", "influxdb"


def _get(res: Results, sys: str, key: str) -> float | None:
    v = res.get(sys, {}).get(key)
    return None if v is None else float(v)


def _status(ok: bool | None, miss: str = "") -> str:
    if ok is None:
        return "not measured"
    return "met" if ok else f"MISSED{': ' + miss if miss else ''}"


def _vs(
    res: Results, key: str, unit: str, higher: bool, goals: dict[str, float]
) -> tuple[str, str, str, str, str, str]:
    """xtsdb, VM, InfluxDB figures; the ratios (> 1: xtsdb better); target; status."""
    x = _get(res, "xtsdb", key)
    ratios: list[str] = []
    oks: list[bool | None] = []
    misses: list[str] = []
    for peer, goal in goals.items():
        p = _get(res, peer, key)
        if x is None or p is None or x <= 0 or p <= 0:
            oks.append(None)
            continue
        r = x / p if higher else p / x
        ratios.append(f"{r:.2f}x {peer[:8]}")
        oks.append(r >= goal)
        if r < goal:
            misses.append(f"{r / goal:.0%} of the {goal:g}x vs {peer[:8]}")
    ok = None if None in oks else all(o for o in oks if o is not None)
    target = ", ".join(f">= {g:g}x {p[:8]}" for p, g in goals.items())
    cells = (_fmt(x, unit), _fmt(_get(res, VM, key), unit), _fmt(_get(res, INFLUX, key), unit))
    return (*cells, ", ".join(ratios) or "n/a", target, _status(ok, "; ".join(misses)))


def _abs(
    res: Results, key: str, unit: str, test: Callable[[float], bool], target: str
) -> tuple[str, str, str, str, str, str]:
    x = _get(res, "xtsdb", key)
    return (_fmt(x, unit), "-", "-", _fmt(x, unit), target, _status(None if x is None else test(x)))


def rows(res: Results) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    ingest = {VM: 5.0, INFLUX: 15.0}
    out.append(
        (
            "ingest through the SDK, 1 client (points/s)",
            *_vs(res, "ingest_1", "points/s", True, ingest),
        )
    )
    out.append(
        (
            "ingest through the SDK, 4 clients (points/s)",
            *_vs(res, "ingest_4", "points/s", True, ingest),
        )
    )
    out.append(
        (
            "server CPU-s per wall s, ingest 4 clients (with children)",
            *_abs(res, "cpu_4", "", lambda v: v > 1.6, "> 1.6"),
        )
    )
    out.append(
        (
            "line protocol /write, same batches (lines/s)",
            *_vs(res, "lp_lines", "lines/s", True, {VM: 2.0}),
        )
    )
    sealed, memory = _get(res, "xtsdb", "q1m_sealed"), _get(res, "xtsdb", "q1m_memory")
    ok = None if sealed is None or memory is None else sealed <= 20 and sealed <= 1.5 * memory
    out.append(
        (
            "1 M-point query of one tag, sealed, end to end (ms)",
            _fmt(sealed, "ms"),
            "-",
            "-",
            "n/a" if ok is None else f"{sealed / memory:.2f}x in-memory ({memory:.3g} ms)",  # type: ignore[operator]
            "<= 20 ms, <= 1.5x in memory",
            _status(ok),
        )
    )
    out.append(
        (
            "write ack p99 under the ingest workload (ms)",
            *_abs(res, "ack_p99", "ms", lambda v: v <= 10, "<= 10 ms"),
        )
    )
    out.append(
        (
            "5-min min/max/avg over 90 days of 1 s data (ms)",
            *_vs(res, "agg_long", "ms", False, {VM: 5.0}),
        )
    )
    out.append(
        (
            "1-day avg over a year of 1 s data (ms, engine)",
            *_abs(res, "year_day_avg", "ms", lambda v: v <= 10, "<= 10 ms"),
        )
    )
    out.append(
        ("aggregate 5 min, 1 tag, 10 K points (ms)", *_vs(res, "aggregate", "ms", False, {VM: 1.0}))
    )
    out.append(("du bytes/point", *_vs(res, "bytes_per_point", "B/pt", False, {VM: 1.0})))
    bound = _get(res, "xtsdb", "rewrite_bound")
    blocks = _get(res, "xtsdb", "rewrite_blocks")
    target = f"<= {bound:.0f}" if bound is not None else "<= ceil(points / block_points) + 1"
    if blocks is None:
        got, status = ("compaction not built" if bound is not None else "n/a"), "not measured"
    else:
        got, status = f"{blocks:.0f}", _status(blocks <= (bound or 0))
    out.append(
        (
            "blocks read, full query after 10 rewrites, compaction settled",
            got,
            "-",
            "-",
            got,
            target,
            status,
        )
    )
    out.append(
        (
            "mixed 8 writers + 4 readers: write rate (points/s)",
            *_vs(res, "conc_write", "points/s", True, {VM: 3.0}),
        )
    )
    out.append(
        (
            "mixed 8 writers + 4 readers: query p99 (ms)",
            *_vs(res, "conc_p99", "ms", False, {VM: 3.0}),
        )
    )
    return out


def table(res: Results) -> str:
    head = ("target (issue 14)", "xtsdb", VM, INFLUX, "measured", "target", "status")
    lines = ["## Targets of issue 14, same run", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "---|" * len(head))
    lines += ["| " + " | ".join(r) + " |" for r in rows(res)]
    return "\n".join(lines)
