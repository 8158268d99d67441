"""``cluster_status``: its declaration round-trips, and a single-node server refuses it."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from xtsdb.client import connect
from xtsdb.protocol import OPERATIONS, parse_request_header
from xtsdb.protocol.cluster import CLUSTER_STATUS, ClusterStatus
from xtsdb.protocol.declare import Empty
from xtsdb.protocol.errors import InvalidInput
from xtsdb.server.app import ServerThread
from xtsdb.server.config import ServerConfig


def _wire(msg: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = msgpack.unpackb(msgpack.packb(msg), raw=False)
    return out


def test_round_trip() -> None:
    assert OPERATIONS["cluster_status"] is CLUSTER_STATUS
    msg = _wire(CLUSTER_STATUS.encode(9, Empty()))
    assert parse_request_header(msg) == (9, "cluster_status")
    assert CLUSTER_STATUS.parse(msg) == Empty()
    status = {"node": "a", "members": {"a": {"address": "127.0.0.1:1"}}, "owners": {"0": ["a"]}}
    answer = _wire(CLUSTER_STATUS.answer(9, ClusterStatus(status=status)))
    assert CLUSTER_STATUS.parse_answer(answer).status == status


def test_single_node_server_refuses_it(tmp_path: Path) -> None:
    with (
        ServerThread(ServerConfig(port=0, data_dir=tmp_path)) as srv,
        connect(srv.url) as client,
        pytest.raises(InvalidInput, match="not in cluster mode"),
    ):
        client._drive(client._core.ask(CLUSTER_STATUS, Empty()), 10.0)
