"""A real 3-server NATS cluster with JetStream on 127.0.0.1, for the cluster tests.

:class:`NatsCluster` runs ``nats-server`` (Debian's package) three times, each with
its own client, route and monitoring ports (free ports picked once, so a restart
reuses them) and its own ``--store_dir`` under a temp directory, and waits until
JetStream has elected a meta leader: before that, creating a stream fails.
Failures are injected per server and every process is ended by its own pid:
:meth:`kill` (SIGKILL), :meth:`restart` (same ports, same store dir),
:meth:`stop`/:meth:`cont` (SIGSTOP/SIGCONT, a server that hangs without dying).

Tests get one through the ``nats_cluster`` fixture (import it into the test
module: ``from nats_harness import nats_cluster_fixture  # noqa: F401``, which
pytest registers under the name ``nats_cluster``); a bench script
can use the class directly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from xtsdb.server.process import free_port

HOST = "127.0.0.1"
CLUSTER_NAME = "xtsdb-test"
START_ATTEMPTS = 3


@dataclass
class _Server:
    name: str
    client_port: int
    route_port: int
    http_port: int
    store_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None


class NatsCluster:
    """``size`` clustered ``nats-server`` processes with JetStream, under ``root``."""

    def __init__(self, root: Path, size: int = 3, program: str = "nats-server") -> None:
        self.program = program
        self.servers: list[_Server] = []
        # Free ports are picked before nats-server binds them, so another process on
        # the machine may take one in between: then start again on other ports.
        for attempt in range(START_ATTEMPTS):
            self.servers = []
            for i in range(size):
                d = root / f"try{attempt}" / f"nats{i}"
                d.mkdir(parents=True, exist_ok=True)
                ports = (free_port(HOST), free_port(HOST), free_port(HOST))
                self.servers.append(_Server(f"n{i}", *ports, d / "js", d / "log"))
            try:
                for i in range(size):
                    self._spawn(i)
                self.wait_ready()
                return
            except RuntimeError as exc:
                self.close()
                if "address already in use" not in str(exc) or attempt == START_ATTEMPTS - 1:
                    raise
            except BaseException:
                self.close()
                raise

    # -- addresses -----------------------------------------------------------------
    @property
    def urls(self) -> list[str]:
        return [f"nats://{HOST}:{s.client_port}" for s in self.servers]

    @property
    def url_arg(self) -> str:
        """The ``--cluster`` argument of an xtsdb node: every URL, comma-joined."""
        return ",".join(self.urls)

    def pid(self, i: int) -> int:
        proc = self.servers[i].proc
        assert proc is not None, f"server {i} is not running"
        return proc.pid

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.servers if s.proc is not None and s.proc.poll() is None]

    def log_text(self, i: int) -> str:
        return self.servers[i].log_path.read_text(errors="replace")

    # -- processes -----------------------------------------------------------------
    def _spawn(self, i: int) -> None:
        s = self.servers[i]
        routes = ",".join(
            f"nats-route://{HOST}:{o.route_port}" for j, o in enumerate(self.servers) if j != i
        )
        cmd = [self.program, "-a", HOST, "-p", str(s.client_port), "-m", str(s.http_port)]
        cmd += ["-n", s.name, "-js", "-sd", str(s.store_dir), "--cluster_name", CLUSTER_NAME]
        cmd += ["--cluster", f"nats://{HOST}:{s.route_port}", "--routes", routes]
        s.log = open(s.log_path, "ab")  # noqa: SIM115 - closed in _reap
        s.proc = subprocess.Popen(cmd, stdout=s.log, stderr=subprocess.STDOUT)

    def _reap(self, i: int) -> None:
        s = self.servers[i]
        if s.proc is not None:
            s.proc.wait(timeout=10)
            s.proc = None
        if s.log is not None:
            s.log.close()
            s.log = None

    def _signal(self, i: int, sig: int) -> None:
        os.kill(self.pid(i), sig)

    def kill(self, i: int) -> None:
        """SIGKILL server ``i`` (no shutdown, no flush) and reap it."""
        self._signal(i, signal.SIGKILL)
        self._reap(i)

    def restart(self, i: int, wait: bool = True) -> None:
        """Start server ``i`` again on the same ports and store dir (killing it first
        if it still runs); with ``wait``, until it is healthy with JetStream."""
        s = self.servers[i]
        if s.proc is not None:
            if s.proc.poll() is None:
                os.kill(s.proc.pid, signal.SIGCONT)  # a stopped process cannot die otherwise
            self.kill(i)
        self._spawn(i)
        if wait:
            self.wait_healthy(i)
            self.wait_ready()

    def stop(self, i: int) -> None:
        """SIGSTOP server ``i``: it keeps its sockets but answers nothing. Returns once the
        kernel shows it stopped: a signal is delivered, not obeyed, when kill() returns,
        and a loaded machine was seen answering a request in between."""
        self._signal(i, signal.SIGSTOP)
        stat = Path(f"/proc/{self.pid(i)}/stat")
        deadline = time.monotonic() + 10
        # The state is the field after the parenthesised command name.
        while stat.read_text().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server {i} did not stop within 10 s of SIGSTOP")
            time.sleep(0.01)

    def cont(self, i: int) -> None:
        self._signal(i, signal.SIGCONT)

    def close(self) -> None:
        """End every server, each by its own pid."""
        for i, s in enumerate(self.servers):
            if s.proc is not None and s.proc.poll() is None:
                os.kill(s.proc.pid, signal.SIGCONT)
                os.kill(s.proc.pid, signal.SIGKILL)
            self._reap(i)

    # -- readiness -----------------------------------------------------------------
    def monitor(self, i: int, path: str, timeout: float = 1.0) -> Any:
        """GET the monitoring endpoint ``path`` of server ``i`` as JSON."""
        url = f"http://{HOST}:{self.servers[i].http_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())

    def _poll(self, what: str, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for s in self.servers:
                if s.proc is not None and s.proc.poll() is not None:
                    tail = s.log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"nats-server {s.name} exited: {tail}")
            try:
                if check():
                    return
            except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
                last = exc
            time.sleep(0.05)
        raise TimeoutError(f"NATS cluster: {what} not reached in {timeout} s ({last!r})")

    def leader(self) -> str | None:
        """The JetStream meta leader's name as the running servers see it (all agree)."""
        seen = set()
        for i, s in enumerate(self.servers):
            if s.proc is None or s.proc.poll() is not None:
                continue
            meta = self.monitor(i, "/jsz").get("meta_cluster") or {}
            seen.add(meta.get("leader") or None)
        return seen.pop() if len(seen) == 1 else None

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until every running server sees the same JetStream meta leader."""
        self._poll("a JetStream meta leader", lambda: self.leader() is not None, timeout)

    def wait_healthy(self, i: int, timeout: float = 20.0) -> None:
        """Until server ``i`` reports itself healthy (JetStream current, caught up)."""

        def healthy() -> bool:
            try:
                return bool(self.monitor(i, "/healthz").get("status") == "ok")
            except urllib.error.HTTPError:
                return False  # 503 while JetStream catches up

        self._poll(f"server {i} healthy", healthy, timeout)


@pytest.fixture(name="nats_cluster")
def nats_cluster_fixture(tmp_path: Path) -> Iterator[NatsCluster]:
    """A started 3-server NATS cluster with JetStream, ended at teardown."""
    from conftest import require_program

    program = require_program("nats-server", "nats-server")
    cluster = NatsCluster(tmp_path / "nats", program=program)
    try:
        yield cluster
    finally:
        cluster.close()
