"""A throwaway InfluxDB 1.x (``influxd``) on 127.0.0.1, the reference for line protocol.

:func:`start` runs ``influxd`` as a child process with a private config and
data directory: every listener on loopback at a free port, no reporting, no
self-monitoring, fsync per write: ``bench/influx_config.py``, the config
``bench/peers.py`` runs it with for the benchmark. :meth:`Influxd.stop` ends
it through its own pid.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` is a folder of scripts, importable from the root
    sys.path.insert(0, str(ROOT))
from bench.influx_config import HOST, influxd_config  # noqa: E402
from xtsdb.server.process import free_port  # noqa: E402


def ident(name: str) -> str:
    """An InfluxQL identifier, double-quoted."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Influxd:
    """A running ``influxd``; HTTP helpers for its 1.x API (one connection, reused)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        for attempt in (0, 1):  # one retry on a connection influxd closed while idle
            if self._conn is None:
                self._conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
            try:
                self._conn.request(method, path, body)
                resp = self._conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, ConnectionError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def query(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """The ``results`` of an InfluxQL query (times as integer nanoseconds)."""
        params = {"q": q, "epoch": "ns"}
        if db is not None:
            params["db"] = db
        status, body = self.request("POST", "/query?" + urllib.parse.urlencode(params))
        if status != 200:
            raise RuntimeError(f"influxd query {q!r}: {status} {body[:300]!r}")
        results: list[dict[str, Any]] = json.loads(body)["results"]
        for r in results:
            if "error" in r:
                raise RuntimeError(f"influxd query {q!r}: {r['error']}")
        return results

    def write(self, db: str, body: bytes, precision: str | None = None) -> tuple[int, str]:
        """POST ``body`` to ``/write``: (status, error text or '')."""
        params = {"db": db}
        if precision is not None:
            params["precision"] = precision
        status, answer = self.request("POST", "/write?" + urllib.parse.urlencode(params), body)
        if not answer:
            return status, ""
        return status, str(json.loads(answer).get("error", answer.decode(errors="replace")))

    def stored(self, db: str) -> list[tuple[str, dict[str, str], str, int, Any]]:
        """Every stored point of ``db``: (measurement, tags, field, time ns, value)."""
        out: list[tuple[str, dict[str, str], str, int, Any]] = []
        shown = self.query("SHOW MEASUREMENTS", db)[0].get("series", [])
        names = [row[0] for row in shown[0]["values"]] if shown else []
        # One measurement per SELECT: over several, InfluxQL returns a field name
        # that has different types in them with one of its types only.
        results = [r for m in names for r in self.query(f"SELECT * FROM {ident(m)} GROUP BY *", db)]
        for result in results:
            for s in result.get("series", []):
                tags = {k: v for k, v in (s.get("tags") or {}).items() if v != ""}
                cols = s["columns"]
                for row in s["values"]:
                    for col, v in zip(cols[1:], row[1:], strict=True):
                        if v is not None:
                            out.append((s["name"], tags, col, int(row[0]), v))
        return out

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start(program: str, workdir: Path, timeout: float = 60.0) -> Influxd:
    """Start ``program`` (the influxd path) with its data under ``workdir``; wait for /ping."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "influxdb.conf"
    conf.write_text(influxd_config(workdir / "data", free_port(), port))
    log = workdir / "influxd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [program, "-config", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            start_new_session=True,  # a Ctrl-C of the test run is ours to handle
        )
    server = Influxd(proc, port, log)
    end = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"influxd exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if server.request("GET", "/ping")[0] == 204:
                return server
        except OSError:
            pass
        if time.monotonic() > end:
            server.stop()
            raise TimeoutError(f"influxd not answering /ping on {HOST}:{port}")
        time.sleep(0.1)
