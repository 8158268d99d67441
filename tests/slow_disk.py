"""A server subprocess on a slow disk: strace delays every ``fdatasync`` it makes.

``strace -f -e inject=fdatasync:delay_exit=US`` holds each WAL group commit for
``US`` microseconds after the data reached the disk, so acknowledgements are
slow and the window between a write frame going out and its ack is wide: the
window in which a client's bookkeeping races. Used by
``tests/test_client_shared.py``; the server itself is the real one.

Only the server's own pid is ever signalled (``kill9``); strace exits with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xtsdb.server.process import ServerProcess

SMALL = ["--chunk-size", "256KiB", "--meta-extents", "1", "--block-points", "1000"]
START_TIMEOUT = 30.0


@contextmanager
def slow_server(
    tmp_path: Path, data_dir: Path, *extra: str, strace: str | None, delay_us: int = 300_000
) -> Iterator[ServerProcess]:
    """A ready server on ``data_dir`` with every fdatasync delayed by ``delay_us`` (none
    if ``strace`` is None); ``url`` to connect, ``kill9()`` to crash it (the server, not
    strace); killed and reaped on exit."""
    if strace is not None and not data_dir.exists():
        # A new data directory preallocates and fsyncs its files: seconds under strace.
        with slow_server(tmp_path, data_dir, *extra, strace=None):
            pass
    wrapper: list[str] = []
    if strace is not None:
        # --seccomp-bpf: only fdatasync stops the tracee; other syscalls run at full speed.
        wrapper = [strace, "-f", "-qq", "--seccomp-bpf", "-o", "/dev/null", "-e", "trace=fdatasync"]
        wrapper += ["-e", f"inject=fdatasync:delay_exit={delay_us}"]
    args = ["--port", "0", "--http-port", "0", "--data-dir", str(data_dir), *SMALL, *extra]
    with ServerProcess(args, workdir=tmp_path, name="slow-server", wrapper=wrapper) as srv:
        srv.wait_ready(START_TIMEOUT)
        yield srv
