"""Cluster mode in one process: three nodes (ServerThreads) on a real 3-server NATS cluster.

What routing and replication must give whatever node a client talks to: one
catalog, every acknowledged write readable everywhere (read your writes),
multi-tag answers merged in request order, deletes in log order, and
replaying the log again changing nothing. Killing processes is in
``test_cluster_nodes.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats as nats_client
import numpy as np
import pytest
from nats_harness import (
    NatsCluster,
    nats_cluster_fixture,  # noqa: F401
)

from xtsdb.client import Client
from xtsdb.protocol.errors import InvalidInput, NotFound
from xtsdb.server.app import ServerThread
from xtsdb.server.cluster.applied import FILE_NAME, read_applied
from xtsdb.server.cluster.bootstrap import STREAM
from xtsdb.server.config import ServerConfig
from xtsdb.server.engine import Engine

SHARDS = 6


def node_config(
    nats: NatsCluster, root: Path, name: str, replication: int = 2, **extra: Any
) -> ServerConfig:
    settings: dict[str, Any] = {"http_port": -1, **extra}
    return ServerConfig(
        host="127.0.0.1",
        port=0,
        data_dir=root / name,
        cluster=tuple(nats.urls),
        node_id=name,
        shards=SHARDS,
        replication=replication,
        heartbeat=0.5,
        auto_create_tags=True,
        **settings,
    )


@pytest.fixture
def nodes(
    nats_cluster: NatsCluster, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[list[ServerThread]]:
    param = getattr(request, "param", {})
    replication = param.get("replication", 2)
    extra = {"http_port": 0} if param.get("http") else {}
    started: list[ServerThread] = []
    try:
        for name in ("a", "b", "c"):
            config = node_config(nats_cluster, tmp_path, name, replication, **extra)
            started.append(ServerThread(config).start())
        wait_placed(started, replication)
        yield started
    finally:
        for srv in reversed(started):
            srv.stop()


def wait_placed(
    nodes: list[ServerThread], replication: int = 2, timeout: float = 30.0, token: str | None = None
) -> None:
    """Until every node sees every member and owners, and has caught up on its own shards
    (each asked itself: another node's view of it is a heartbeat old)."""
    deadline = time.monotonic() + timeout
    names = {srv.config.node_id for srv in nodes}
    while True:
        settled = True
        for srv in nodes:
            with Client(srv.url, token=token) as c:
                st = c.cluster_status()
            me = srv.config.node_id
            mine = [s for s, owners in st["owners"].items() if me in owners]
            ready = all(st["replicas"][me].get(s, {}).get("ready") for s in mine)
            full = all(len(o) == replication for o in st["owners"].values())
            settled = settled and set(st["members"]) == names and ready and full
        if settled:
            return
        assert time.monotonic() < deadline, f"cluster not placed in {timeout} s: {st}"
        time.sleep(0.1)


def test_one_catalog_and_every_write_readable_from_every_node(
    nodes: list[ServerThread],
) -> None:
    # Names created at once through the three nodes get one id each, the same everywhere.
    ids: dict[str, list[int]] = {}
    lock = threading.Lock()

    def create(srv: ServerThread) -> None:
        with Client(srv.url) as c:
            for k in range(12):
                name = f"line{k}.temp"
                c.write(name, np.array([k], np.int64), np.array([float(k)]))
                got = c.tag(name).id
                with lock:
                    ids.setdefault(name, []).append(got)

    threads = [threading.Thread(target=create, args=(srv,)) for srv in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(ids) == 12 and all(len(set(v)) == 1 and len(v) == 3 for v in ids.values())
    assert len({v[0] for v in ids.values()}) == 12
    for srv in nodes:
        with Client(srv.url) as c:
            assert {n: c.tag(n).id for n in ids} == {n: v[0] for n, v in ids.items()}
            with pytest.raises(InvalidInput, match="exists already"):
                c.create_tag("line0.temp")
            with pytest.raises(InvalidInput, match="reject"):
                c.create_tag("strict", duplicates="reject")

    # A settings change through one node reaches every node; a bad one changes nothing.
    with Client(nodes[1].url) as c:
        assert c.update_tag("line1.temp", unit="degC").unit == "degC"
        with pytest.raises(InvalidInput, match="reject"):
            c.update_tag("line1.temp", duplicates="reject")
        with pytest.raises(InvalidInput, match="unknown tag fields"):
            c.update_tag("line1.temp", colour="red")
    with Client(nodes[2].url) as c:
        c.update_tag("line1.temp", description="kiln 1")
    deadline = time.monotonic() + 10
    for srv in nodes:
        with Client(srv.url) as c:
            while (info := c.tag("line1.temp")).description != "kiln 1" or info.unit != "degC":
                assert time.monotonic() < deadline, f"{srv.config.node_id}: {info}"
                time.sleep(0.05)

    # Writes through each node, read right away through the others (read your writes).
    rng = np.random.default_rng(7)
    for i, writer in enumerate(nodes):
        with Client(writer.url, read_your_writes=True) as w:
            for k in range(12):
                ts = np.sort(rng.choice(10**9, 500, replace=False)).astype(np.int64) + i * 10**9
                vals = rng.standard_normal(500)
                w.write(f"line{k}.temp", ts, vals)
                for reader in nodes:
                    with Client(reader.url) as r:
                        r._core.read_your_writes, r._core.last_seq = True, w._core.last_seq
                        got = r.query(f"line{k}.temp", ts[0], ts[-1] + 1)
                        assert got.timestamps.tobytes() == ts.tobytes()
                        assert got.values.tobytes() == vals.tobytes()


def test_multi_tag_answers_merge_in_request_order(nodes: list[ServerThread]) -> None:
    names = [f"m{k}" for k in range(20)]  # spread over every shard
    ts = np.arange(0, 3_600_000_000, 60_000_000, dtype=np.int64)
    with Client(nodes[0].url, read_your_writes=True) as c:
        for k, name in enumerate(names):
            c.write(name, ts, np.full(ts.shape, float(k)) + np.arange(ts.shape[0]))
        c.create_tag("line.empty")
        seq = c._core.last_seq
    order = [*names[::-1], "m3"]
    for srv in nodes:
        with Client(srv.url) as c:
            c._core.read_your_writes, c._core.last_seq = True, seq
            agg = c.aggregate(order[:-1], 0, 3_600_000_000, 600_000_000, ["max", "count"])
            assert list(agg) == order[:-1]
            for name, got in agg.items():
                k = int(str(name)[1:])
                assert got["count"].tolist() == [10.0] * 6
                assert got["max"].tolist() == [k + 9.0 + 10 * j for j in range(6)]
            # In request order, as one node answers: a repeated tag twice, one with no data
            # left out.
            last = c.last([*order, "line.empty"])
            ids = [c.tag(n).id for n in order]
            assert last.tags.tolist() == ids
            assert last.values.tolist() == [k + 59.0 for k in range(19, -1, -1)] + [62.0]


# Replication 3: every node applies every shard.
@pytest.mark.parametrize("nodes", [{"replication": 3}], indirect=True)
def test_deletes_in_log_order_and_replay_changes_nothing(
    nodes: list[ServerThread], nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    ts = np.arange(100, dtype=np.int64) * 1000
    with Client(nodes[1].url, read_your_writes=True) as c:
        for k in range(8):
            c.write(f"d{k}", ts, np.arange(100.0) + k)
        ids_before = {f"d{k}": c.tag(f"d{k}").id for k in range(8)}
        c.delete("d1", 10_000, 20_000)
        c.write("d1", np.array([15_000], np.int64), np.array([-1.0]))  # after the delete: kept
        c.delete_tag("d2")
        # Renames: seen by every node; the old name is free again; no name taken twice.
        d5 = c.tag("d5").id
        assert c.rename_tag("d5", "d5.renamed").id == d5
        with pytest.raises(InvalidInput, match="exists already"):
            c.rename_tag("d6", "d5.renamed")
        assert c.create_tag("d5").id != d5
        assert c.rename_tag("d6", "d6.b").id == c.rename_tag("d6.b", "d6").id  # and back
        d3 = c.tag("d3").id
        assert c.remove_tag("d3").id == d3  # its points through the log, then its name
        c.write("d4", np.array([1], np.int64), np.array([1.0]))  # moves last_seq past it
        seq = c._core.last_seq
    expected_d1 = np.concatenate([ts[:10], [15_000], ts[20:]])
    for srv in nodes:
        with Client(srv.url) as c:
            c._core.read_your_writes, c._core.last_seq = True, seq
            assert c.query("d1", 0, 10**6).timestamps.tolist() == expected_d1.tolist()
            assert c.query("d2", 0, 10**6).timestamps.size == 0
            assert c.query(d3, 0, 10**6).timestamps.size == 0  # by id: the points are gone
            assert (
                c.query("d5.renamed", 0, 10**6).values.tolist() == (np.arange(100.0) + 5).tolist()
            )
            deadline = time.monotonic() + 10
            while True:  # names go through the catalog watcher
                try:
                    c.tag("d3")
                except NotFound:
                    if c.tag("d5").id != d5 and c.tag("d6").id == ids_before["d6"]:
                        break
                assert time.monotonic() < deadline, f"{srv.config.node_id}: names not seen"
                time.sleep(0.05)
    with Client(nodes[0].url) as c:
        ids = {f"d{k}": c.tag(f"d{k}").id for k in range(8) if k not in (3, 5)}
        ids["d5.renamed"] = c.tag("d5.renamed").id
        assert c.create_tag("d3").id > max(ids.values())  # a new id, never the old one

    # Node c forgets how far it applied and replays the whole log over its data.
    victim = nodes[2]
    victim.stop()
    saved = read_applied(victim.data_dir)
    assert saved and max(saved.values()) > 0
    (victim.data_dir / FILE_NAME).unlink()
    before = snapshot(victim.data_dir, ids)
    nodes[2] = ServerThread(node_config(nats_cluster, tmp_path, "c", 3)).start()
    wait_placed(nodes, 3)
    nodes[2].stop()
    after = snapshot(nodes[2].data_dir, ids)
    assert read_applied(nodes[2].data_dir) == saved
    assert after == before
    nodes[2] = ServerThread(node_config(nats_cluster, tmp_path, "c", 3)).start()


def snapshot(data_dir: Path, ids: dict[str, int]) -> dict[str, bytes]:
    """Every point of ``ids`` held in ``data_dir`` (a stopped node's), as bytes."""
    engine = Engine.open(data_dir)
    try:
        out = {}
        for name, tag in ids.items():
            pts = engine.query(tag, -(2**62), 2**62)
            out[name] = pts.timestamps.tobytes() + pts.values.tobytes() + pts.qualities.tobytes()
        return out
    finally:
        engine.close()


@pytest.mark.parametrize("nodes", [{"http": True}], indirect=True)
def test_http_reads_reach_every_shard(nodes: list[ServerThread]) -> None:
    """InfluxQL through any node answers over every shard, not only the node's own."""
    hosts = [f"h{k}" for k in range(16)]  # 16 series over 6 shards: each node lacks some
    lines = [
        f"cpu,host={h} v={k}.5 {10**9 * (60 + j)}" for k, h in enumerate(hosts) for j in (0, 1)
    ]
    body = "\n".join(lines).encode()
    req = urllib.request.Request(http_url(nodes[0], "/write?precision=ns"), data=body)
    assert urllib.request.urlopen(req, timeout=30).status == 204
    query = urllib.parse.urlencode({"q": "SELECT v FROM cpu GROUP BY host", "epoch": "s"})
    deadline = time.monotonic() + 30
    while True:
        answers = []
        for srv in nodes:
            with urllib.request.urlopen(http_url(srv, f"/query?{query}"), timeout=30) as got:
                answers.append(json.loads(got.read()))
        series = answers[0]["results"][0].get("series", [])
        complete = sum(len(s["values"]) for s in series) == len(lines)
        if complete and all(a == answers[0] for a in answers):
            break
        assert time.monotonic() < deadline, f"answers differ or are missing points: {answers}"
        time.sleep(0.2)
    assert sorted(s["tags"]["host"] for s in series) == sorted(hosts)
    for s in series:
        k = hosts.index(s["tags"]["host"])
        assert s["values"] == [[60, k + 0.5], [61, k + 0.5]]
    # The console's views too: every node answers for every series, all alike.
    names = json.dumps([f"cpu,host={h}.v" for h in hosts])
    span = f"start={60 * 10**6}&end={62 * 10**6}"
    routes = [
        f"last?tags={names}",
        f"query?tags={names}&{span}",
        f"plot?tags={names}&{span}&width=10",
        f"aggregate?tags={names}&{span}&interval=1000000&aggregates=max,count",
    ]
    for route in routes:
        got = []
        for srv in nodes:
            url = http_url(srv, "/api/console/" + urllib.parse.quote(route, safe="=&?,:"))
            with urllib.request.urlopen(url, timeout=30) as answer:
                got.append(json.loads(answer.read()))
        assert got[0] == got[1] == got[2], route
    assert [p["point"]["value"] for p in got_last(nodes[2], names)] == [k + 0.5 for k in range(16)]

    # Each shard has 2 owners of 3: some node lacks some of these shards and answered for all.
    with Client(nodes[0].url) as c:
        st = c.cluster_status()
        shards = {c.tag(f"cpu,host={h}.v").id % SHARDS for h in hosts}
    assert any(srv.config.node_id not in st["owners"][str(s)] for srv in nodes for s in shards)


def got_last(srv: ServerThread, names: str) -> list[dict[str, Any]]:
    url = http_url(srv, "/api/console/last?tags=" + urllib.parse.quote(names))
    with urllib.request.urlopen(url, timeout=30) as answer:
        last: list[dict[str, Any]] = json.loads(answer.read())["last"]
    return last


def http_url(srv: ServerThread, path: str) -> str:
    return f"http://127.0.0.1:{srv.http_port}{path}"


def test_a_name_just_created_elsewhere_reads_at_once(nodes: list[ServerThread]) -> None:
    """Read your writes holds for a tag created through another node a moment before: a
    name this node does not know yet is looked up again once it applied the catalog log."""
    with Client(nodes[0].url, read_your_writes=True) as w, Client(nodes[2].url) as r:
        for k in range(40):
            name = f"fresh.{k}"
            w.write(name, np.array([5], np.int64), np.array([k + 0.5]))
            r._core.read_your_writes, r._core.last_seq = True, w._core.last_seq
            assert r.query(name, 0, 10).values.tolist() == [k + 0.5]
            assert r.tag(name).id == w.tag(name).id
        with pytest.raises(NotFound):
            r.query("never.made", 0, 10)


@pytest.mark.parametrize("nodes", [{"replication": 3}], indirect=True)
def test_a_replica_behind_the_log_copies_its_shards_from_a_peer(
    nodes: list[ServerThread], nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """Node c misses writes and deletes, then the log loses them (purged here, as aging
    would): on restart c copies each shard from a peer instead of serving a hole."""
    ts = np.arange(50, dtype=np.int64) * 1000
    with Client(nodes[0].url, read_your_writes=True) as c:
        for k in range(10):
            c.write(f"k{k}", ts, np.arange(50.0) + k)
        ids = {f"k{k}": c.tag(f"k{k}").id for k in range(10)}
    nodes[2].stop()
    with Client(nodes[0].url, read_your_writes=True) as c:
        c.delete("k1", 10_000, 30_000)  # frames node c never sees in the log
        c.write("k2", ts, np.full(50, -7.0))
        c.delete_tag("k3")
        c.write("k11", ts, np.full(50, 11.0))
        ids["k11"] = c.tag("k11").id
        c.rename_tag("k5", "k5.moved")  # node c learns it from the catalog on restart
        seq = c._core.last_seq
    asyncio.run(purge_log(nats_cluster, seq + 1))
    nodes[2] = ServerThread(node_config(nats_cluster, tmp_path, "c", 3)).start()
    wait_placed(nodes, 3)
    with Client(nodes[0].url, read_your_writes=True) as c:
        c.write("k4", np.array([10**6], np.int64), np.array([4.5]))  # after the copy: applied
        seq = c._core.last_seq
    with Client(nodes[2].url) as c:
        c._core.read_your_writes, c._core.last_seq = True, seq
        assert c.query("k4", 10**6, 10**6 + 1).values.tolist() == [4.5]
        assert c.tag("k5.moved").id == ids["k5"]
        with pytest.raises(NotFound):
            c.tag("k5")
    for srv in nodes:
        srv.stop()
    want = snapshot(nodes[0].data_dir, ids)
    assert snapshot(nodes[2].data_dir, ids) == want
    assert want["k3"] == b"" and len(want["k1"]) == 30 * 17 and want["k11"]


async def purge_log(nats: NatsCluster, keep_from: int) -> None:
    """Drop every frame of the write log before ``keep_from``, as --stream-max-age would."""
    conn = await nats_client.connect(servers=nats.urls)
    try:
        await conn.jetstream().purge_stream(STREAM, seq=keep_from)
        info = await conn.jetstream().stream_info(STREAM)
        assert info.state.first_seq == keep_from
    finally:
        await conn.close()
