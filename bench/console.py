"""Web console benchmark: open a trend of one year of 1 s data in a real browser.

    python -m bench.console [--quick] [--reps 7] [--out bench/results/console.txt]

A data directory is filled in process (one tag, a year of 1 s points ending
now: 31.5 M points; ``--quick``: a twentieth of a year), sealed, and served by
a real ``xtsdb-server`` child process with its HTTP port. Headless chromium
(Selenium, Debian's ``chromium`` and ``chromium-driver``) then opens
``/#trend?tags=[...]&span=1y`` afresh ``--reps`` times; the page measures
itself with ``performance.measure``: ``xtsdb-trend-request`` (the plot
request sent until its JSON is parsed) and ``xtsdb-trend-drawn`` (the request
sent until Plotly has rendered and the next animation frame came). Beside it,
the same plot request from Python (``urllib``, no browser), for a year and,
as the same-run baseline, for the last hour of the same tag: plot mode
should make the year cost about what the hour costs. Then, in process on the
same data, ``Engine.plot`` of the year from block summaries against the same
call with every block decoded (``summary_plot.mode(False)``, the code path
before summaries answered plot mode).

Tag search: a catalog of 100,000 tags (``--tags``), a person typing
``pump.12`` one key at a time; each keystroke's first page (50 tags) through
the name index against the former scan (every tag sorted and casefolded per
request, kept below as ``scan_search``), same run, same catalog.

Targets (issue 15): drawn within 300 ms of the request, the request under
100 ms. The machine's load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from bench._util import Row, check, table
from xtsdb.server.engine import Engine, EngineConfig, summary_plot
from xtsdb.server.engine.catalog import Catalog, TagInfo
from xtsdb.server.process import ServerProcess, flags, free_port

SEC = 1_000_000
YEAR_S = 365 * 86_400
YEAR_MS = 31_556_952_000  # the console's "1 y" preset
TAG = "plant.flow"
WIDTH = 1370  # the chart's width in a 1400 px window


def fill(data: Path, seconds: int) -> int:
    """One tag of ``seconds`` 1 s points ending now, sealed; the last timestamp."""
    end = time.time_ns() // 1000 // SEC * SEC
    ts0 = end - (seconds - 1) * SEC
    rng = np.random.default_rng(15)
    with Engine.open(data, EngineConfig(max_memory_points=8_000_000)) as eng:
        tag = eng.create_tag(TAG, unit="m3/h", description="a year of 1 s data").id
        step = 1_000_000
        level = 50.0
        for lo in range(0, seconds, step):
            n = min(step, seconds - lo)
            walk = level + np.cumsum(rng.normal(0, 0.05, n))
            level = float(walk[-1])
            eng.write(tag, ts0 + (lo + np.arange(n, dtype=np.int64)) * SEC, np.round(walk, 3))
        eng.flush()
    return end


def api_ms(base: str, start_us: int, end_us: int, reps: int) -> list[float]:
    qs = urllib.parse.urlencode(
        {"tags": json.dumps([TAG]), "start": start_us, "end": end_us, "width": WIDTH}
    )
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{base}/api/console/plot?{qs}", timeout=60) as resp:
            body = json.loads(resp.read())
        out.append(1e3 * (time.perf_counter() - t0))
        assert body["series"][0]["ts"], "no points in the range"
    return out


def browser_ms(base: str, reps: int) -> tuple[list[float], list[float], int]:
    """(request ms, drawn ms) per fresh page load, and the points drawn."""
    from selenium import webdriver
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1400,1000")
    service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver")
    driver = webdriver.Chrome(service=service, options=opts)
    hash_ = "#trend?" + urllib.parse.urlencode({"tags": json.dumps([TAG]), "span": YEAR_MS})
    request, drawn, points = [], [], 0
    try:
        for _ in range(reps):
            driver.get("about:blank")
            driver.get(f"{base}/{hash_}")
            WebDriverWait(driver, 60, 0.05).until(
                lambda d: d.execute_script(
                    "return performance.getEntriesByName('xtsdb-trend-drawn').length > 0"
                )
            )
            got = driver.execute_script(
                "const m = (n) => performance.getEntriesByName(n)[0].duration;"
                "return [m('xtsdb-trend-request'), m('xtsdb-trend-drawn'),"
                " xc.trend.shown.series[0].ts.length,"
                " document.getElementById('message').textContent]"
            )
            assert not got[3], got[3]
            request.append(float(got[0]))
            drawn.append(float(got[1]))
            points = int(got[2])
    finally:
        driver.quit()
    return request, drawn, points


def engine_plot_ms(data: Path, end_us: int, reps: int) -> tuple[list[float], list[float], int]:
    """(from summaries, decoding every block) ms of Engine.plot of the year; blocks read."""
    with Engine.open(data) as eng:
        tag = eng.catalog.resolve(TAG)
        out: list[list[float]] = [[], []]
        blocks = 0
        for _ in range(reps + 1):  # the first of each: warm-up, dropped
            for k, enabled in enumerate((True, False)):
                with summary_plot.mode(enabled):
                    t0 = time.perf_counter()
                    p = eng.plot(tag, end_us - YEAR_MS * 1000, end_us, WIDTH)
                    out[k].append(1e3 * (time.perf_counter() - t0))
                if enabled:
                    blocks = p.stats.blocks_read
    return out[0][1:], out[1][1:], blocks


def scan_search(tags: list[TagInfo], text: str, limit: int) -> list[TagInfo]:
    """The former Catalog.search: every tag sorted and casefolded on each request."""
    needle = text.casefold()
    found = sorted(tags, key=lambda i: i.name)
    hits = [i for i in found if needle in i.name.casefold() or needle in i.description.casefold()]
    return hits[:limit]


def search_ms(work: Path, n_tags: int) -> tuple[list[float], list[float], float]:
    """Per keystroke of "pump.12": (index ms, scan ms), and the index build in ms."""
    kinds = ["pump", "valve", "tank", "boiler", "flow", "level"]
    cat = Catalog(work / "catalog.sqlite3", lambda: 0)
    try:
        items = [
            (f"{kinds[i % 6]}.{i}.pv", {"description": f"area {i % 97} {kinds[(i // 6) % 6]}"})
            for i in range(n_tags)
        ]
        for lo in range(0, n_tags, 10_000):
            cat.create_many(items[lo : lo + 10_000])
        tags = cat.all()
        t0 = time.perf_counter()
        cat.search("", 1)  # builds the index, once per change of the catalog
        build = 1e3 * (time.perf_counter() - t0)
        index, scan = [], []
        for k in range(1, len("pump.12") + 1):
            text = "pump.12"[:k]
            t0 = time.perf_counter()
            got, _ = cat.search(text, 50)
            index.append(1e3 * (time.perf_counter() - t0))
            t0 = time.perf_counter()
            want = scan_search(tags, text, 50)
            scan.append(1e3 * (time.perf_counter() - t0))
            assert [i.name for i in got] == [i.name for i in want], text
    finally:
        cat.close()
    return index, scan, build


SHOT_TAGS = (
    ("boiler.temp", "degC", 80.0),
    ("boiler.pressure", "bar", 5.0),
    ("feed.flow", "m3/h", 40.0),
)


def screenshot(out: Path) -> None:
    """The trend view of three tags (three units: three y-axes) over a day, as a PNG."""
    from selenium import webdriver
    from selenium.webdriver.support.ui import WebDriverWait

    day = 86_400
    end = time.time_ns() // 1000 // SEC * SEC
    ts = end - np.arange(day, 0, -1, dtype=np.int64) * SEC
    rng = np.random.default_rng(4)
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="xtsdb-shot-") as d:
        work = Path(d)
        with Engine.open(work / "data") as eng:
            for k, (name, unit, base) in enumerate(SHOT_TAGS):
                tag = eng.create_tag(name, unit=unit, description=f"{name} ({unit})").id
                wave = np.sin(np.arange(day) / (3000.0 + 1500 * k)) * base * 0.05
                v = np.round(base + wave + np.cumsum(rng.normal(0, base * 2e-4, day)), 3)
                q = np.full(day, 192, np.uint8)
                if k == 0:
                    q[40_000:40_600] = 0  # ten minutes of Bad quality: red crosses
                eng.write(tag, ts, v, q)
            eng.flush()
        http_port = free_port()
        args = flags(port=0, http_port=http_port, data_dir=work / "data", host="127.0.0.1")
        with ServerProcess(args, workdir=work) as srv:
            srv.wait_ready(120)
            opts = webdriver.ChromeOptions()
            opts.binary_location = "/usr/bin/chromium"
            for arg in (
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1400,900",
            ):
                opts.add_argument(arg)
            service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver")
            driver = webdriver.Chrome(service=service, options=opts)
            names = json.dumps([t[0] for t in SHOT_TAGS])
            qs = urllib.parse.urlencode({"tags": names, "span": day * 1000, "table": "agg"})
            try:
                driver.get(f"http://127.0.0.1:{http_port}/#trend?{qs}")
                WebDriverWait(driver, 60, 0.05).until(
                    lambda d: d.execute_script("return xc.trend.tableSeq > 0")
                )
                driver.save_screenshot(str(out))
            finally:
                driver.quit()
            srv.stop()


def fmt(ms: list[float]) -> str:
    d = 1 if max(ms) < 20 else 0  # small times: a decimal, so before/after ratios show
    return f"median {statistics.median(ms):.{d}f} ms (min {min(ms):.{d}f}, max {max(ms):.{d}f})"


def run(quick: bool, reps: int, n_tags: int) -> list[str]:
    seconds = YEAR_S // (20 if quick else 1)
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="xtsdb-console-") as d:
        work = Path(d)
        t0 = time.perf_counter()
        end_s = fill(work / "data", seconds)
        fill_s = time.perf_counter() - t0
        http_port = free_port()
        args = flags(port=0, http_port=http_port, data_dir=work / "data", host="127.0.0.1")
        with ServerProcess(args, workdir=work) as srv:
            srv.wait_ready(120)
            base = f"http://127.0.0.1:{http_port}"
            end_us = end_s + SEC
            year = api_ms(base, end_us - YEAR_MS * 1000, end_us, reps + 1)[1:]
            hour = api_ms(base, end_us - 3600 * SEC, end_us, reps + 1)[1:]
            request, drawn, points = browser_ms(base, reps)
            srv.stop()
        summ, decoded, blocks = engine_plot_ms(work / "data", end_us, reps)
        s_index, s_scan, s_build = search_ms(work, n_tags)
    rows = [
        check(
            "browser: year trend drawn after request", statistics.median(drawn), "ms", 300, False
        ),
        check("browser: its plot request", statistics.median(request), "ms", 100, False),
        Row(
            "browser: response to chart drawn",
            fmt([b - a for a, b in zip(request, drawn, strict=True)]),
        ),
        Row("browser: drawn, each load", fmt(drawn)),
        Row("browser: request, each load", fmt(request)),
        Row("python: plot request, 1 year", fmt(year)),
        Row("python: plot request, last hour (baseline)", fmt(hour)),
        Row("points drawn (plot mode, 1370 columns)", f"{points:,} of {seconds:,}"),
        Row("engine: year plot from summaries", f"{fmt(summ)}; {blocks} blocks decoded"),
        Row("engine: year plot decoding every block (before)", fmt(decoded)),
        Row(f"tag search over {n_tags:,} tags, per keystroke: index", fmt(s_index)),
        Row("tag search, per keystroke: former scan (before)", fmt(s_scan)),
        Row("tag search: index built (once per catalog change)", f"{s_build:.0f} ms"),
        Row("fill (in process, sealed)", f"{fill_s:.1f} s"),
    ]
    load = os.getloadavg()
    head = [
        f"# Web console: a {'twentieth of a ' if quick else ''}year of 1 s data in the browser",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {reps} fresh page loads, headless chromium.",
        "",
    ]
    return head + table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a twentieth of a year")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--tags", type=int, default=100_000, help="tags in the search catalog")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    parser.add_argument("--screenshot", type=Path, help="only save the trend view as this PNG")
    ns = parser.parse_args()
    if ns.screenshot is not None:
        screenshot(ns.screenshot)
        return
    lines = run(ns.quick, ns.reps, ns.tags)
    text = "\n".join(lines) + "\n"
    print(text)
    if ns.out is not None:
        with ns.out.open("a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
