"""The ``xtsdb-server`` process: configuration, signals, and kill -9 durability.

Children are :class:`xtsdb.server.process.ServerProcess` (``python -m
xtsdb.server``, found through its ready file), always killed and reaped when
their ``with`` block ends. Only the child's own pid is ever signalled. The last
tests here check that helper itself.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xtsdb.protocol import QUERY, WRITE, FrameDecoder, encode_frame, request
from xtsdb.server.app import ServerThread
from xtsdb.server.config import ConfigError, ServerConfig
from xtsdb.server.main import main
from xtsdb.server.process import ServerExited, ServerProcess, ServerTimeout, server_env

SMALL = ["--chunk-size", "256KiB", "--meta-extents", "1", "--block-points", "1000"]
START_TIMEOUT = 30.0


def child(
    tmp_path: Path,
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    ready_file: Path | None = None,
    name: str = "server",
) -> ServerProcess:
    """A server subprocess; ``ready_file`` given: named by ``env``, not by a flag."""
    return ServerProcess(
        args,
        workdir=tmp_path,
        name=name,
        env=env,
        cwd=cwd,
        ready_file=ready_file,
        ready_flag=ready_file is None,
    )


def start(tmp_path: Path, data_dir: Path, *extra: str, name: str = "server") -> ServerProcess:
    args = ["--port", "0", "--http-port", "0", "--data-dir", str(data_dir), *SMALL]
    return child(tmp_path, [*args, *extra], name=name)


class Conn:
    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.decoder = FrameDecoder()
        self.next_id = 0

    def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.sock.sendall(encode_frame(msg))
        while (resp := self.decoder.next_message()) is None:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("closed")
            self.decoder.feed(data)
        assert resp["id"] == msg["id"], resp
        return resp

    def write(self, tag: int, ts: Any, values: Any) -> dict[str, Any]:
        self.next_id += 1
        return self.call(WRITE.build(self.next_id, tag, ts, values))

    def query(self, tag: int) -> tuple[Any, Any]:
        self.next_id += 1
        got = QUERY.parse_answer(self.call(QUERY.build(self.next_id, tag, 0, 1 << 50)))
        ts, values = got.ts, got.values
        return ts, values

    def close(self) -> None:
        self.sock.close()


def test_sigterm_stops_cleanly_and_restart_sees_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ts = np.arange(2_500, dtype=np.int64)
    with start(tmp_path, data, name="first") as srv:
        conn = Conn(srv.wait_ready())
        for tag in (1, 2):
            assert conn.write(tag, ts, ts * float(tag))["ok"]
        conn.close()
        assert srv.stop() == 0
        log = srv.log()
    assert f"xtsdb listening on 127.0.0.1:{srv.address[1]}" in log
    assert "durability=fsync" in log and str(data) in log
    assert "received SIGTERM, stopping" in log and "xtsdb stopped" in log
    assert not srv.ready_file.exists()  # removed on a clean stop
    with start(tmp_path, data, name="second") as srv2:
        conn = Conn(srv2.wait_ready())
        for tag in (1, 2):
            got_ts, got_values = conn.query(tag)
            np.testing.assert_array_equal(got_ts, ts)
            np.testing.assert_array_equal(got_values, ts * float(tag))
        conn.close()
        assert srv2.stop() == 0


def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    n_writers, batch = 4, 50
    acked: list[list[np.ndarray]] = [[] for _ in range(n_writers)]
    stop = threading.Event()

    def writer(i: int, address: tuple[str, int]) -> None:
        conn = Conn(address, timeout=5)
        try:
            for b in range(10_000):
                if stop.is_set():
                    return
                ts = b * batch + np.arange(batch, dtype=np.int64)
                if conn.write(10 + i, ts, ts * 0.25 + i)["ok"]:
                    acked[i].append(ts)  # recorded only after the acknowledgement
        except (OSError, ConnectionError):
            return  # the server was killed mid-request: that write was not acknowledged
        finally:
            conn.close()

    with start(tmp_path, data, name="victim") as srv:
        address = srv.wait_ready()
        threads = [threading.Thread(target=writer, args=(i, address)) for i in range(n_writers)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while sum(map(len, acked)) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        srv.kill9()  # SIGKILL to this child only, writers still running
        srv.wait(10)
        stop.set()
        for t in threads:
            t.join(10)
    assert sum(map(len, acked)) >= 200, "writers made too little progress to test anything"
    with start(tmp_path, data, name="revived") as srv2:
        conn = Conn(srv2.wait_ready())
        for i in range(n_writers):
            got_ts, got_values = conn.query(10 + i)
            want = np.concatenate(acked[i])
            pos = np.searchsorted(got_ts, want)
            assert (pos < got_ts.size).all(), f"writer {i}: acknowledged points are missing"
            np.testing.assert_array_equal(got_ts[pos], want)
            np.testing.assert_array_equal(got_values[pos], want * 0.25 + i)
        conn.close()
        assert srv2.stop() == 0


def test_starts_with_no_arguments_using_environment(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    ready = tmp_path / "env.ready"
    env = server_env(XTSDB_PORT="0", XTSDB_READY_FILE=str(ready))  # 7878 may be busy here
    with child(tmp_path, [], env=env, cwd=cwd, ready_file=ready, name="noargs") as srv:
        host, port = srv.wait_ready()
        assert host == "127.0.0.1" and port != 7878
        conn = Conn((host, port))
        assert conn.call(request("ping", 1))["ok"]
        conn.close()
        assert (cwd / "xtsdb-data").is_dir()  # the embedded default, relative to the CWD
        assert srv.stop() == 0
    assert "durability=fsync" in srv.log()


def test_locked_data_dir_and_bad_config_exit_nonzero(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = ServerThread(
        ServerConfig(port=0, http_port=0, data_dir=data, chunk_size=256 * 1024, meta_extents=1)
    )
    with srv:
        with start(tmp_path, data, name="second") as other:
            assert other.wait(START_TIMEOUT) == 1
        assert "could not run" in other.log()
    assert main(["--host", "0.0.0.0", "--data-dir", str(data)]) == 2
    assert main(["--durability", "sometimes"]) == 2


def test_config_precedence_flag_env_file_default(tmp_path: Path) -> None:
    toml = tmp_path / "xtsdb.toml"
    toml.write_text(
        'port = 1111\nhost = "::1"\ndurability = "none"\nblock_points = 500\n'
        'max_queue_bytes = "1MiB"\nidle_timeout = 5\n'
    )
    default = ServerConfig.load([], {})
    assert (default.host, default.port, default.data_dir) == ("127.0.0.1", 7878, Path("xtsdb-data"))
    assert default.durability == "fsync" and default.max_connections == 1024
    from_file = ServerConfig.load(["--config", str(toml)], {})
    assert (from_file.port, from_file.host, from_file.durability) == (1111, "::1", "none")
    assert from_file.block_points == 500 and from_file.max_queue_bytes == 1 << 20
    env = {"XTSDB_CONFIG": str(toml), "XTSDB_PORT": "2222", "XTSDB_BLOCK_POINTS": "700"}
    from_env = ServerConfig.load([], env)
    assert (from_env.port, from_env.block_points, from_env.host) == (2222, 700, "::1")
    from_flag = ServerConfig.load(["--port", "3333", "--max-queue-bytes", "2MiB"], env)
    assert (from_flag.port, from_flag.block_points) == (3333, 700)
    assert from_flag.max_queue_bytes == 2 << 20 and from_flag.idle_timeout == 5.0
    assert from_flag.engine_config().fsync is False  # durability=none from the file


def test_config_refuses_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allow-remote"):
        ServerConfig.load(["--host", "0.0.0.0"], {})
    assert ServerConfig.load(["--host", "0.0.0.0", "--allow-remote"], {}).allow_remote
    assert ServerConfig.load([], {"XTSDB_HOST": "0.0.0.0", "XTSDB_ALLOW_REMOTE": "1"}).allow_remote
    with pytest.raises(ConfigError, match="XTSDB_PORT"):
        ServerConfig.load([], {"XTSDB_PORT": "eighty"})
    with pytest.raises(ConfigError, match="XTSDB_ALLOW_REMOTE"):
        ServerConfig.load([], {"XTSDB_ALLOW_REMOTE": "perhaps"})
    bad = tmp_path / "bad.toml"
    bad.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        ServerConfig.load(["--config", str(bad)], {})
    with pytest.raises(ConfigError, match="chunk_size"):
        ServerConfig(chunk_size=1000)
    with pytest.raises(ConfigError, match="cannot read"):
        ServerConfig.load(["--config", str(tmp_path / "missing.toml")], {})


# -- the ServerProcess helper itself -------------------------------------------------------

# Stand-ins that follow the ready-file rule or break it, so the helper's failure
# paths run in milliseconds; argv[-1] is the ready file (`--ready-file PATH`).
NEVER_READY = "import time; time.sleep(60)"
IGNORES_SIGTERM = (
    "import signal, sys, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "pathlib.Path(sys.argv[-1]).write_text('127.0.0.1 1\\n'); time.sleep(60)"
)


def stand_in(tmp_path: Path, code: str) -> ServerProcess:
    return ServerProcess(workdir=tmp_path, command=[sys.executable, "-c", code])


def test_helper_reports_address_pid_and_log_then_stops_cleanly(tmp_path: Path) -> None:
    with start(tmp_path, tmp_path / "data") as srv:
        host, port = srv.wait_ready()
        assert srv.url == f"xtsdb://{host}:{port}" and port > 0
        assert "xtsdb.server" in Path(f"/proc/{srv.pid}/cmdline").read_text()
        conn = Conn(srv.address)
        assert conn.call(request("ping", 1))["ok"]
        conn.close()
        assert srv.stop() == 0
        assert not srv.running()
    assert "xtsdb stopped" in srv.log_tail(3)


def test_helper_raises_with_the_log_when_the_server_exits_at_start(tmp_path: Path) -> None:
    srv = child(tmp_path, ["--durability", "sometimes"])
    with srv, pytest.raises(ServerExited, match="durability") as info:
        srv.wait_ready()
    assert info.value.returncode == 2


def test_helper_times_out_then_kills_the_child(tmp_path: Path) -> None:
    with stand_in(tmp_path, NEVER_READY) as srv:
        with pytest.raises(ServerTimeout, match=r"not ready within 0\.3 s"):
            srv.wait_ready(timeout=0.3)
        assert srv.running()
    assert srv.proc.returncode == -signal.SIGKILL  # close() ended it


def test_helper_stop_falls_back_to_sigkill(tmp_path: Path) -> None:
    with stand_in(tmp_path, IGNORES_SIGTERM) as srv:
        assert srv.wait_ready() == ("127.0.0.1", 1)
        started = time.monotonic()
        assert srv.stop(timeout=0.5) == -signal.SIGKILL
        assert time.monotonic() - started < 10


def test_helper_signals_the_server_not_its_wrapper(tmp_path: Path) -> None:
    """With a wrapper the pid is the wrapper's child; kill9 ends that one."""
    wrapper = [
        sys.executable,
        "-c",
        "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))",
    ]
    args = ["--port", "0", "--http-port", "0", "--data-dir", str(tmp_path / "d"), *SMALL]
    with ServerProcess(args, workdir=tmp_path, wrapper=wrapper) as srv:
        srv.wait_ready()
        assert srv.pid != srv.proc.pid
        assert "xtsdb.server" in Path(f"/proc/{srv.pid}/cmdline").read_text()
        srv.kill9()
        assert srv.wait(10) == 256 - signal.SIGKILL  # the wrapper saw its child killed
