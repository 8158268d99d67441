"""The ``influxd`` (InfluxDB 1.x) configuration shared by the benchmark and the tests.

``bench/peers.py`` runs influxd as a peer to measure; ``tests/influxd.py`` runs it
as the reference for line protocol. Both want the same thing: every listener on
loopback, no phoning home, no ``_internal`` self-monitoring database (it would
add background writes and disk bytes), fsync per write request, and no limit on
a request body.
"""

from __future__ import annotations

import socket
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that is free now (the child binds it a moment later).

    (``xtsdb.server.process.free_port`` does the same; the peers run without xtsdb.)
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def influxd_config(data: Path, rpc_port: int, http_port: int, *, settle_fast: bool = False) -> str:
    """The config file text: data, WAL and meta under ``data``; HTTP on ``http_port``.

    ``rpc_port`` is the backup/restore listener, unused but bound, so on loopback
    too. ``settle_fast`` lowers the cold durations, which only act once writes
    stop, so a disk-size measurement sees the snapshotted, fully compacted TSM
    state without waiting for the 10 min / 4 h defaults.
    """
    cold = (
        '  cache-snapshot-write-cold-duration = "2s"\n  compact-full-write-cold-duration = "5s"\n'
        if settle_fast
        else ""
    )
    return f"""reporting-disabled = true
bind-address = "{HOST}:{rpc_port}"
[meta]
  dir = "{data}/meta"
  logging-enabled = false
[data]
  dir = "{data}/data"
  wal-dir = "{data}/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
{cold}[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[http]
  enabled = true
  bind-address = "{HOST}:{http_port}"
  log-enabled = false
  pprof-enabled = false
  max-body-size = 0
[ifql]
  enabled = false
[[graphite]]
  enabled = false
[[collectd]]
  enabled = false
[[opentsdb]]
  enabled = false
[[udp]]
  enabled = false
[continuous_queries]
  enabled = false
"""
