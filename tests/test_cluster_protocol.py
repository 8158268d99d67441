"""The cluster ops: their declarations round-trip, and a single-node server refuses them."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest

from xtsdb.client import connect
from xtsdb.protocol import OPERATIONS, parse_request_header
from xtsdb.protocol.cluster import (
    CLUSTER_SHARD_TAGS,
    CLUSTER_STATUS,
    ClusterStatus,
    ShardAsk,
    ShardContents,
)
from xtsdb.protocol.declare import Empty
from xtsdb.protocol.errors import InvalidInput
from xtsdb.server.app import ServerThread
from xtsdb.server.config import ServerConfig


def _wire(msg: dict[str, object]) -> dict[str, object]:
    """``msg`` as the other side decodes it (arrays travel as their raw bytes)."""
    packed = msgpack.packb(msg, default=lambda a: a.tobytes())
    out: dict[str, object] = msgpack.unpackb(packed, raw=False)
    return out


def test_round_trip() -> None:
    assert OPERATIONS["cluster_status"] is CLUSTER_STATUS
    msg = _wire(CLUSTER_STATUS.encode(9, Empty()))
    assert parse_request_header(msg) == (9, "cluster_status")
    assert CLUSTER_STATUS.parse(msg) == Empty()
    status = {"node": "a", "members": {"a": {"address": "127.0.0.1:1"}}, "owners": {"0": ["a"]}}
    answer = _wire(CLUSTER_STATUS.answer(9, ClusterStatus(status=status)))
    assert CLUSTER_STATUS.parse_answer(answer).status == status


def test_shard_tags_round_trip() -> None:
    assert OPERATIONS["cluster_shard_tags"] is CLUSTER_SHARD_TAGS
    msg = _wire(CLUSTER_SHARD_TAGS.encode(4, ShardAsk(shard=3, shards=8)))
    assert CLUSTER_SHARD_TAGS.parse(msg) == ShardAsk(shard=3, shards=8)
    with pytest.raises(InvalidInput, match="shard"):
        CLUSTER_SHARD_TAGS.parse({**msg, "shard": -1})
    tags = np.array([3, 11, 2**31 + 3], np.uint32)
    answer = _wire(CLUSTER_SHARD_TAGS.answer(4, ShardContents(applied_seq=77, tags=tags)))
    got = CLUSTER_SHARD_TAGS.parse_answer(answer)
    assert got.applied_seq == 77 and got.tags.tolist() == tags.tolist()


def test_single_node_server_refuses_them(tmp_path: Path) -> None:
    with (
        ServerThread(ServerConfig(port=0, data_dir=tmp_path)) as srv,
        connect(srv.url) as client,
    ):
        with pytest.raises(InvalidInput, match="not in cluster mode"):
            client._drive(client._core.ask(CLUSTER_STATUS, Empty()), 10.0)
        with pytest.raises(InvalidInput, match="not in cluster mode"):
            ask = ShardAsk(shard=0, shards=1)
            client._drive(client._core.ask(CLUSTER_SHARD_TAGS, ask), 10.0)
