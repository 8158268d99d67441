"""The ``xtsdb`` command with several servers, and ``xtsdb cluster status``.

Real servers on 127.0.0.1 (in-process threads: the CLI is what is tested);
the printed form of a ``cluster_status`` answer is checked on an answer shaped
as :mod:`xtsdb.protocol.cluster` declares it.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from xtsdb.client.cli import main
from xtsdb.client.cli_cluster import format_status
from xtsdb.server.app import ServerThread
from xtsdb.server.config import ServerConfig


def dead_address() -> str:
    """A loopback port nothing listens on (bound, never listened: connect is refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


def test_cli_fails_over_past_a_dead_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ServerThread(ServerConfig(port=0, data_dir=tmp_path)) as srv:
        live = srv.url.removeprefix("xtsdb://")
        assert main(["--url", f"xtsdb://{dead_address()},{live}", "--timeout", "3", "ping"]) == 0
        assert f"pong from xtsdb://{live}" in capsys.readouterr().out
        assert main(["--url", f"xtsdb://{dead_address()},{dead_address()}", "ping"]) == 1
        assert "cannot connect" in capsys.readouterr().err


def test_cluster_status_on_a_single_node_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ServerThread(ServerConfig(port=0, data_dir=tmp_path)) as srv:
        assert main(["--url", srv.url, "cluster", "status"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("xtsdb: error:") and "not in cluster mode" in err
    assert main(["cluster"]) == 2  # an action is required


def test_cluster_status_lines() -> None:
    status = {
        "node": "b",
        "members": {
            "a": {"address": "10.0.0.1:7878", "started_us": 1_700_000_000_000_000},
            "b": {"address": "10.0.0.2:7878", "started_us": 1_700_000_100_000_000},
        },
        "shards": 3,
        "replication": 2,
        "stream_last_seq": 120,
        "owners": {"10": ["a", "b"], "2": ["b", "a"], "0": []},
        "replicas": {"a": {"10": {"applied_seq": 120, "lag": 0}}, "b": {10: {"lag": 7}}},
    }
    lines = format_status(status)
    assert lines[0] == (
        "node b answering: 2 members, 3 shards, replication 2, write log at sequence 120"
    )
    assert "  a  10.0.0.1:7878  up since 2023-11-14T22:13:20Z" in lines
    shard_rows = [line for line in lines if line.startswith("  ") and "(" in line]
    # Numeric shard order; int and str shard keys both found; an unknown lag shown as '?'.
    assert shard_rows == ["     2  b (?), a (?)", "    10  a (0), b (7)"]
    assert "     0  NO OWNER" in lines
    assert "shards without an owner: 0" in lines
    assert lines[-1] == "largest lag: 7 frames (b, shard 10)"
