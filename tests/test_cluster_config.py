"""Cluster options: flags, XTSDB_* variables and TOML keys, and their checks.

Without ``cluster`` nothing of cluster mode runs: a plain server never imports nats.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xtsdb.server.config import ConfigError, ServerConfig
from xtsdb.server.process import free_port


def test_flags_environment_and_toml(tmp_path: Path) -> None:
    toml = tmp_path / "x.toml"
    toml.write_text('cluster = ["nats://h1:4222", "nats://h2:4222"]\nnode_id = "a"\nshards = 16\n')
    c = ServerConfig.load(["--config", str(toml), "--replication", "3"], {"XTSDB_NODE_ID": "b"})
    assert c.cluster == ("nats://h1:4222", "nats://h2:4222")
    assert (c.node_id, c.shards, c.replication) == ("b", 16, 3)
    c = ServerConfig.load(
        ["--cluster", "nats://h1:1,nats://h2:2", "--node-id", "n-1", "--stream-max-age", "3600"]
    )
    assert c.cluster == ("nats://h1:1", "nats://h2:2") and c.stream_max_age == 3600.0
    c = ServerConfig.load([], {"XTSDB_CLUSTER": "nats://h:1", "XTSDB_NODE_ID": "x"})
    assert c.cluster == ("nats://h:1",) and c.shards == 64 and c.replication == 2


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--cluster", "nats://h:1"], "node-id"),
        (["--cluster", "nats://h:1", "--node-id", "a b"], "node-id"),
        (["--cluster", "http://h:1", "--node-id", "a"], "nats://"),
        (["--cluster", "nats://h:1", "--node-id", "a", "--shards", "0"], "shards"),
        (["--cluster", "nats://h:1", "--node-id", "a", "--replication", "0"], "replication"),
    ],
)
def test_bad_cluster_options_refused(argv: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        ServerConfig.load(argv)


def test_single_node_never_imports_nats(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from xtsdb.server.config import ServerConfig\n"
        "from xtsdb.server.app import ServerThread\n"
        f"with ServerThread(ServerConfig(port=0, data_dir={str(tmp_path)!r})):\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m == 'nats' or m.startswith('nats.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_cluster_node_without_nats_fails_to_start(tmp_path: Path) -> None:
    """A node that cannot reach NATS exits with a clear error, never runs as a single node."""
    argv = [sys.executable, "-m", "xtsdb.server", "--data-dir", str(tmp_path / "d")]
    argv += ["--port", "0", "--http-port", "-1", "--heartbeat", "0.2"]
    argv += ["--cluster", f"nats://127.0.0.1:{free_port()}", "--node-id", "a"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "no NATS server of nats://127.0.0.1:" in done.stderr
    assert "xtsdb listening" not in done.stderr


def test_sigterm_while_joining_stops_the_node_at_once(tmp_path: Path) -> None:
    """NATS not there yet (a node may wait 10 heartbeats for it): SIGTERM ends the wait."""
    import signal
    import time

    argv = [sys.executable, "-m", "xtsdb.server", "--data-dir", str(tmp_path / "d")]
    argv += ["--port", "0", "--http-port", "-1", "--heartbeat", "6"]  # 60 s to connect
    argv += ["--cluster", f"nats://127.0.0.1:{free_port()}", "--node-id", "a"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(3)  # opened its engine, waiting for NATS
        assert proc.poll() is None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert time.monotonic() - started < 15
        assert proc.returncode == 0, out
        assert "stopped while joining the cluster" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
