"""The xtsdb cluster with real processes: 3 NATS servers, 3 xtsdb nodes, faults by pid.

Each test gets a fresh cluster (``cluster_nodes``: 8 shards, replication 2,
heartbeat 0.5 s) and checks the contract of docs/cluster.md from outside:
every acknowledged write is readable from every live node with its exact
value, a killed or stopped node's shards move and come back, replicas of a
shard end up bit for bit identical (compared offline after a clean stop).
Writers are threads with their own clients (:mod:`cluster_load`); a write
that raised is not counted as acknowledged. The longer loop is
bench/cluster_torture.py.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from cluster_load import (
    BASE_US,
    WRITER_STRIDE,
    ClusterError,
    Ledger,
    Writers,
    expected,
    stream_leader,
)
from cluster_nodes import ClusterNodes, Settled, cluster_nodes_fixture  # noqa: F401
from nats_harness import NatsCluster, nats_cluster_fixture  # noqa: F401

from xtsdb.protocol.errors import XtsdbError
from xtsdb.server.engine import Engine, EngineConfig

TAGS = 8  # over most of the 8 shards (ids follow the catalog log's sequence)

pytestmark = pytest.mark.timeout(120)


def named_tags(nodes: ClusterNodes, ledger: Ledger, count: int = TAGS) -> list[int]:
    """Tags ``c0..`` auto-created by writes of the same names through every node at
    once (each node's write a point of its own); their ids, checked equal on every node."""
    names = [f"c{k}" for k in range(count)]
    got: dict[tuple[int, str], object] = {}

    def create(i: int) -> None:
        with nodes.client(i) as c:
            for k, name in enumerate(names):
                ts = np.array([BASE_US - 1 - 8 * k - i], np.int64)
                try:
                    c.write(name, ts, *expected(ts))
                    got[i, name] = (c.tag(name).id, ts)
                except Exception as exc:
                    got[i, name] = exc

    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(nodes.nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    failed = {key: v for key, v in got.items() if isinstance(v, Exception)}
    assert not failed, nodes.fail(f"named writes failed: {failed}")
    ids = []
    for name in names:
        seen = {got[i, name][0] for i in range(len(nodes.nodes))}  # type: ignore[index]
        assert len(seen) == 1, nodes.fail(f"{name} got ids {seen} through different nodes")
        ids.append(seen.pop())
        for i in range(len(nodes.nodes)):
            tag, ts = got[i, name]  # type: ignore[misc]
            ledger.record(tag, ts, None)
    for i in range(len(nodes.nodes)):  # and every node's catalog agrees, by name
        with nodes.client(i) as c:
            assert [c.tag(n).id for n in names] == ids, nodes.fail(f"node {i} disagrees")
    return ids


def begin(nodes: ClusterNodes) -> tuple[Ledger, list[int], Settled]:
    """A ledger, the named tags (recorded in it) and the settled placement."""
    ledger = Ledger()
    tags = named_tags(nodes, ledger)
    return ledger, tags, nodes.wait_settled()


def replicas_identical(nodes: ClusterNodes, ledger: Ledger) -> None:
    """Stop every node; each shard's replicas identical, holding every acked point."""
    checks = nodes.compare_replicas()
    assert sum(c.points for c in checks) >= ledger.acked_points


def multi_tag_reads(nodes: ClusterNodes, i: int, ledger: Ledger, tags: list[int]) -> None:
    """``last`` and ``aggregate`` over every tag through node ``i`` (split by owner and
    merged in request order): each tag's newest point and its count and maximum."""
    with nodes.client(i) as c:
        latest = c.last(tags)
        agg = c.aggregate(tags, 0, 1 << 62, 1 << 61, ["count", "max"])
    assert latest.tags.tolist() == tags, nodes.fail(f"last via node {i}: {latest.tags}")
    for k, tag in enumerate(tags):
        ts = ledger.points(tag)
        values, q = expected(ts)
        assert latest.timestamps[k] == ts[-1], f"last of tag {tag} via node {i}"
        assert latest.values[k] == values[-1] and latest.qualities[k] == q[-1]
        assert int(agg[tag]["count"].sum()) == ts.size, f"count of tag {tag} via node {i}"
        assert np.nanmax(agg[tag]["max"]) == values.max(), f"max of tag {tag} via node {i}"


def test_writes_through_each_node_readable_from_every_node(cluster_nodes: ClusterNodes) -> None:
    nodes, ledger = cluster_nodes, Ledger()
    tags = named_tags(nodes, ledger)
    assert len({t % nodes.shards for t in tags}) >= 3, tags  # spread over shards and owners
    writers = Writers(nodes.urls, tags, batch=50, max_writes=40, seconds=30, ledger=ledger)
    assert writers.start().join().failed == 0, ledger.errors
    assert ledger.ok == 3 * 40 + 3 * len(tags)
    for i in range(3):
        assert nodes.wait_readable(i, ledger, tags) == ledger.acked_points
        multi_tag_reads(nodes, i, ledger, tags)
    nodes.wait_settled()
    checks = nodes.compare_replicas()
    assert sum(c.points for c in checks) == ledger.acked_points
    # The comparison sees one value changed offline in one replica of a shard.
    shard = next(c for c in checks if c.points)
    tag = next(t for t in tags if t % nodes.shards == shard.shard)
    victim = next(n for n in nodes.nodes if n.node_id == shard.nodes[-1])
    with Engine.open(victim.data_dir, EngineConfig(workers=0, compaction=False)) as eng:
        eng.write(tag, ledger.points(tag)[:1], [0.5], [192])
    with pytest.raises(ClusterError, match=f"tag {tag}: values differ"):
        nodes.compare_replicas()


def test_kill9_node_under_writers(cluster_nodes: ClusterNodes) -> None:
    nodes = cluster_nodes
    ledger, tags, _ = begin(nodes)
    urls = [nodes.multi_url(w) for w in range(3)]  # writer w starts on node w
    writers = Writers(urls, tags, max_writes=3_000, seconds=30, ledger=ledger).start()
    assert writers.wait_acks(30, 15), ledger.errors
    nodes.kill9(2)
    assert writers.wait_acks(60, 20), nodes.fail(f"no writes after the kill: {ledger.errors}")
    writers.stop()
    for i in (0, 1):
        nodes.wait_readable(i, ledger, tags)
    nodes.wait_settled()  # the survivors own every shard
    nodes.restart(2)
    nodes.wait_settled(via=2)
    nodes.wait_readable(2, ledger, tags)
    replicas_identical(nodes, ledger)


def test_kill9_nats_servers_under_writers(
    cluster_nodes: ClusterNodes, nats_cluster: NatsCluster
) -> None:
    """The NATS server leading the stream killed under writers: writes come back on
    the other two. A second one killed: no quorum, every node refuses writes at
    once. Both restarted: writes through every node come back. Nothing acked lost."""
    nodes = cluster_nodes
    ledger, tags, _ = begin(nodes)
    first = stream_leader(nats_cluster)  # the stream must elect another leader
    writers = Writers(nodes.urls, tags, max_writes=4_000, seconds=40, ledger=ledger).start()
    assert writers.wait_acks(30, 15), ledger.errors
    nats_cluster.kill(first)
    # Writes may fail during the election; they must succeed again, boundedly.
    assert writers.wait_acks(60, 25), nodes.fail(f"no writes after the kill: {ledger.errors}")
    writers.stop()
    second = (first + 1) % 3
    nats_cluster.kill(second)  # 1 of 3: the stream cannot store anything
    for i in range(3):
        ts = BASE_US + 6 * WRITER_STRIDE + 10 * i + np.arange(10)
        with nodes.client(i, timeout=15) as c, pytest.raises(XtsdbError):
            c.write(tags[i], ts, *expected(ts))
        ledger.record(tags[i], ts, XtsdbError("refused"))
    nats_cluster.restart(first, wait=False)  # writes are the test of their return
    nats_cluster.restart(second, wait=False)

    def write_each(k: int) -> bool:
        for i in range(3):
            ts = BASE_US + 7 * WRITER_STRIDE + 100 * k + 10 * i + np.arange(10)
            with nodes.client(i, timeout=5) as c:
                c.write(tags[i], ts, *expected(ts))
            ledger.record(tags[i], ts, None)
        return True

    tries = iter(range(1000))
    nodes.poll(
        "writes through every node after the NATS servers returned",
        lambda: write_each(next(tries)),
        30,
    )
    for i in range(3):
        nodes.wait_readable(i, ledger, tags)
    nodes.wait_settled()
    replicas_identical(nodes, ledger)


def test_sigstop_node_loses_its_shards_and_catches_up(cluster_nodes: ClusterNodes) -> None:
    nodes = cluster_nodes
    ledger, tags, before = begin(nodes)
    assert any("n3" in own for own in before.owners.values()), before.owners
    stuck = nodes.client(2, timeout=2)  # connected before the stop
    nodes.pause(2)
    stopped_at = time.monotonic()
    writers = Writers(nodes.urls[:2], tags, max_writes=3_000, seconds=30, ledger=ledger).start()
    # A write sent to the stopped node is not acknowledged (it may be stored later:
    # the ledger counts it as tried, not acked).
    ts = BASE_US + 3 * WRITER_STRIDE + np.arange(5)
    with pytest.raises(XtsdbError):
        stuck.write(tags[0], ts, *expected(ts))
    ledger.record(tags[0], ts, XtsdbError("unanswered"))
    stuck.close()
    moved = nodes.wait_settled(via=0, timeout=20, lag=False)  # n3 gone: shards on n1, n2
    assert time.monotonic() - stopped_at > 3 * nodes.heartbeat
    assert all("n3" not in own for own in moved.owners.values()), moved.owners
    assert writers.wait_acks(40, 20), nodes.fail(f"writes stalled: {ledger.errors}")
    writers.stop()
    for i in (0, 1):
        nodes.wait_readable(i, ledger, tags)
    nodes.resume(2)
    back = nodes.wait_settled(via=2)
    assert back.owners == before.owners  # the same members give the same placement
    with nodes.client(2) as c:  # it takes writes again
        ts = BASE_US + 4 * WRITER_STRIDE + np.arange(5)
        assert c.write(tags[1], ts, *expected(ts)) == 5
        ledger.record(tags[1], ts, None)
    nodes.wait_readable(2, ledger, tags)
    nodes.wait_readable(0, ledger, tags)
    nodes.wait_settled()
    replicas_identical(nodes, ledger)


def test_read_your_writes(cluster_nodes: ClusterNodes) -> None:
    """50 times: a write, then at once a read of it by the same client, which carries
    the write's sequence; half through the one node that does not own the tag's
    shard (the read is forwarded to an owner), half through an owner."""
    nodes = cluster_nodes
    _, tags, settled = begin(nodes)
    owners = settled.owners
    clients = [nodes.client(i, read_your_writes=True) for i in range(3)]
    ids = [n.node_id for n in nodes.nodes]
    try:
        deadline = time.monotonic() + 30
        for k in range(50):
            assert time.monotonic() < deadline, f"only {k} of 50 in 30 s"
            tag = tags[k % len(tags)]
            own = owners[tag % nodes.shards]
            other = next(i for i, n in enumerate(ids) if n not in own)
            c = clients[other if k % 2 else ids.index(own[k % len(own)])]
            ts = BASE_US + 5 * WRITER_STRIDE + np.array([k], np.int64)
            values, q = expected(ts)
            assert c.write(tag, ts, values, q) == 1
            got = c.query(tag, int(ts[0]), int(ts[0]) + 1)
            where = f"write {k} through {c.url}, tag {tag} owned by {own}"
            assert np.array_equal(got.timestamps, ts), nodes.fail(f"{where}: not read back")
            assert got.values.view(np.uint64)[0] == values.view(np.uint64)[0], where
            assert got.qualities[0] == q[0], where
    finally:
        for c in clients:
            c.close()
