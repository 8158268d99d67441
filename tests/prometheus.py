"""A throwaway Prometheus (Debian's ``prometheus``) on 127.0.0.1, for end-to-end tests.

:func:`start` runs ``prometheus`` as a child process with the given YAML config
written into a private work directory, its TSDB under it, and its web listener on
a free loopback port; it waits for ``/-/ready``. :meth:`Prometheus.stop` ends it
through its own pid (SIGTERM: it flushes its remote-write queues, then SIGKILL
if it does not exit), as :class:`~xtsdb.server.process.ServerProcess` runs children. The HTTP
helpers read its API and its own ``/metrics``.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a test helper, from the repository root or tests/
    sys.path.insert(0, str(ROOT))
from xtsdb.server.process import ServerProcess, free_port  # noqa: E402

HOST = "127.0.0.1"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\d+)?$")


class Prometheus:
    """A running ``prometheus``: its API (range queries) and its own metrics page."""

    def __init__(self, child: ServerProcess, port: int) -> None:
        self.child = child
        self.port = port
        self.url = f"http://{HOST}:{port}"

    def get(self, path: str, timeout: float = 20.0) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            body: bytes = resp.read()
            return body

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        """A successful answer of ``/api/v1/<path>``: ``data``, and ``warnings`` if any."""
        query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
        try:
            body: dict[str, Any] = json.loads(self.get(f"/api/v1/{path}?{query}"))
        except urllib.error.HTTPError as exc:  # Prometheus says why in the body
            raise AssertionError(f"{path} {params}: {exc.code} {exc.read()[:500]!r}") from None
        assert body["status"] == "success", body
        return body

    def query_range(self, q: str, start: float, end: float, step: float = 1.0) -> dict[str, Any]:
        """``/api/v1/query_range``'s answer, its series sorted by labels."""
        body = self.api("query_range", query=q, start=start, end=end, step=step)
        body["data"]["result"].sort(key=lambda s: sorted(s["metric"].items()))
        return body

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples on Prometheus' own ``/metrics`` page whose labels
        include ``labels`` (0.0 when there is none): its figures now, not a scrape ago."""
        total = 0.0
        for line in self.get("/metrics").decode().splitlines():
            m = _SAMPLE.match(line)
            if m is None or m.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total

    def reload(self, config: str) -> None:
        """Replace the config and reload it; returns once Prometheus has applied it."""
        (self.child.log_file.parent / "prometheus.yml").write_text(config)
        req = urllib.request.Request(self.url + "/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200, resp.read()

    def log_text(self) -> str:
        return self.child.log()

    def stop(self) -> None:
        self.child.stop(30)


def start(
    program: str, workdir: Path, config: str, port: int | None = None, timeout: float = 60.0
) -> Prometheus:
    """Start ``program`` (the prometheus path) with ``config`` (YAML) and its data
    under ``workdir``, on ``port`` (a free one if None: a config that scrapes the
    Prometheus itself picks it first); wait until it says it is ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "prometheus.yml"
    conf.write_text(config)
    port = free_port(HOST) if port is None else port
    args = [
        f"--config.file={conf}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={HOST}:{port}",
        "--web.enable-lifecycle",  # POST /-/reload: a reload the caller can wait for
    ]
    # The xtsdb child-process wrapper runs it: log file, own session, stop by its pid.
    child = ServerProcess(
        args,
        workdir=workdir,
        name="prometheus",
        command=[program],
        ready_flag=False,
        new_session=True,  # a Ctrl-C of the test run is ours to handle
    )
    prom = Prometheus(child, port)
    end = time.monotonic() + timeout
    while True:
        if not child.running():
            raise RuntimeError(f"prometheus exited: {prom.log_text()[-2000:]}")
        try:
            prom.get("/-/ready", timeout=2)
            return prom
        except OSError:  # not listening yet, or 503 while it replays its WAL
            pass
        if time.monotonic() > end:
            prom.stop()
            raise TimeoutError(f"prometheus not ready on {prom.url}: {prom.log_text()[-2000:]}")
        time.sleep(0.1)
