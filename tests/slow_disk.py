"""A server subprocess on a slow disk: strace delays every ``fdatasync`` it makes.

``strace -f -e inject=fdatasync:delay_exit=US`` holds each WAL group commit for
``US`` microseconds after the data reached the disk, so acknowledgements are
slow and the window between a write frame going out and its ack is wide: the
window in which a client's bookkeeping races. Used by
``tests/test_client_shared.py``; the server itself is the real one.

Only the server's own pid is ever signalled (``kill9``); strace exits with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SMALL = ["--chunk-size", "256KiB", "--meta-extents", "1", "--block-points", "1000"]
START_TIMEOUT = 30.0


class SlowServer:
    """A started server; ``url`` to connect, ``kill9()`` to crash it."""

    def __init__(self, proc: subprocess.Popen[bytes], log_file: Path) -> None:
        self.proc = proc  # strace, or the server itself when no delay is injected
        self.log_file = log_file
        self.url = ""
        self.pid = 0  # the server process

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def kill9(self) -> None:
        """SIGKILL the server process (not strace): a crash with acks in flight."""
        os.kill(self.pid, signal.SIGKILL)


def _traced_child(tracer: int) -> int:
    """The pid of strace's child (the server), from /proc."""
    children = Path(f"/proc/{tracer}/task/{tracer}/children").read_text().split()
    if len(children) != 1:
        raise AssertionError(f"strace {tracer} has children {children}, expected one")
    return int(children[0])


@contextmanager
def slow_server(
    tmp_path: Path, data_dir: Path, *extra: str, strace: str | None, delay_us: int = 300_000
) -> Iterator[SlowServer]:
    """A server on ``data_dir`` with every fdatasync delayed by ``delay_us`` (none if
    ``strace`` is None); killed (SIGKILL, its own pid) and reaped on exit."""
    if strace is not None and not data_dir.exists():
        # A new data directory preallocates and fsyncs its files: seconds under strace.
        with slow_server(tmp_path, data_dir, *extra, strace=None):
            pass
    ready = tmp_path / "slow-server.ready"
    ready.unlink(missing_ok=True)
    log_file = tmp_path / "slow-server.log"
    server = [
        sys.executable,
        "-m",
        "xtsdb.server",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--ready-file",
        str(ready),
        "--data-dir",
        str(data_dir),
        *SMALL,
        *extra,
    ]
    prefix: list[str] = []
    if strace is not None:
        # --seccomp-bpf: only fdatasync stops the tracee; every other syscall runs at full speed.
        prefix = [
            strace,
            "-f",
            "-qq",
            "--seccomp-bpf",
            "-o",
            "/dev/null",
            "-e",
            "trace=fdatasync",
            "-e",
            f"inject=fdatasync:delay_exit={delay_us}",
        ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("XTSDB_")}
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            [*prefix, *server], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
        )
    srv = SlowServer(proc, log_file)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}: {srv.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready in {START_TIMEOUT} s: {srv.log()}")
            time.sleep(0.02)
        host, port = ready.read_text().split()
        srv.url = f"xtsdb://{host}:{port}"
        srv.pid = proc.pid if strace is None else _traced_child(proc.pid)
        yield srv
    finally:
        if not srv.pid and strace is not None and proc.poll() is None:
            with contextlib.suppress(OSError, AssertionError):
                srv.pid = _traced_child(proc.pid)  # not ready yet: still end the server first
        if srv.pid and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # killed by the test already
                srv.kill9()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()  # strace itself (our own child) if it did not follow its tracee out
            proc.wait(10)
