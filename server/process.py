"""Run ``xtsdb-server`` as a child process: start it, wait until it listens, stop it.

For tests, benchmarks and embedders that need the real server process (its
signals, its exit code, a ``kill -9``) rather than a :class:`ServerThread`::

    with ServerProcess(["--port", "0", "--data-dir", "data"], workdir=Path("run")) as srv:
        srv.wait_ready()
        ...  # connect to srv.url
        assert srv.stop() == 0

The server is ``python -m xtsdb.server`` with ``--ready-file`` added: the server
writes "HOST PORT" there (atomically) once it listens, which is how ``port 0``
is found without parsing logs. Its output goes to a log file; a start that
fails or times out raises with the log's last lines.

Only the server's own pid is ever signalled. A ``wrapper`` (``strace -f ...``)
runs the server as its child: then :attr:`pid` is that child, found in /proc,
and the wrapper is killed only if it outlives the server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "ServerExited",
    "ServerProcess",
    "ServerStartError",
    "ServerTimeout",
    "flags",
    "free_port",
    "server_env",
]

SERVER = (sys.executable, "-m", "xtsdb.server")


class ServerStartError(RuntimeError):
    """The server did not become ready; the message ends with its log's last lines."""


class ServerExited(ServerStartError):
    """The server ended before it wrote its ready file."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


class ServerTimeout(ServerStartError, TimeoutError):
    """The server still runs but wrote no ready file within the deadline."""


def server_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default ``os.environ``) without ``XTSDB_*`` settings, plus ``extra``.

    A server started for a test must not pick up the caller's configuration.
    """
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith("XTSDB_")}
    env.update(extra)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now, for a listener the ready file does not
    report (the HTTP ports); another process may take it before the server binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def flags(**settings: object) -> list[str]:
    """Command-line flags from settings: ``flags(chunk_size="64KiB")`` is
    ``["--chunk-size", "64KiB"]`` (the names of :class:`ServerConfig`'s fields)."""
    return [a for k, v in settings.items() for a in ("--" + k.replace("_", "-"), str(v))]


class ServerProcess:
    """One server child process, started at construction; close it (or use ``with``).

    ``workdir`` holds ``NAME.ready`` and ``NAME.log`` unless ``ready_file`` or
    ``log_file`` say otherwise; the log is appended to, and :meth:`log` returns
    this run's part only. ``ready_flag=False`` passes no ``--ready-file``: the
    caller names the file another way (``XTSDB_READY_FILE`` in ``env``).
    ``command`` replaces ``python -m xtsdb.server`` (a stand-in that follows the
    same ready-file rule). ``new_session``: a Ctrl-C in the terminal reaches the
    caller only, which then stops the server when it chooses.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        workdir: Path,
        name: str = "server",
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_file: Path | None = None,
        log_file: Path | None = None,
        ready_flag: bool = True,
        wrapper: Sequence[str] = (),
        command: Sequence[str] = SERVER,
        new_session: bool = False,
    ) -> None:
        self.ready_file = ready_file or workdir / f"{name}.ready"
        self.ready_file.unlink(missing_ok=True)  # a stale file would look like a start
        self.log_file = log_file or workdir / f"{name}.log"
        self.log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.wrapped = bool(wrapper)
        self.host, self.port = "", 0
        self._pid = 0
        flag = ["--ready-file", str(self.ready_file)] if ready_flag else []
        self.argv = [*wrapper, *command, *flag, *args]
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=server_env() if env is None else dict(env),
                cwd=cwd or workdir,
                start_new_session=new_session,
            )

    # -- start ---------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 30.0) -> tuple[str, int]:
        """(host, port) once the ready file appears.

        Raises :class:`ServerExited` if the process ends first and
        :class:`ServerTimeout` after ``timeout`` seconds (the server keeps running:
        :meth:`close` ends it).
        """
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise ServerExited(f"server exited with {code}:\n{self.log_tail()}", code)
            if time.monotonic() > deadline:
                raise ServerTimeout(f"server not ready within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.01)
        host, port = self.ready_file.read_text().split()
        self.host, self.port = host, int(port)
        return self.address

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        return f"xtsdb://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """The server's pid (with a wrapper: the wrapper's only child, once it has one)."""
        if not self.wrapped:
            return self.proc.pid
        if not self._pid:
            self._pid = _only_child(self.proc.pid)
        return self._pid

    # -- output --------------------------------------------------------------------------

    def log(self) -> str:
        """What this run wrote to the log file."""
        try:
            with self.log_file.open("rb") as f:
                f.seek(self.log_start)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # -- stop ----------------------------------------------------------------------------

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """The exit code (of the wrapper, which exits the way its server did)."""
        return self.proc.wait(timeout)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the server's pid; nothing once it has ended."""
        if not self.running():
            return  # reaped: the pid may belong to someone else now
        pid = self.pid
        if pid:
            with contextlib.suppress(ProcessLookupError):  # ended between the check and here
                os.kill(pid, sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; the exit code (0 = clean stop)."""
        self.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            return self.proc.returncode

    def kill9(self) -> None:
        """SIGKILL the server (a crash: nothing of it runs after this); does not reap."""
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Kill the server if it still runs and reap it (and a wrapper left behind)."""
        if self.wrapped and not self._pid and self.running():
            with contextlib.suppress(ServerStartError):
                self._pid = _only_child(self.proc.pid)  # not ready yet: the server goes first
        self.kill9()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # the wrapper (our own child) did not follow its server out
            self.proc.wait(10)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # whether the block ended normally or not


def _only_child(pid: int) -> int:
    """The one child of ``pid`` (Linux /proc); 0 if it has none (yet, or any more)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0
    if len(kids) > 1:
        raise ServerStartError(f"process {pid} has children {kids}, expected one server")
    return int(kids[0]) if kids else 0
