"""The web console in a real browser: Debian's chromium, headless, driven by Selenium.

One server (a :class:`ServerThread`, HTTP port on 127.0.0.1) and one browser
for the module. Each test opens the console, acts as a person would (types,
clicks, drags on the chart) and waits on conditions in the page, never on
sleeps. The chart's input (Plotly's ``gd.data``) is compared with what
``/api/console/plot`` answers for the range shown. Each test checks that the
browser logged no error, and saves a screenshot and the page's log in its
``tmp_path`` when it fails.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import require_program, server_config

from xtsdb.client import connect
from xtsdb.server.app import ServerThread

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SEC = 1_000_000
N = 3600
XSS_NAME = '<img src=x onerror="window.xss=1">'
XSS_DESC = "<script>window.xss=2</script><b onmouseover=alert(1)>hover</b>"
READ = "read-secret-0123456789abcdef"
WRITE = "write-secret-0123456789abcdef"
WAIT = 20.0  # seconds for any one condition (a loaded shared machine)


def now_us() -> int:
    return time.time_ns() // 1000


def fill(srv: ServerThread, url: str) -> None:
    """An hour of 1 s points ending now, 10 of them Bad, on two units; a hostile tag."""
    ts = now_us() - np.arange(N, 0, -1, dtype=np.int64) * SEC
    q = np.full(N, 192, np.uint8)
    q[1000:1010] = 0
    with connect(url) as db:
        db.create_tag("boiler.temp", unit="degC", description="outlet temperature")
        db.create_tag("boiler.pressure", unit="bar", description="drum pressure")
        db.create_tag(XSS_NAME, unit="m", description=XSS_DESC)
        db.write("boiler.temp", ts, 80 + np.sin(np.arange(N) / 100.0), q)
        db.write("boiler.pressure", ts, 5 + np.cos(np.arange(N) / 300.0))
        db.write(XSS_NAME, ts[-5:], np.arange(5.0))


@pytest.fixture(scope="module")
def browser_paths() -> tuple[str, str]:
    return require_program("chromium", "chromium"), require_program(
        "chromedriver", "chromium-driver"
    )


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    server = ServerThread(server_config(tmp_path_factory.mktemp("console") / "data")).start()
    try:
        fill(server, server.url)
        yield server
    finally:
        server.stop()


def make_driver(paths: tuple[str, str], downloads: Path) -> WebDriver:
    opts = webdriver.ChromeOptions()
    opts.binary_location = paths[0]
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-extensions",
    ):
        opts.add_argument(arg)
    opts.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=paths[1])
    driver = webdriver.Chrome(service=service, options=opts)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    return driver


@pytest.fixture(scope="module")
def driver(
    browser_paths: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebDriver]:
    d = make_driver(browser_paths, tmp_path_factory.mktemp("downloads"))
    try:
        yield d
    finally:
        d.quit()


class Page:
    """The console in the browser, with the checks every test makes."""

    def __init__(self, driver: WebDriver, port: int, shots: Path) -> None:
        self.d = driver
        self.base = f"http://127.0.0.1:{port}"
        self.port = port
        self.shots = shots

    def open(self, hash_: str = "") -> None:
        self.d.get("about:blank")
        self.d.get_log("browser")  # drop what earlier tests left
        self.d.get(f"{self.base}/{hash_}")
        self.until(lambda: self.js("return typeof xc === 'object' && xc.view !== null"))

    def js(self, script: str, *args: Any) -> Any:
        return self.d.execute_script(script, *args)

    def until(self, cond: Callable[[], Any], what: str = "condition") -> Any:
        return WebDriverWait(self.d, WAIT, poll_frequency=0.05).until(
            lambda _: cond(), message=what
        )

    def errors(self, allowed: tuple[str, ...] = ()) -> list[str]:
        logs = self.d.get_log("browser")
        bad = [e["message"] for e in logs if e["level"] in ("SEVERE", "ERROR")]
        return [m for m in bad if not any(a in m for a in allowed)]

    def shown(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.js("return xc.trend.shown")
        return answer

    def wait_drawn(self, after: int = -1) -> dict[str, Any]:
        """The next plot answer drawn (a ``seq`` greater than ``after``)."""
        self.until(
            lambda: self.js(
                "return xc.trend.shown !== null && xc.trend.drawnSeq > arguments[0]", after
            ),
            "a chart drawn",
        )
        return self.shown()

    def plot_api(self, shown: dict[str, Any]) -> dict[str, Any]:
        tags = [s["tag"] for s in shown["series"]]
        qs = urllib.parse.urlencode(
            {
                "tags": json.dumps(tags),
                "start": shown["start"],
                "end": shown["end"],
                "width": shown["width"],
            }
        )
        with urllib.request.urlopen(f"{self.base}/api/console/plot?{qs}", timeout=20) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
        return answer

    def check_chart_matches_api(self) -> dict[str, Any]:
        """The chart was given exactly the plot answer for the range it shows."""
        shown = self.shown()
        api = self.plot_api(shown)
        assert api["series"] == shown["series"]
        traces = self.js(
            "return document.getElementById('chart').data"
            ".filter(t => t.mode === 'lines').map(t => ({name: t.name, x: t.x, y: t.y}))"
        )
        assert [t["name"] for t in traces] == [s["tag"] for s in api["series"]]
        for trace, series in zip(traces, api["series"], strict=True):
            assert trace["x"] == [t / 1000 for t in series["ts"]]
            assert trace["y"] == series["values"]
        return api


@pytest.fixture
def page(driver: WebDriver, srv: ServerThread, tmp_path: Path) -> Page:
    return Page(driver, srv.http_port, tmp_path)


@contextlib.contextmanager
def screenshot_on_failure(page: Page) -> Iterator[None]:
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            page.d.save_screenshot(str(page.shots / "failure.png"))
            (page.shots / "browser-log.json").write_text(json.dumps(page.d.get_log("browser")))
            print(f"screenshot and browser log in {page.shots}")
        raise


def test_search_open_trend_zoom_and_share(page: Page) -> None:
    with screenshot_on_failure(page):
        page.open()
        page.d.find_element(By.ID, "tag-search").send_keys("BOIL")
        rows = (
            "return [...document.querySelectorAll('#tag-table tbody tr')].map(r => r.dataset.name)"
        )
        page.until(lambda: page.js(rows) == ["boiler.pressure", "boiler.temp"], "search results")
        for name in ("boiler.pressure", "boiler.temp"):
            page.d.find_element(By.CSS_SELECTOR, f"tr[data-name='{name}'] input").click()
        page.d.find_element(By.ID, "trend-selected").click()
        first = page.wait_drawn()
        api = page.check_chart_matches_api()
        assert [s["unit"] for s in api["series"]] == ["bar", "degC"]
        # one y-axis per unit, and the Bad points marked
        layout = page.js(
            "return Object.keys(document.getElementById('chart').layout)"
            ".filter(k => k.startsWith('yaxis'))"
        )
        assert sorted(layout) == ["yaxis", "yaxis2"]
        bad = page.js(
            "return document.getElementById('chart').data"
            ".filter(t => t.mode === 'markers').map(t => [t.name, t.x])"
        )
        temp = api["series"][1]
        want = [t / 1000 for t, q in zip(temp["ts"], temp["q"], strict=True) if q < 192]
        assert bad == [["boiler.temp (not good)", want]] and want
        # zoom by dragging across the middle third of the chart
        seq = page.js("return xc.trend.drawnSeq")
        drag = page.d.find_element(By.CSS_SELECTOR, "#chart .nsewdrag")
        w = drag.size["width"]
        ActionChains(page.d).move_to_element_with_offset(
            drag, -w // 6, 0
        ).click_and_hold().move_by_offset(w // 3, 0).release().perform()
        zoomed = page.wait_drawn(seq)
        span = zoomed["end"] - zoomed["start"]
        assert zoomed["start"] > first["start"] and zoomed["end"] < first["end"]
        assert 0.2 < span / (first["end"] - first["start"]) < 0.5
        page.check_chart_matches_api()
        # the mouse wheel zooms too (out, here)
        seq = page.js("return xc.trend.drawnSeq")
        ActionChains(page.d).scroll_from_origin(ScrollOrigin.from_element(drag), 0, 400).perform()
        wheeled = page.wait_drawn(seq)
        assert wheeled["end"] - wheeled["start"] > span
        page.check_chart_matches_api()
        # the URL opens the same view
        url = page.d.current_url
        assert "tags=" in url and "span=" in url and "end=" in url
        page.open(url[len(page.base) + 1 :])
        again = page.wait_drawn()
        assert (again["start"], again["end"]) == (wheeled["start"], wheeled["end"])
        assert [s["tag"] for s in again["series"]] == ["boiler.pressure", "boiler.temp"]
        assert page.errors() == []


def open_trend(page: Page, tags: list[str], **params: str) -> dict[str, Any]:
    qs = urllib.parse.urlencode({"tags": json.dumps(tags), **params})
    page.open(f"#trend?{qs}")
    return page.wait_drawn()


def test_live_mode_picks_up_a_new_point(page: Page, srv: ServerThread) -> None:
    with screenshot_on_failure(page):
        open_trend(page, ["boiler.temp"], span="900000", live="1")
        began = time.monotonic()
        t = now_us()
        with connect(srv.url) as db:
            db.write("boiler.temp", [t], [123.5])
        last = (
            "const s = xc.trend.shown.series[0];"
            "return [s.ts[s.ts.length - 1], s.values[s.values.length - 1]]"
        )
        page.until(lambda: page.js(last) == [t, 123.5], "the new point drawn")
        elapsed = time.monotonic() - began
        page.check_chart_matches_api()
        # at most one plot request a second (+1: the first, when the view opened)
        n = page.js(
            "return performance.getEntriesByType('resource')"
            ".filter(e => e.name.includes('/api/console/plot')).length"
        )
        total = time.monotonic() - began + 2  # the first request came before `began`
        assert 1 <= n <= total + 1, (n, elapsed)
        page.d.find_element(By.ID, "live").click()  # off: the polling stops
        assert page.errors() == []


def download_csv(page: Page, driver: WebDriver) -> list[list[str]]:
    """Click "Download CSV"; the rows of the file the browser saved."""
    folder = page.shots / "dl"
    folder.mkdir()
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)}
    )
    page.d.find_element(By.ID, "csv").click()
    done = folder / "xtsdb-trend.csv"
    page.until(lambda: done.exists() and done.stat().st_size > 0, "the CSV downloaded")
    return list(csv.reader(io.StringIO(done.read_text())))


def test_csv_download_is_what_is_shown(page: Page, driver: WebDriver) -> None:
    with screenshot_on_failure(page):
        shown = open_trend(page, ["boiler.temp", "boiler.pressure"], span="3600000")
        rows = download_csv(page, driver)
        assert rows[0] == ["tag", "time_utc", "timestamp_us", "value", "quality"]
        want = [
            (s["tag"], ts, v, q)
            for s in page.plot_api(shown)["series"]
            for ts, v, q in zip(s["ts"], s["values"], s["q"], strict=True)
        ]
        assert len(rows) - 1 == len(want) > 0
        for row, (tag, ts, v, q) in zip(rows[1:], want, strict=True):
            assert row[0] == tag and int(row[2]) == ts and int(row[4]) == q
            assert (row[3] == "") if v is None else float(row[3]) == v
            assert (
                row[1]
                == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts // SEC))
                + f".{ts // 1000 % 1000:03d}Z"
            )
        note = page.js("return document.getElementById('table-note').textContent")
        assert note.startswith(f"{len(want)} points drawn")
        assert page.errors() == []


def test_hostile_names_and_descriptions_render_as_text(page: Page) -> None:
    with screenshot_on_failure(page):
        page.open("#tags?q=onerror")
        cells = (
            "const r = document.querySelector('#tag-table tbody tr');"
            "return r && [r.cells[1].textContent, r.cells[3].textContent]"
        )
        page.until(lambda: page.js(cells) is not None, "the hostile tag listed")
        assert page.js(cells) == [XSS_NAME, XSS_DESC]
        page.open("#tags?q=script")
        page.until(lambda: page.js(cells) == [XSS_NAME, XSS_DESC], "found by its description")
        assert (
            page.js(
                "return document.querySelectorAll("
                "'#tag-table img, #tag-table script, #tag-table b').length"
            )
            == 0
        )
        page.d.find_element(By.CSS_SELECTOR, "#tag-table tbody tr a").click()
        shown = page.wait_drawn()
        assert [s["tag"] for s in shown["series"]] == [XSS_NAME]
        chip = page.js("return document.querySelector('#trend-tags .chip').firstChild.textContent")
        assert chip == XSS_NAME
        assert (
            page.js("return document.querySelectorAll('#trend-tags img, #points-table img').length")
            == 0
        )
        assert page.js("return [window.xss, document.querySelectorAll('img[src=x]').length]") == [
            None,
            0,
        ]
        assert page.errors() == []


def test_bad_input_gives_a_message_and_the_server_carries_on(page: Page) -> None:
    with screenshot_on_failure(page):
        page.open("#trend?" + urllib.parse.urlencode({"tags": json.dumps(["no.such.tag"])}))
        message = "return document.getElementById('message').textContent"
        page.until(lambda: "no tag named 'no.such.tag'" in page.js(message), "unknown tag message")
        open_trend(page, ["boiler.temp"], span="3600000")
        for start, end, words in (
            ("2024-05-02T00:00:00", "2024-05-01T00:00:00", "before 'end'"),
            ("1969-12-31T00:00:00", "1970-01-02T00:00:00", "before 1970"),
            ("0001-01-01T00:00:00", "9999-01-01T00:00:00", "before 1970"),
            ("1970-01-02T00:00:00", "9999-01-01T00:00:00", "years"),
        ):
            page.js(
                "document.getElementById('range-from').value = arguments[0];"
                "document.getElementById('range-to').value = arguments[1];",
                start,
                end,
            )
            page.d.find_element(By.ID, "range-apply").click()
            page.until(lambda w=words: w in page.js(message), f"the message for {start}..{end}")
        seq = page.js("return xc.trend.drawnSeq")
        page.d.find_element(By.CSS_SELECTOR, "#presets button[data-last='15m']").click()
        shown = page.wait_drawn(seq)
        assert page.js(message) == "" and shown["end"] - shown["start"] == 900 * SEC
        # a good absolute range (UTC) is drawn as given
        start_s = now_us() // SEC - 1800
        iso = [time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) for t in (start_s, start_s + 600)]
        page.js(
            "document.getElementById('range-from').value = arguments[0];"
            "document.getElementById('range-to').value = arguments[1];",
            *iso,
        )
        seq = page.js("return xc.trend.drawnSeq")
        page.d.find_element(By.ID, "range-apply").click()
        shown = page.wait_drawn(seq)
        assert (shown["start"], shown["end"]) == (start_s * SEC, (start_s + 600) * SEC)
        page.check_chart_matches_api()
        assert page.errors(allowed=("/api/console/plot", "status of 400", "status of 404")) == []


def test_server_page_refreshes(page: Page, srv: ServerThread) -> None:
    with screenshot_on_failure(page):
        page.open("#server")
        written = (
            "const r = [...document.querySelectorAll('#stats-engine tr')]"
            ".find(r => r.cells[0].textContent === 'points_written');"
            "return r && Number(r.cells[1].textContent)"
        )
        page.until(lambda: page.js(written), "the stats shown")
        before = page.js(written)
        with connect(srv.url) as db:
            db.write("boiler.pressure", [now_us()], [1.0])
        page.until(lambda: page.js(written) == before + 1, "the stats refreshed")
        cards = page.js(
            "return [...document.querySelectorAll('#server-summary .card div:first-child')]"
            ".map(e => e.textContent)"
        )
        assert {"Ingest rate", "Points in memory", "WAL", "Blocks", "Disk (containers)"} <= set(
            cards
        )
        assert page.errors() == []


def test_a_token_is_asked_for_and_kept_for_the_session(
    browser_paths: tuple[str, str], tmp_path: Path
) -> None:
    server = ServerThread(
        server_config(tmp_path / "data", tokens=(f"read:{READ}", f"write:{WRITE}"))
    ).start()
    driver = make_driver(browser_paths, tmp_path)
    page = Page(driver, server.http_port, tmp_path)
    try:
        with screenshot_on_failure(page):
            fill(server, server.url.replace("xtsdb://", f"xtsdb://:{WRITE}@"))
            page.open("#tags?q=boiler")
            page.until(lambda: page.d.find_element(By.ID, "token-form").is_displayed(), "asked")
            page.d.find_element(By.ID, "token-input").send_keys(READ)
            page.d.find_element(By.CSS_SELECTOR, "#token-form button").click()
            rows = "return document.querySelectorAll('#tag-table tbody tr').length"
            page.until(lambda: page.js(rows) == 2, "the tags listed with the token")
            assert READ not in page.d.current_url
            assert page.js("return sessionStorage.getItem('xtsdb-console-token')") == READ
            assert page.js("return localStorage.length + document.cookie.length") == 0
            assert page.errors(allowed=("status of 401",)) == []
    finally:
        driver.quit()
        server.stop()
