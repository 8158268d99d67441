"""A real Prometheus stores into xtsdb's HTTP port; a second one, empty, reads it back.

One xtsdb (:class:`ServerThread`, ``http_port=0``, read and write tokens) and,
driven by the module fixture :func:`run`:

1. Prometheus "writer" scrapes xtsdb's ``/metrics`` (read token), itself, and a
   small page served here (job ``gone``, awkward label values) every second, and
   remote-writes to ``/api/v1/write`` twice: queue ``good`` with the write
   token, queue ``bad`` with the read token (must be refused, 403).
2. Once xtsdb has stored samples, the ``gone`` page stops answering: the writer
   writes a stale marker for each of its series.
3. The writer reloads a config without scrape jobs: it stops appending, so its
   data is final, and the test waits until its good queue has sent everything.

The tests then compare: the catalog with the writer's series (names as
docs/prometheus.md derives them), xtsdb's sample count with what the writer
sent, the stale markers' bits, and PromQL range queries asked of the writer and
of Prometheus "reader" (empty store, only ``remote_read``), which must answer
exactly alike. Every wait is bounded; Prometheus' remote write starts sending
only after it has replayed its WAL (about 5 s after start).
"""

from __future__ import annotations

import math
import re
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import require_program, server_config
from prometheus import Prometheus, start

from xtsdb.client import connect
from xtsdb.server.app import ServerThread
from xtsdb.server.process import free_port

READ = "read-secret-0123456789abcdef"
WRITE = "write-secret-0123456789abcdef"
STALE = 0x7FF0000000000002  # Prometheus' stale marker, a NaN with its own bits
QUEUE = "{batch_send_deadline: 100ms, max_samples_per_send: 500, max_shards: 1, min_backoff: 50ms, max_backoff: 200ms}"  # noqa: E501
GONE_SCRAPES = 3  # scrapes of the gone page stored before it stops answering


class _Gone(ThreadingHTTPServer):
    """The page of job ``gone``: a counter and a gauge with label values that need
    escaping in tag names (space, trailing backslash, ``=`` and comma)."""

    scrapes = 0


class _GoneHandler(BaseHTTPRequestHandler):
    server: _Gone

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.scrapes += 1
        n = self.server.scrapes
        body = (
            f'gone_total{{kind="a b",path="C:\\\\"}} {n * 3}\n'
            f'gone_gauge{{k="x=y,z"}} {n * 0.25 - 1}\n'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _writer_config(http_port: int, own_port: int, gone_port: int, scrape: bool) -> str:
    url = f"http://127.0.0.1:{http_port}/api/v1/write"
    jobs = f"""
scrape_configs:
  - job_name: xtsdb
    authorization: {{credentials: {READ}}}
    static_configs: [{{targets: ["127.0.0.1:{http_port}"]}}]
  - job_name: prometheus
    static_configs: [{{targets: ["127.0.0.1:{own_port}"]}}]
  - job_name: gone
    static_configs: [{{targets: ["127.0.0.1:{gone_port}"]}}]
"""
    return f"""
global: {{scrape_interval: 1s, scrape_timeout: 900ms}}
{jobs if scrape else ""}
remote_write:
  - {{url: "{url}", name: good, authorization: {{credentials: {WRITE}}}, queue_config: {QUEUE}}}
  - {{url: "{url}", name: bad, authorization: {{credentials: {READ}}}, queue_config: {QUEUE}}}
"""


def _reader_config(http_port: int) -> str:
    url = f"http://127.0.0.1:{http_port}/api/v1/read"
    # "wrong" is asked only by selectors with probe="unauthorized" (required_matchers)
    return f"""
remote_read:
  - {{url: "{url}", name: xtsdb, read_recent: true, authorization: {{credentials: {READ}}}}}
  - url: "{url}"
    name: wrong
    read_recent: true
    required_matchers: {{probe: unauthorized}}
    authorization: {{credentials: not-a-token}}
"""


@dataclass
class Run:
    srv: ServerThread
    writer: Prometheus
    reader: Prometheus
    start: float  # wall-clock seconds: the window the data covers
    end: float
    gone_port: int


def _until(what: str, check: Any, timeout: float, every: float = 0.2) -> Any:
    """``check()``'s first truthy answer, polled; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {got!r})")
        time.sleep(every)


def _written(srv: ServerThread) -> int:
    with connect(srv.url, token=READ) as db:
        return int(db.stats()["server"]["prom_samples_written"])


def _settled(writer: Prometheus, previous: list[float]) -> bool:
    """Nothing appended since the last call, and the good queue has sent it all."""
    m = writer.metric
    now = [
        m("prometheus_tsdb_head_samples_appended_total"),
        m("prometheus_remote_storage_samples_total", remote_name="good"),
    ]
    done = (
        m("prometheus_remote_storage_samples_pending", remote_name="good") == 0
        and m("prometheus_remote_storage_queue_highest_sent_timestamp_seconds", remote_name="good")
        >= m("prometheus_remote_storage_highest_timestamp_in_seconds")
        and now == previous
    )
    previous[:] = now
    return done


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    program = require_program("prometheus", "prometheus")
    tmp = tmp_path_factory.mktemp("prom_e2e")
    tokens = (f"read:{READ}", f"write:{WRITE}")
    gone = _Gone(("127.0.0.1", 0), _GoneHandler)
    threading.Thread(target=gone.serve_forever, daemon=True).start()
    gone_port = int(gone.server_address[1])
    started: list[Prometheus] = []
    with ServerThread(server_config(tmp / "db", http_port=0, tokens=tokens)) as srv:
        try:
            t0 = math.floor(time.time()) - 1
            own = free_port()
            config = _writer_config(srv.http_port, own, gone_port, scrape=True)
            writer = start(program, tmp / "writer", config, port=own)
            started.append(writer)
            _until("samples stored by remote write", lambda: _written(srv) > 0, 25)
            _until("gone scraped", lambda: gone.scrapes >= GONE_SCRAPES, 10)
            gone.shutdown()
            gone.server_close()  # scrapes now fail: stale markers for its series
            writer_up = 'up{job="gone"}'
            _until("gone down", lambda: _instant(writer, writer_up) == ["0"], 10)
            # Without scrape jobs the writer appends nothing more (Prometheus 2.42
            # writes no stale markers for the series of a job removed this way).
            writer.reload(_writer_config(srv.http_port, own, gone_port, scrape=False))
            previous: list[float] = []
            _until("good queue drained", lambda: _settled(writer, previous), 20, every=0.5)
            reader = start(program, tmp / "reader", _reader_config(srv.http_port))
            started.append(reader)
            yield Run(srv, writer, reader, t0, math.ceil(time.time()) + 2, gone_port)
        finally:
            for prom in reversed(started):
                prom.stop()
            gone.shutdown()  # returns at once if it is already shut down
            gone.server_close()


def _instant(prom: Prometheus, q: str) -> list[str]:
    return [s["value"][1] for s in prom.api("query", query=q)["data"]["result"]]


def _escape(text: str, special: str) -> str:
    """docs/prometheus.md's escapes: a backslash doubled before a backslash, comma,
    ``=`` or space and at the end of its part; then each special character escaped."""
    text = re.sub(r"\\(?=[\\,= ]|$)", r"\\\\", text)
    return re.sub(f"([{re.escape(special)}])", r"\\\1", text)


def tag_name(labels: dict[str, str]) -> str:
    """A series' tag name as docs/prometheus.md derives it (written from the doc, not
    the server's code): measurement = ``__name__``, labels sorted, empty ones left out."""
    keys = sorted((k for k in labels if k != "__name__" and labels[k]), key=str.encode)
    parts = [_escape(labels["__name__"], ", ")]
    parts += [f"{_escape(k, ',= ')}={_escape(labels[k], ',= ')}" for k in keys]
    return ",".join(parts) + ".value"


def test_tag_name_follows_the_documented_examples() -> None:
    assert tag_name({"__name__": "up", "job": "node", "instance": "h:9100"}) == (
        "up,instance=h:9100,job=node.value"
    )
    assert tag_name({"__name__": "http_requests_total", "path": "/a b"}) == (
        "http_requests_total,path=/a\\ b.value"
    )
    assert tag_name({"__name__": "x", "path": "C:\\", "e": ""}) == "x,path=C:\\\\.value"


def _catalog(srv: ServerThread) -> set[str]:
    with connect(srv.url, token=READ) as db:
        return {t.name for t in db.tags("*", limit=65536)}


def test_remote_write_stores_every_series_the_writer_scraped(run: Run) -> None:
    m = run.writer.metric
    for counter in ("failed", "retried", "dropped"):
        assert m(f"prometheus_remote_storage_samples_{counter}_total", remote_name="good") == 0
    sent = m("prometheus_remote_storage_samples_total", remote_name="good")
    assert sent == m("prometheus_tsdb_head_samples_appended_total") > 1000
    assert _written(run.srv) == sent  # each sample stored once, acknowledged once
    series = run.writer.api("series", **{"match[]": '{__name__=~".+"}'})["data"]
    names = _catalog(run.srv)
    assert names == {tag_name(s) for s in series}
    gone = f"instance=127.0.0.1:{run.gone_port},job=gone"
    assert {
        f"up,{gone}.value",
        f"gone_total,{gone},kind=a\\ b,path=C:\\\\.value",
        f"gone_gauge,{gone},k=x\\=y\\,z.value",
    } <= names
    # xtsdb's /metrics, scraped with the read token; Prometheus' own page
    assert {"xtsdb_points_written_total", "prometheus_build_info"} <= {
        s["__name__"] for s in series
    }


def test_a_read_token_is_refused_on_remote_write(run: Run) -> None:
    m = run.writer.metric
    sent = m("prometheus_remote_storage_samples_total", remote_name="bad")
    assert sent > 0
    assert m("prometheus_remote_storage_samples_failed_total", remote_name="bad") == sent
    refused = [line for line in run.writer.log_text().splitlines() if "remote_name=bad" in line]
    assert any("HTTP status 403 Forbidden" in line for line in refused), refused[-5:]
    assert "remote_name=good" not in "".join(
        line for line in run.writer.log_text().splitlines() if "level=error" in line
    )


def _bits(values: Any) -> list[int]:
    return [struct.unpack("<Q", struct.pack("<d", v))[0] for v in values.tolist()]


def test_stale_markers_are_stored_bit_exactly(run: Run) -> None:
    gone = {"instance": f"127.0.0.1:{run.gone_port}", "job": "gone"}
    with connect(run.srv.url, token=READ) as db:
        total = db.query(
            tag_name({"__name__": "gone_total", **gone, "kind": "a b", "path": "C:\\"}), 0, 1 << 62
        )
        up = db.query(tag_name({"__name__": "up", **gone}), 0, 1 << 62)
    # scraped n = 1, 2, ... (3 n), then one failed scrape: the stale marker
    *counts, stale = _bits(total.values)
    assert stale == STALE and len(counts) >= GONE_SCRAPES
    assert total.values[:-1].tolist() == [3.0 * n for n in range(1, len(counts) + 1)]
    assert (total.timestamps % 1000 == 0).all()  # milliseconds, stored as microseconds
    assert run.start * 1e6 <= total.timestamps[0] and (total.qualities >= 192).all()  # Good
    # up: 1 while it answered, then 0 (a failed scrape writes 0, not a stale marker)
    assert up.values[0] == 1.0 and up.values[-1] == 0.0
    assert STALE not in _bits(up.values)


# Asked of both Prometheus over the whole run, one-second steps.
QUERIES = [
    '{__name__=~".+"}',  # every series, raw
    '{job="gone"}',  # series that went stale mid-run
    "rate(xtsdb_points_written_total[5s])",
    "sum by (job) (scrape_samples_scraped)",
    "avg_over_time(scrape_duration_seconds[5s])",
    'up{job!="prometheus"}',
    '{job=~"xts.*|gone", __name__=~"up|gone_.*"}',
    'gone_gauge{k=~"x=.*"} * 2',
    'count by (job) ({job!="", __name__!~"go_.*|prometheus_.*"})',
    "histogram_quantile(0.9, sum by (le) "
    "(rate(prometheus_http_request_duration_seconds_bucket[5s])))",
]


@pytest.mark.parametrize("q", QUERIES)
def test_remote_read_answers_like_the_writer(run: Run, q: str) -> None:
    want = run.writer.query_range(q, run.start, run.end)
    got = run.reader.query_range(q, run.start, run.end)
    assert "warnings" not in got, got["warnings"]
    assert want["data"]["result"], "the writer has no answer: the comparison would be empty"
    assert got == want


def test_remote_read_returns_every_sample_of_the_writer(run: Run) -> None:
    """Raw samples (a range vector at one instant): every timestamp to the millisecond
    and every value, which one-second steps of a range query would not all show."""
    q = f'{{__name__=~".+"}}[{math.ceil(run.end - run.start) + 60}s]'
    want = run.writer.api("query", query=q, time=run.end)
    got = run.reader.api("query", query=q, time=run.end)
    for answer in (want, got):
        answer["data"]["result"].sort(key=lambda s: sorted(s["metric"].items()))
    assert sum(len(s["values"]) for s in want["data"]["result"]) > 1000
    assert got == want


def test_a_wrong_token_on_remote_read_is_refused(run: Run) -> None:
    # Prometheus answers with what its other remote read gave (nothing) and a warning
    got = run.reader.query_range('up{probe="unauthorized"}', run.start, run.end)
    assert got["data"]["result"] == []
    assert any("401" in w for w in got.get("warnings", [])), got
