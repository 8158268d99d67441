"""The web console's files and JSON API (server/console.py, server/console_api.py) on a real server.

A :class:`ServerThread` with its HTTP port on 127.0.0.1; requests through
``http.client``; the answers compared with what the binary protocol's client
gets for the same operation (plot, query, aggregate, last, tag search), since
the console must have no query path of its own.
"""

from __future__ import annotations

import gzip
import http.client
import json
import tomllib
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import plotly
import pytest

from xtsdb.client import connect
from xtsdb.server.app import ServerThread
from xtsdb.server.console_api import MAX_SPAN_US, MAX_TAGS, YEAR_US

T0 = 1_700_000_000_000_000  # µs
SEC = 1_000_000
N = 5000
READ = "read-secret-0123456789abcdef"
WRITE = "write-secret-0123456789abcdef"
XSS_NAME = '<img src=x onerror="window.xss=1">'
XSS_DESC = "<script>window.xss=2</script>"


def get(port: int, path: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers={k.replace("_", "-"): v for k, v in headers.items()})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def api(port: int, route: str, params: dict[str, Any], **headers: str) -> tuple[int, Any]:
    qs = urllib.parse.urlencode(
        {k: json.dumps(v) if isinstance(v, list) else v for k, v in params.items()}
    )
    status, body, hdrs = get(port, f"/api/console/{route}?{qs}", **headers)
    assert hdrs["Content-Type"] == "application/json"
    if status != 401:  # refused by the HTTP port's check, before the console's route
        assert hdrs["Cache-Control"] == "no-store"
    return status, json.loads(body)


def fill(srv: ServerThread, token: str = "") -> None:
    ts = T0 + np.arange(N, dtype=np.int64) * SEC
    q = np.full(N, 192, np.uint8)
    q[1000:1010] = 0
    values = np.sin(np.arange(N) / 50.0)
    values[2000] = np.nan
    url = srv.url.replace("xtsdb://", f"xtsdb://:{token}@") if token else srv.url
    with connect(url) as db:
        db.create_tag("boiler.temp", unit="degC", description="outlet temperature")
        db.create_tag("boiler.pressure", unit="bar", description="drum")
        db.create_tag(XSS_NAME, unit="m", description=XSS_DESC)
        db.write("boiler.temp", ts, values, q)
        db.write("boiler.pressure", ts, np.cos(np.arange(N) / 70.0))


@pytest.fixture
def srv(server_factory: Callable[..., ServerThread]) -> ServerThread:
    server = server_factory(http_port=0)
    fill(server)
    return server


def test_page_and_files_with_types_caching_and_csp(srv: ServerThread) -> None:
    status, body, headers = get(srv.http_port, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp and "'unsafe-eval'" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-cache"
    plotly_path = f"/console/plotly-{plotly.__version__}.min.js"
    assert plotly_path.encode() in body and b"http" not in body.lower().replace(b"http-equiv", b"")
    for name, ctype in (("style.css", "text/css"), ("trend.js", "text/javascript")):
        status, _, headers = get(srv.http_port, f"/console/{name}")
        assert status == 200 and headers["Content-Type"].startswith(ctype), name
    # plotly from the installed package, byte for byte; versioned, so cached for good
    status, body, headers = get(srv.http_port, plotly_path)
    installed = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert status == 200 and body == installed.read_bytes()
    assert "immutable" in headers["Cache-Control"] and "Content-Encoding" not in headers
    status, zipped, headers = get(srv.http_port, plotly_path, Accept_Encoding="gzip, br")
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(zipped) == body
    assert len(zipped) < len(body) / 2
    assert get(srv.http_port, "/console/nothing.js")[0] == 404


def test_plot_is_the_plot_op(srv: ServerThread) -> None:
    start, end = T0 + 123 * SEC, T0 + 4321 * SEC
    status, got = api(
        srv.http_port,
        "plot",
        {"tags": ["boiler.temp", "boiler.pressure"], "start": start, "end": end, "width": 300},
    )
    assert status == 200, got
    with connect(srv.url) as db:
        for series, unit in zip(got["series"], ("degC", "bar"), strict=True):
            want = db.plot(series["tag"], start, end, 300)
            assert series["unit"] == unit
            assert series["ts"] == want.timestamps.tolist()
            vals = [None if np.isnan(v) else v for v in want.values.tolist()]
            assert series["values"] == vals and series["q"] == want.qualities.tolist()
            assert 0 < len(series["ts"]) <= 4 * 300


def test_query_aggregate_last_and_tag_search(srv: ServerThread) -> None:
    port = srv.http_port
    status, got = api(port, "query", {"tags": ["boiler.temp"], "start": T0, "end": T0 + N * SEC})
    assert status == 200
    [series] = got["series"]
    assert len(series["ts"]) == N and series["values"][2000] is None and series["q"][1005] == 0
    status, got = api(
        port, "query", {"tags": ["boiler.temp"], "start": T0, "end": T0 + N * SEC, "limit": 10}
    )
    assert got["series"][0]["more"] is True and len(got["series"][0]["ts"]) == 10
    params = {"tags": ["boiler.temp"], "start": T0, "end": T0 + N * SEC, "interval": 1000 * SEC}
    status, got = api(port, "aggregate", {**params, "aggregates": "count,max"})
    assert status == 200
    with connect(srv.url) as db:
        want = db.aggregate("boiler.temp", T0, T0 + N * SEC, 1000 * SEC, ["count", "max"])
        assert got["series"][0]["values"]["count"] == want.values["count"].tolist()
        assert got["series"][0]["values"]["max"] == want.values["max"].tolist()
    status, got = api(port, "last", {"tags": ["boiler.pressure", XSS_NAME]})
    assert status == 200
    assert got["last"][0]["point"]["ts"] == T0 + (N - 1) * SEC
    assert got["last"][1] == {"tag": XSS_NAME, "point": None}
    status, got = api(port, "tags", {"q": "BOILER", "limit": 1})
    assert status == 200 and got["more"] is True
    assert [t["name"] for t in got["tags"]] == ["boiler.pressure"]
    status, got = api(port, "tags", {"q": "boiler", "limit": 1, "after": "boiler.pressure"})
    assert [t["name"] for t in got["tags"]] == ["boiler.temp"] and got["more"] is False
    assert got["tags"][0]["last"] == {
        "ts": T0 + (N - 1) * SEC,
        "value": got["tags"][0]["last"]["value"],
        "q": 192,
    }
    status, got = api(port, "tags", {"q": "SCRIPT"})  # a description matches too
    assert [t["description"] for t in got["tags"]] == [XSS_DESC]
    status, got = api(port, "stats", {})
    assert status == 200 and got["engine"]["points_written"] == 2 * N


BAD = [  # (route, params, status, words in the error)
    ("plot", {"tags": ["nope"], "start": T0, "end": T0 + SEC}, 404, "nope"),
    ("plot", {"tags": ["boiler.temp"], "start": T0 + SEC, "end": T0}, 400, "before 'end'"),
    ("plot", {"tags": ["boiler.temp"], "start": T0, "end": T0}, 400, "before 'end'"),
    ("plot", {"tags": ["boiler.temp"], "start": -SEC, "end": T0}, 400, "before 1970"),
    ("plot", {"tags": ["boiler.temp"], "start": 0, "end": 10_000 * YEAR_US}, 400, "after the year"),
    ("plot", {"tags": ["boiler.temp"], "start": 0, "end": MAX_SPAN_US + 1}, 400, "years"),
    ("plot", {"tags": ["boiler.temp"], "start": "x", "end": T0}, 400, "integer"),
    ("plot", {"tags": ["boiler.temp"], "start": T0, "end": T0 + SEC, "width": 0}, 400, "width"),
    (
        "plot",
        {"tags": [f"t{i}" for i in range(100)], "start": T0, "end": T0 + SEC},
        400,
        "at most",
    ),
    ("plot", {"tags": [], "start": T0, "end": T0 + SEC}, 400, "no tag"),
    ("plot", {"tags": "boiler.temp", "start": T0, "end": T0 + SEC}, 400, "JSON array"),
    ("plot", {"start": T0, "end": T0 + SEC}, 400, "JSON array"),
    (
        "query",
        {"tags": ["boiler.temp"], "start": T0, "end": T0 + SEC, "limit": 10**6},
        400,
        "limit",
    ),
    (
        "aggregate",
        {"tags": ["boiler.temp"], "start": T0, "end": T0 + YEAR_US, "interval": SEC},
        400,
        "buckets",
    ),
    (
        "aggregate",
        {
            "tags": ["boiler.temp"],
            "start": T0,
            "end": T0 + SEC,
            "interval": SEC,
            "aggregates": "median",
        },
        400,
        "unknown",
    ),
    ("last", {"tags": ["boiler.temp", "nope"]}, 404, "nope"),
]


@pytest.mark.parametrize(("route", "params", "status", "words"), BAD)
def test_bad_input_is_refused_clearly(
    srv: ServerThread, route: str, params: dict[str, Any], status: int, words: str
) -> None:
    got_status, got = api(srv.http_port, route, params)
    assert got_status == status and words in got["error"], got
    # the server is unaffected: the next request is answered
    assert api(srv.http_port, "last", {"tags": ["boiler.temp"]})[0] == 200


def test_a_huge_tag_list_is_refused_before_any_lookup(srv: ServerThread) -> None:
    names = [f"no.such.tag.{i}" for i in range(MAX_TAGS + 1)]
    status, got = api(srv.http_port, "plot", {"tags": names, "start": T0, "end": T0 + SEC})
    assert status == 400 and f"at most {MAX_TAGS}" in got["error"]
    # 5,000 names do not even fit in a request head: the HTTP layer refuses them
    names = [f"tag.{i}" for i in range(5000)]
    qs = urllib.parse.urlencode({"tags": json.dumps(names), "start": T0, "end": T0 + SEC})
    status, body, _ = get(srv.http_port, f"/api/console/plot?{qs}")
    assert status == 400 and "head larger" in json.loads(body)["error"]
    assert api(srv.http_port, "last", {"tags": ["boiler.temp"]})[0] == 200


def test_tokens_as_for_query(server_factory: Callable[..., ServerThread]) -> None:
    server = server_factory(http_port=0, tokens=(f"read:{READ}", f"write:{WRITE}"))
    fill(server, WRITE)
    port = server.http_port
    assert get(port, "/")[0] == 200  # the page holds no data: it asks for the token
    params = {"tags": ["boiler.temp"], "start": T0, "end": T0 + N * SEC, "width": 10}
    for route, p in (
        ("plot", params),
        ("tags", {}),
        ("stats", {}),
        ("last", {"tags": ["boiler.temp"]}),
    ):
        assert api(port, route, p)[0] == 401, route
        assert api(port, route, p, Authorization="Bearer wrong-0123456789abcdef")[0] == 401
        assert api(port, route, p, Authorization=f"Bearer {READ}")[0] == 200, route


def test_every_static_file_is_package_data() -> None:
    """The wheel carries the console: pyproject's glob covers every file (no subfolders)."""
    root = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["xtsdb.server"]
    assert "console_static/*" in globs
    files = list((root / "server" / "console_static").iterdir())
    assert files and all(f.is_file() for f in files)
    assert {f.name for f in files} >= {"index.html", "style.css", "api.js", "trend.js"}
