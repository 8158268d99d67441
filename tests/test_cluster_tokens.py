"""Cluster mode with tokens: nodes forward reads to each other with ``--peer-token``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nats_harness import (
    NatsCluster,
    nats_cluster_fixture,  # noqa: F401
)
from test_cluster_routing import SHARDS, node_config, wait_placed

from xtsdb.client import Client
from xtsdb.protocol.errors import Unavailable
from xtsdb.server.app import ServerThread

READ_SECRET, WRITE_SECRET, PEER_SECRET = "r" * 24, "w" * 24, "p" * 24


@pytest.mark.parametrize("peer_token", [PEER_SECRET, ""], ids=["with_peer_token", "without"])
def test_forwarded_reads_with_tokens(
    nats_cluster: NatsCluster, tmp_path: Path, peer_token: str
) -> None:
    """With tokens, nodes forward reads with --peer-token; without one, a read that needs
    another node fails with a clear error, not as the client's own authentication."""
    tokens = (f"read:{READ_SECRET}", f"write:{WRITE_SECRET}", f"read:{PEER_SECRET}")
    started: list[ServerThread] = []
    try:
        for name in ("a", "b", "c"):
            config = node_config(nats_cluster, tmp_path, name, tokens=tokens, peer_token=peer_token)
            started.append(ServerThread(config).start())
        wait_placed(started, token=READ_SECRET)
        with Client(started[0].url, token=WRITE_SECRET, read_your_writes=True) as w:
            for k in range(12):  # over every shard: each shard lacks one of the 3 nodes
                w.write(f"t{k}", np.array([1], np.int64), np.array([float(k)]))
            seq = w._core.last_seq
            owners = w.cluster_status()["owners"]
            shard = {k: w.tag(f"t{k}").id % SHARDS for k in range(12)}
        refused = 0
        for srv in started:
            with Client(srv.url, token=READ_SECRET) as r:
                r._core.read_your_writes, r._core.last_seq = True, seq
                for k in range(12):
                    if peer_token or srv.config.node_id in owners[str(shard[k])]:
                        assert r.query(f"t{k}", 0, 2).values.tolist() == [float(k)]
                        continue
                    with pytest.raises(Unavailable, match="--peer-token"):
                        r.query(f"t{k}", 0, 2)
                    refused += 1
        assert refused == (0 if peer_token else 12)  # each tag's one node not holding it
    finally:
        for srv in reversed(started):
            srv.stop()
