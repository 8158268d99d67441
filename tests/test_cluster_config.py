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
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise AssertionError(f"still running 30 s after SIGTERM; its output:\n{out}") from None
        assert time.monotonic() - started < 15
        assert proc.returncode == 0, out
        assert "stopped while joining the cluster" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_connecting_ends_soon_after_a_cancellation_wherever_it_lands() -> None:
    """The first connection to an absent NATS is retried until join_timeout; a cancellation
    (SIGTERM) must end it wherever it lands: inside a failing attempt, Python 3.11's
    wait_for can swallow it, and nats-py's own endless retry then never ended."""
    import asyncio

    from xtsdb.server.cluster.bootstrap import connect

    url = f"nats://127.0.0.1:{free_port()}"
    config = ServerConfig(cluster=(url,), node_id="a", heartbeat=6.0)  # 60 s to connect

    async def main() -> list[float]:
        late = []
        for k in range(12):  # cancellations spread over attempts, sleeps and refusals
            task = asyncio.ensure_future(connect(config))
            await asyncio.sleep(0.023 * k)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5.0)
            if not done:
                late.append(0.023 * k)
                task.cancel()
                await asyncio.wait({task}, timeout=5.0)
            else:
                assert task.cancelled()
        return late

    assert asyncio.run(main()) == []


def test_a_cancellation_lost_inside_an_attempt_still_ends_connecting(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The race the test above can only hope to hit, made certain: an attempt swallows
    the cancellation (as wait_for does when its inner future fails at that moment) and
    fails as a refused connection would; connecting must stop there, not retry for
    60 s. Only nats.connect is replaced: the race cannot be produced on demand."""
    import asyncio
    import contextlib
    import gc

    import nats.errors

    from xtsdb.server.cluster import bootstrap

    attempts = 0

    async def swallowing_connect(*, max_reconnect_attempts: int, **_: object) -> object:
        """nats-py's retry: attempts until max_reconnect_attempts (forever if < 0)."""
        nonlocal attempts
        for tries in range(1, 200):  # bounded here only so that a failure cannot hang
            attempts += 1
            # A cancellation here is lost, as when a refused connection and it meet.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)
            if 0 <= max_reconnect_attempts < tries:
                break
        raise nats.errors.NoServersError

    monkeypatch.setattr(bootstrap.nats, "connect", swallowing_connect)
    config = ServerConfig(cluster=("nats://127.0.0.1:1",), node_id="a", heartbeat=6.0)

    async def main() -> bool:
        task = asyncio.ensure_future(bootstrap.connect(config))
        await asyncio.sleep(0.05)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5.0)
        return bool(done) and task.cancelled()

    assert asyncio.run(main())
    assert attempts <= 4  # a few attempts, not one every 50 ms until join_timeout
    gc.collect()  # finalise the loop's leftovers here, not inside a later compile
