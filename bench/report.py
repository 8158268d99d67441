"""Comparison table (stdout, Markdown, CSV) and ratio chart (PNG) for bench/compare.py.

A ratio is always oriented so that > 1 means xtsdb is better: for "higher is
better" metrics it is xtsdb / peer, for "lower is better" ones peer / xtsdb.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PEERS = ("influxdb", "victoriametrics")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_better: bool
    goals: dict[str, float] = field(default_factory=dict)  # peer -> minimum ratio


_FAST = {"influxdb": 3.0, "victoriametrics": 3.0}
METRICS = (
    Metric(
        "ingest_1", "ingest, 1 client", "points/s", True, {"influxdb": 10.0, "victoriametrics": 5.0}
    ),
    Metric(
        "ingest_4",
        "ingest, 4 clients",
        "points/s",
        True,
        {"influxdb": 10.0, "victoriametrics": 5.0},
    ),
    Metric("raw_one", "raw query, 1 tag whole range", "ms", False, _FAST),
    Metric("raw_100", "raw query, 100 tags x 1 h (total)", "ms", False, _FAST),
    Metric("raw_100_each", "raw query, 100 tags x 1 h (per query)", "ms", False, _FAST),
    Metric("last", "last value of all tags", "ms", False, _FAST),
    Metric("aggregate", "aggregate 5 min min/max/avg, 1 tag", "ms", False),
    Metric(
        "bytes_per_point",
        "disk bytes/point: du of data dir",
        "B/pt",
        False,
        {"victoriametrics": 1.0},
    ),
    Metric(
        "stored_per_point",
        "disk bytes/point: stored data (no WAL, no prealloc)",
        "B/pt",
        False,
        {"victoriametrics": 1.0},
    ),
    Metric("conc_write", "concurrency 8w+4r: write rate", "points/s", True),
    Metric("conc_p99", "concurrency 8w+4r: query p99", "ms", False),
    # bench/compare_grafana.py: a panel's query over HTTP (InfluxQL / query_range).
    Metric("grafana", "Grafana panel, mean/1 min, 24 h x 10 tags (median)", "ms", False, _FAST),
    Metric("grafana_p95", "Grafana panel, mean/1 min, 24 h x 10 tags (p95)", "ms", False, _FAST),
    # bench/compare_lp.py: 5,000-line bodies of 5 fields through each /write.
    Metric(
        "lp_lines",
        "line protocol /write, 5,000 lines x 5 fields",
        "lines/s",
        True,
        {"victoriametrics": 2.0},
    ),
)


def ratio(m: Metric, xtsdb: float | None, peer: float | None) -> float | None:
    if xtsdb is None or peer is None or xtsdb <= 0 or peer <= 0:
        return None
    return xtsdb / peer if m.higher_better else peer / xtsdb


def fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit in ("points/s", "lines/s"):
        return f"{v:,.0f}"
    return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"


def verdict(r: float | None, goal: float | None) -> str:
    if r is None:
        return "n/a"
    text = f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"
    if r < 1:
        return f"{text} xtsdb loses"
    if goal is not None:
        return f"{text} {'meets goal' if r >= goal else 'below goal'}"
    return text


def rows(
    results: dict[str, dict[str, float]], systems: list[str], metrics: Sequence[Metric] = METRICS
) -> list[list[str]]:
    peers = [p for p in PEERS if p in systems]
    head = ["workload", "unit", "better", *systems]
    if "xtsdb" in systems:
        for p in peers:
            head += [f"xtsdb vs {p}", "goal"]
    out = [head]
    for m in metrics:
        row = [m.label, m.unit, "higher" if m.higher_better else "lower"]
        row += [fmt_value(results.get(s, {}).get(m.key), m.unit) for s in systems]
        if "xtsdb" in systems:
            x = results.get("xtsdb", {}).get(m.key)
            for p in peers:
                goal = m.goals.get(p)
                row += [
                    verdict(ratio(m, x, results.get(p, {}).get(m.key)), goal),
                    f">= {goal:g}x" if goal else "-",
                ]
        out.append(row)
    return out


def text_table(table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(table: list[list[str]]) -> str:
    md = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    md += ["| " + " | ".join(r) + " |" for r in table[1:]]
    return "\n".join(md)


def chart(
    results: dict[str, dict[str, float]],
    systems: list[str],
    path: Path,
    metrics: Sequence[Metric] = METRICS,
) -> bool:
    """Horizontal bars of xtsdb/peer ratios on a log axis, a line at 1.0, goals as ticks."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (pip install matplotlib)")
        return False
    peers = [p for p in PEERS if p in systems]
    if "xtsdb" not in systems or not peers:
        return False
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(metrics) * len(peers) + 1.5))
    h = 0.8 / len(peers)
    colors = {"influxdb": "#1f77b4", "victoriametrics": "#ff7f0e"}
    for j, p in enumerate(peers):
        for i, m in enumerate(metrics):
            y = i + j * h
            r = ratio(m, results.get("xtsdb", {}).get(m.key), results.get(p, {}).get(m.key))
            if r is not None:
                # Bars grow from the 1.0 line: right when xtsdb wins, left when it loses.
                ax.barh(
                    y,
                    r - 1.0,
                    height=h,
                    color=colors[p],
                    label=f"vs {p}" if i == 0 else None,
                    alpha=1.0 if r >= 1 else 0.45,
                    left=1.0,
                    hatch=None if r >= 1 else "//",
                )
                ax.text(
                    r,
                    y,
                    f" {r:.2g}x " if r >= 1 else f"{r:.2g}x ",
                    va="center",
                    ha="left" if r >= 1 else "right",
                    fontsize=8,
                )
            else:
                ax.text(1.0, y, " n/a", va="center", fontsize=8, color="grey")
            goal = m.goals.get(p)
            if goal:
                ax.plot(
                    [goal, goal],
                    [y - h / 2, y + h / 2],
                    color="green",
                    lw=2,
                    label="goal" if (i, j) == (0, 0) else None,
                )
    ax.axvline(1.0, color="black", lw=1.2)
    ax.set_xscale("log")
    ax.set_yticks([i + h * (len(peers) - 1) / 2 for i in range(len(metrics))])
    ax.set_yticklabels([m.label for m in metrics], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("xtsdb / peer, oriented so > 1 = xtsdb better (log scale; hatched: xtsdb loses)")
    ax.set_title("xtsdb vs peers")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def emit(
    results: dict[str, dict[str, float]],
    systems: list[str],
    facts: dict[str, str],
    notes: dict[str, list[str]],
    out: Path,
    stem: str,
    shape: str,
    keys: set[str] | None = None,
    verdicts: Sequence[str] = (),
) -> None:
    """Print and write the table of ``keys`` (default: every metric), then ``verdicts``."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = [m for m in METRICS if keys is None or m.key in keys]
    table = rows(results, systems, metrics)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print("\n" + text_table(table))
    for v in verdicts:
        print("\n" + v)
    print("\nnotes:")
    for s in systems:
        for n in notes.get(s, []):
            print(f"  {s}: {n}")
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "unit", "higher_is_better", *systems])
        for m in metrics:
            w.writerow(
                [
                    m.key,
                    m.unit,
                    m.higher_better,
                    *[results.get(s, {}).get(m.key, "") for s in systems],
                ]
            )
    png = out / f"{stem}.png"
    has_chart = chart(results, systems, png, metrics)
    md = [
        f"# xtsdb vs peers ({stamp})",
        "",
        f"Data: {shape}.",
        "",
        "Ratios: > 1 means xtsdb is better, whatever the metric's direction.",
        "",
        markdown(table),
        "",
        *[f"{v}\n" for v in verdicts],
        "## Machine",
        "",
    ]
    md += [f"- {k}: {v}" for k, v in facts.items()]
    md += ["", "## Notes", ""]
    md += [f"- **{s}**: {n}" for s in systems for n in notes.get(s, [])]
    if has_chart:
        md += ["", f"Chart: `{png.name}` (not committed; re-run to regenerate)."]
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print(f"\nwrote {out / (stem + '.md')}, {stem}.csv" + (f", {stem}.png" if has_chart else ""))


def machine_facts(workdir: Path, versions: dict[str, str]) -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mounts = [ln.split() for ln in Path("/proc/mounts").read_text().splitlines()]
    fs = max((m for m in mounts if str(workdir).startswith(m[1])), key=lambda m: len(m[1]))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    facts = {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem:.1f} GiB",
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "load average at start (1/5/15 min)": "/".join(f"{x:.2f}" for x in os.getloadavg()),
        "data filesystem": f"{fs[2]} ({fs[0]} on {fs[1]})",
    }
    facts.update({f"{k} version": v for k, v in versions.items()})
    return facts
