"""The trend's table of aggregates per interval, in a real browser.

The table under the chart switches from the points drawn to min, max, avg and
count per interval, asked of ``/api/console/aggregate`` (the aggregate op)
over exactly the range the chart shows; the interval is chosen from the range
or by the user, is kept in the URL, and "Download CSV" gives exactly the rows
the table is built from. Uses the server, browser and page of
``test_console_browser``.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

import test_console_browser as tcb
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select
from test_console_browser import Page, download_csv, open_trend, screenshot_on_failure

# That module's fixtures (one server and one browser for this module too).
browser_paths, srv, driver, page = tcb.browser_paths, tcb.srv, tcb.driver, tcb.page

AGGS = ["min", "max", "avg", "count"]


def aggregate_api(page: Page, shown: dict[str, Any], interval: int) -> dict[str, Any]:
    qs = urllib.parse.urlencode(
        {
            "tags": json.dumps([s["tag"] for s in shown["series"]]),
            "start": shown["start"],
            "end": shown["end"],
            "interval": interval,
            "aggregates": ",".join(AGGS),
        }
    )
    with urllib.request.urlopen(f"{page.base}/api/console/aggregate?{qs}", timeout=20) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def wait_table(page: Page, after: int) -> dict[str, Any]:
    page.until(
        lambda: page.js(
            "return xc.trend.shownAgg !== null && xc.trend.tableSeq > arguments[0]", after
        ),
        "the aggregate table",
    )
    agg: dict[str, Any] = page.js("return xc.trend.shownAgg")
    return agg


def table_cells(page: Page) -> list[list[str]]:
    cells: list[list[str]] = page.js(
        "return [...document.querySelectorAll('#points-table tr')]"
        ".map(r => [...r.cells].map(c => c.textContent))"
    )
    return cells


def agg_rows(agg: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(tag, interval start, min, max, avg, count) per interval, as the table lists them."""
    return [
        (s["tag"], t, *(s["values"][a][k] for a in AGGS))
        for s in agg["series"]
        for k, t in enumerate(s["start"])
    ]


def test_aggregates_per_interval_table_and_csv(page: Page, driver: WebDriver) -> None:
    with screenshot_on_failure(page):
        shown = open_trend(page, ["boiler.temp", "boiler.pressure"], span="3600000")
        seq = page.js("return xc.trend.tableSeq")
        Select(page.d.find_element(By.ID, "table-mode")).select_by_value("agg")
        agg = wait_table(page, seq)
        shown = page.shown()
        # auto: the shortest nice interval giving at most 200 per tag (1 h -> 30 s)
        assert agg["interval"] == 30_000_000
        assert agg == aggregate_api(page, shown, 30_000_000)
        cells = table_cells(page)
        assert cells[0] == ["Tag", "Interval start (UTC)", "Min", "Max", "Avg", "Count"]
        want = agg_rows(agg)
        assert len(cells) - 1 == len(want) > 100
        for row, w in zip(cells[1:], want, strict=True):
            assert row[0] == w[0]
            assert [None if c == "" else float(c) for c in row[2:]] == list(w[2:])
        assert sum(int(r[5]) for r in cells[1:] if r[0] == "boiler.temp") > 3000

        # the user's interval, kept in the URL: a link opens the same table
        seq = page.js("return xc.trend.tableSeq")
        Select(page.d.find_element(By.ID, "table-interval")).select_by_value("300000000")
        agg = wait_table(page, seq)
        assert agg["interval"] == 300_000_000
        assert agg == aggregate_api(page, page.shown(), 300_000_000)
        url = page.d.current_url
        assert "table=agg" in url and "interval=300000000" in url

        # the CSV is what the table was built from
        rows = download_csv(page, driver)
        assert rows[0] == ["tag", "interval_start_utc", "interval_start_us", "interval_us", *AGGS]
        want = agg_rows(agg)
        assert len(rows) - 1 == len(want) > 0
        for row, w in zip(rows[1:], want, strict=True):
            assert row[0] == w[0] and int(row[2]) == w[1] and row[3] == "300000000"
            assert [None if c == "" else float(c) for c in row[4:]] == list(w[2:])
        page.open(url[len(page.base) + 1 :])
        again = wait_table(page, -1)
        assert again["interval"] == 300_000_000 and table_cells(page)[0][2] == "Min"
        assert page.errors() == []
