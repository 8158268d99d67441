"""A real Prometheus remote-writing into xtsdb, and another reading it back by remote read.

xtsdb runs as a child process with its own HTTP port; a page served here
exposes ``--series`` series (half counters, half gauges, new values every
scrape); Prometheus "writer" scrapes it every ``--interval`` seconds and
remote-writes to xtsdb with Prometheus' default queue settings. After
``--seconds`` of sending, it prints what Prometheus itself measured: samples
appended and sent per second, the lag of its queue (newest timestamp appended
minus newest sent), the mean duration of a remote-write request (xtsdb answers
once the batch is committed), failed and retried samples. Then a Prometheus
with only ``remote_read`` answers range queries over the window, timed against
the writer answering them from its own TSDB; both answers must be equal.
Nothing is asserted; the numbers go to ``bench/results/prom_e2e.txt`` by hand.

    .venv/bin/python -m bench.prom_e2e [--series 20000] [--seconds 30] [--interval 1] [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import math
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cramjam

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the Prometheus child helper the tests use
from prometheus import Prometheus, start  # noqa: E402

from xtsdb.protocol import prom_messages as pm  # noqa: E402
from xtsdb.server.process import ServerProcess, free_port  # noqa: E402

HOST = "127.0.0.1"
QUERIES = [
    "sum(bench_gauge)",
    "sum(rate(bench_total[10s]))",
    "max by (group) (bench_gauge)",
    "sum(count_over_time(bench_total[30s]))",
]


class Page(ThreadingHTTPServer):
    series = 0
    scrapes = 0

    def text(self) -> bytes:
        self.scrapes += 1
        n, half = self.scrapes, self.series // 2
        lines = [f'bench_total{{group="g{i % 20}",id="{i}"}} {n * (i + 1)}' for i in range(half)]
        lines += [
            f'bench_gauge{{group="g{i % 20}",id="{i}"}} {(n * i) % 97 / 7}' for i in range(half)
        ]
        return ("\n".join(lines) + "\n").encode()


class Handler(BaseHTTPRequestHandler):
    server: Page

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = self.server.text()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def timed(prom: Prometheus, q: str, start: float, end: float, reps: int = 3) -> tuple[float, Any]:
    times, answer = [], None
    for _ in range(reps):
        t = time.perf_counter()
        answer = prom.query_range(q, start, end)
        times.append(time.perf_counter() - t)
    return statistics.median(times), answer


def direct_read(http_port: int, name: str, start: float, end: float) -> tuple[float, int]:
    """One remote read of every ``name`` series straight from xtsdb, as Prometheus asks
    it (window plus its 5 min lookback): (seconds, samples)."""
    req = pm.ReadRequest(accepted_response_types=[pm.SAMPLES])
    q = req.queries.add(
        start_timestamp_ms=int((start - 300) * 1000), end_timestamp_ms=int(end * 1000)
    )
    q.matchers.add(type=pm.EQ, name="__name__", value=name)
    body = bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
    headers = {
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Read-Version": "0.1.0",
    }
    conn = http.client.HTTPConnection(HOST, http_port, timeout=120)
    t = time.perf_counter()
    conn.request("POST", "/api/v1/read", body, headers)
    answer = conn.getresponse().read()
    elapsed = time.perf_counter() - t
    conn.close()
    resp = pm.ReadResponse.FromString(bytes(cramjam.snappy.decompress_raw(answer)))
    return elapsed, sum(len(ts.samples) for ts in resp.results[0].timeseries)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--prometheus", default="/usr/bin/prometheus")
    ap.add_argument("--quick", action="store_true", help="2,000 series for 10 s")
    args = ap.parse_args()
    if args.quick:
        args.series, args.seconds = 2000, 10.0
    page = Page((HOST, 0), Handler)
    page.series = args.series
    threading.Thread(target=page.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="prom_e2e_") as d:
        tmp = Path(d)
        http_port = free_port()
        argv = ["--host", HOST, "--port", "0", "--data-dir", str(tmp / "db")]
        srv = ServerProcess([*argv, "--http-port", str(http_port)], workdir=tmp, new_session=True)
        started: list[Prometheus] = []
        try:
            srv.wait_ready(60)
            run(args, tmp, http_port, page, started)
        finally:
            for prom in started:
                prom.stop()
            srv.close()
            page.shutdown()


def run(
    args: argparse.Namespace, tmp: Path, http_port: int, page: Page, started: list[Prometheus]
) -> None:
    interval = f"{int(args.interval * 1000)}ms"
    writer = start(
        args.prometheus,
        tmp / "writer",
        f"""
global: {{scrape_interval: {interval}, scrape_timeout: {interval}}}
scrape_configs:
  - job_name: page
    static_configs: [{{targets: ["{HOST}:{page.server_address[1]}"]}}]
remote_write:
  - {{url: "http://{HOST}:{http_port}/api/v1/write", name: xtsdb}}
""",
    )
    started.append(writer)
    m = writer.metric
    sent = "prometheus_remote_storage_samples_total"
    deadline = time.monotonic() + 60
    while m(sent) == 0 and time.monotonic() < deadline:  # after its WAL replay (~5 s)
        time.sleep(0.2)
    t0, appended0, sent0 = (
        time.monotonic(),
        m("prometheus_tsdb_head_samples_appended_total"),
        m(sent),
    )
    window_start = math.floor(time.time())
    lags = []
    while time.monotonic() - t0 < args.seconds:
        time.sleep(1)
        lags.append(
            m("prometheus_remote_storage_highest_timestamp_in_seconds")
            - m("prometheus_remote_storage_queue_highest_sent_timestamp_seconds")
        )
    elapsed = time.monotonic() - t0
    appended = m("prometheus_tsdb_head_samples_appended_total") - appended0
    duration = "prometheus_remote_storage_sent_batch_duration_seconds"
    rows = [
        ("series", f"{args.series}"),
        ("scrape interval", f"{args.interval} s"),
        ("samples appended / s", f"{appended / elapsed:,.0f}"),
        ("samples sent / s", f"{(m(sent) - sent0) / elapsed:,.0f}"),
        ("queue lag, median / max", f"{statistics.median(lags):.0f} s / {max(lags):.0f} s"),
        (
            "remote-write request, mean",
            f"{m(duration + '_sum') / m(duration + '_count') * 1e3:.1f} ms",
        ),
        ("shards at the end", f"{m('prometheus_remote_storage_shards'):.0f}"),
        (
            "failed / retried samples",
            f"{m('prometheus_remote_storage_samples_failed_total'):.0f} / "
            f"{m('prometheus_remote_storage_samples_retried_total'):.0f}",
        ),
    ]
    # Let the queue catch up on the window before reading it back.
    end = math.floor(time.time()) - 2
    deadline = time.monotonic() + 60
    while (
        m("prometheus_remote_storage_queue_highest_sent_timestamp_seconds") < end + 1
        and time.monotonic() < deadline
    ):
        time.sleep(0.5)
    reader = start(
        args.prometheus,
        tmp / "reader",
        f"""
remote_read:
  - {{url: "http://{HOST}:{http_port}/api/v1/read", name: xtsdb, read_recent: true}}
""",
    )
    started.append(reader)
    for q in QUERIES:
        t_w, want = timed(writer, q, window_start, end)
        t_r, got = timed(reader, q, window_start, end)
        same = "equal" if got == want else "DIFFERENT"
        rows.append(
            (
                f"{q} ({end - window_start} s)",
                f"writer {t_w * 1e3:.0f} ms, reader {t_r * 1e3:.0f} ms, {same}",
            )
        )
    for name in ("bench_gauge", "bench_total"):
        t, n = direct_read(http_port, name, window_start, end)
        rows.append((f"remote read of {name} from xtsdb alone", f"{t * 1e3:.0f} ms, {n:,} samples"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
