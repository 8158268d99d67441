"""Lifecycle of the systems under test: InfluxDB 1.x, VictoriaMetrics and the xtsdb server.

Every system runs as a child process bound to 127.0.0.1 on a free port, with its
data in a private temporary directory and its output in a log file there. A
child is stopped through its own pid only: ``terminate()``, then ``kill()``
after a timeout. ``stop`` runs from ``finally`` blocks and, as a last resort,
from an ``atexit`` hook, so Ctrl-C or an exception never leaves a server behind.
Nothing is installed here: a missing binary yields the apt-get command to run.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import clients
from bench.influx_config import HOST, free_port, influxd_config

if TYPE_CHECKING:
    from xtsdb.server.process import ServerProcess

_LIVE: set[Managed] = set()


class Managed:
    """One child process with its log file; ``stop`` is idempotent."""

    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        # A session of its own: a Ctrl-C in the terminal reaches only us, and we
        # then stop the child deliberately (and can still measure its data dir).
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                start_new_session=True,
            )
        _LIVE.add(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        _LIVE.discard(self)


@atexit.register
def _stop_all() -> None:
    for m in list(_LIVE):
        m.stop(timeout=5)


def wait_http(
    name: str,
    alive: Callable[[], bool],
    tail: Callable[[], str],
    port: int,
    path: str,
    ok: tuple[int, ...],
    timeout: float,
) -> None:
    """Poll ``path`` until it answers with a status in ``ok``; fail fast if the child died."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not alive():
            raise RuntimeError(f"{name} exited during start-up:\n{tail()}")
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            conn.request("GET", path)
            if conn.getresponse().status in ok:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise TimeoutError(f"{name} not healthy on {HOST}:{port}{path} after {timeout:.0f}s")


def dir_bytes(path: Path) -> int:
    """Allocated bytes under ``path``, as ``du -s --block-size=1`` counts them."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            # A compaction may remove a file between listing and stat.
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total


def wait_disk_stable(path: Path, min_wait: float, quiet: float, timeout: float) -> float:
    """Wait ``min_wait`` s, then until the size has not changed for ``quiet`` s; returns seconds."""
    start = time.monotonic()
    last, since = -1, start
    while time.monotonic() - start < timeout:
        size = dir_bytes(path)
        now = time.monotonic()
        if size != last:
            last, since = size, now
        elif now - start >= min_wait and now - since >= quiet:
            break
        time.sleep(0.5)
    return time.monotonic() - start


def _pkg_version(pkg: str) -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


class System:
    """Base class: a system's identity, durability statement and process lifecycle."""

    name = ""
    binary = ""
    apt_package = ""
    durability = ""
    lines_per_batch = 10_000  # only used by line-protocol systems

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.proc: Managed | None = None
        self.port = 0
        self.http_port = 0  # the port of its HTTP query API (the peers: their only port)

    def missing(self) -> str | None:
        """None if runnable, else the exact command that would install it."""
        if shutil.which(self.binary) is None:
            return f"apt-get update && apt-get install -y {self.apt_package}"
        return None

    def version(self) -> str:
        return _pkg_version(self.apt_package)

    def start(self) -> None:
        raise NotImplementedError

    def client(self) -> Any:
        raise NotImplementedError

    def settle(self) -> str:
        """Bring the on-disk state to what the system keeps long term; say what was done."""
        raise NotImplementedError

    def stored_bytes(self) -> int:
        """Bytes of long-term data: du less write-ahead logs and preallocated free space."""
        return dir_bytes(self.data_dir)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def pid(self) -> int:
        """The server process's pid (its CPU time is read from /proc/<pid>/stat)."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.proc.pid


class InfluxDB(System):
    name = "influxdb"
    binary = "influxd"
    apt_package = "influxdb"
    durability = "WAL fsync per write request (wal-fsync-delay=0s, the default)"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = self.workdir / "influxdb.conf"
        conf.write_text(influxd_config(self.data_dir, free_port(), self.port, settle_fast=True))
        self.proc = Managed(self.name, [self.binary, "-config", str(conf)], self.workdir)
        self.http_port = self.port
        wait_http(self.name, self.proc.alive, self.proc.log_tail, self.port, "/ping", (204,), 60)
        c = self.client()
        try:
            c.create_database()
        finally:
            c.close()

    def stored_bytes(self) -> int:
        return dir_bytes(self.data_dir) - dir_bytes(self.data_dir / "wal")

    def client(self) -> clients.InfluxClient:
        return clients.InfluxClient(HOST, self.port)

    def settle(self) -> str:
        secs = wait_disk_stable(self.data_dir, min_wait=8, quiet=4, timeout=120)
        tsm = len(list((self.data_dir / "data").rglob("*.tsm")))
        return (
            f"waited {secs:.0f}s for the cold cache snapshot and full TSM compaction "
            f"(cold durations 2s/5s): {tsm} TSM file(s), WAL {dir_bytes(self.data_dir / 'wal'):,}"
            " bytes; du of data+wal+meta"
        )


class VictoriaMetrics(System):
    name = "victoriametrics"
    binary = "victoria-metrics"
    apt_package = "victoria-metrics"
    durability = (
        "no WAL: acked rows sit in memory ~1s, then in in-memory parts persisted every ~5s; "
        "a crash loses up to several seconds of acknowledged writes"
    )
    lines_per_batch = 10_000

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        argv = [
            self.binary,
            f"-httpListenAddr={HOST}:{self.port}",
            f"-storageDataPath={self.data_dir}",
            "-retentionPeriod=100y",
            # The benchmark repeats identical queries; the rollup result cache would
            # answer repeats from memory, which xtsdb and InfluxDB do not do.
            "-search.disableCache",
        ]
        self.proc = Managed(self.name, argv, self.workdir)
        self.http_port = self.port
        wait_http(self.name, self.proc.alive, self.proc.log_tail, self.port, "/health", (200,), 60)

    def client(self) -> clients.VMClient:
        return clients.VMClient(HOST, self.port)

    def settle(self) -> str:
        c = self.client()
        try:
            c.force_flush()
            merged = c.force_merge()
        finally:
            c.close()
        secs = wait_disk_stable(self.data_dir, min_wait=3, quiet=4, timeout=120)
        how = "force_merge" if merged else "no force_merge endpoint"
        return f"/internal/force_flush + {how}, then {secs:.0f}s until du stable"


class Xtsdb(System):
    name = "xtsdb"
    durability = "fsync before ack (server default --durability fsync)"
    server: ServerProcess | None = None
    extra_args: tuple[str, ...] = ()  # more server flags (bench/lp_workers.py: --workers 0)
    command: tuple[str, ...] = ()  # another server command line (bench/inline_calls.py)

    def missing(self) -> str | None:
        for mod in ("xtsdb.client", "xtsdb.server.main"):
            if importlib.util.find_spec(mod) is None:
                return f"{mod} not importable: `pip install -e .` in the repository root"
        return None

    def version(self) -> str:
        from importlib.metadata import version

        return version("xtsdb")

    def start(self) -> None:
        # Imported here: missing() reports its absence.
        from xtsdb.server.process import SERVER, ServerProcess

        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The ready file names only the binary port, so the HTTP port is chosen here.
        self.http_port = free_port()
        args = ["--host", HOST, "--port", "0", "--data-dir", str(self.data_dir)]
        args += ["--http-port", str(self.http_port), *self.extra_args]
        cmd = self.command or SERVER
        self.server = ServerProcess(
            args, workdir=self.workdir, name=self.name, new_session=True, command=cmd
        )
        atexit.register(self.server.close)  # a no-op once it was stopped
        self.port = self.server.wait_ready(60)[1]
        # The ready file is written just before the HTTP routes are attached to the
        # server; until then they answer 503, so wait for /readyz.
        srv = self.server
        wait_http(self.name, srv.running, srv.log_tail, self.http_port, "/readyz", (200,), 30)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(20)
            self.server = None

    def pid(self) -> int:
        if self.server is None:
            raise RuntimeError("xtsdb is not running")
        return self.server.pid

    @property
    def url(self) -> str:
        return f"xtsdb://{HOST}:{self.port}"

    def client(self) -> clients.XtsdbClient:
        return clients.XtsdbClient(self.url)

    def stored_bytes(self) -> int:
        # Containers are preallocated (fallocate) in large steps, so du counts free
        # space too; count the bytes of sealed blocks the engine reports instead.
        c = self.client()
        try:
            block_bytes = int(c.c.stats()["engine"]["block_bytes"])
        finally:
            c.close()
        d = self.data_dir
        return dir_bytes(d) - dir_bytes(d / "wal") - dir_bytes(d / "containers") + block_bytes

    def settle(self) -> str:
        c = self.client()
        try:
            c.flush_server()
        finally:
            c.close()
        secs = wait_disk_stable(self.data_dir, min_wait=0, quiet=2, timeout=60)
        return f"flush_server() sealed memory to blocks, then {secs:.0f}s until du stable"


SYSTEMS: dict[str, type[System]] = {
    "xtsdb": Xtsdb,
    "influxdb": InfluxDB,
    "victoriametrics": VictoriaMetrics,
}
