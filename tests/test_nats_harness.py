"""The NATS harness itself: a stream with 3 replicas keeps acknowledging with one
server killed, and the server, restarted on its ports and store dir, catches up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NoStreamResponseError
from nats_harness import NatsCluster, nats_cluster_fixture  # noqa: F401


def local_last_seq(cluster: NatsCluster, i: int, stream: str) -> int:
    """The last sequence of ``stream`` in server ``i``'s own store (its monitoring
    view), not the leader's answer a client request would get."""
    jsz: dict[str, Any] = cluster.monitor(i, "/jsz?accounts=true&streams=true")
    for account in jsz.get("account_details") or []:
        for s in account.get("stream_detail") or []:
            if s["name"] == stream:
                return int(s["state"]["last_seq"])
    return 0


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


async def publish(js: JetStreamContext, subject: str, data: bytes) -> int:
    """Publish until JetStream acks: while a stream elects a new leader after its old
    one died, requests get no responder; the payload is the same each retry, so a
    retry the stream did store shows as a skipped sequence, which the test would see."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return int((await js.publish(subject, data, timeout=2)).seq)
        except (NoStreamResponseError, NoRespondersError, NatsTimeout):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_replicated_stream_survives_a_killed_server(nats_cluster: NatsCluster) -> None:
    cluster = nats_cluster
    assert len(cluster.urls) == 3 and cluster.url_arg == ",".join(cluster.urls)
    nc = await nats.connect(cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        js = nc.jetstream(timeout=10)
        await js.add_stream(StreamConfig(name="H", subjects=["h.>"], num_replicas=3))
        for n in range(10):
            assert await publish(js, "h.a", b"%d" % n) == n + 1

        info = await js.stream_info("H")  # kill the stream's leader: the hard case
        assert info.cluster is not None and info.cluster.leader is not None
        victim = int(info.cluster.leader.removeprefix("n"))
        cluster.kill(victim)
        assert cluster.servers[victim].proc is None
        for n in range(10, 20):  # the two left are a quorum: they elect, store and ack
            assert await publish(js, "h.a", b"%d" % n) == n + 1
        alive = [i for i in range(3) if i != victim]
        wait_for(lambda: all(local_last_seq(cluster, i, "H") == 20 for i in alive))

        cluster.restart(victim)
        wait_for(lambda: local_last_seq(cluster, victim, "H") == 20)
        info = await js.stream_info("H")
        assert info.state.messages == 20
        msg = await js.get_msg("H", 15)
        assert msg.data == b"14"
    finally:
        await nc.close()


def test_stop_and_cont(nats_cluster: NatsCluster) -> None:
    """A SIGSTOPped server stops answering its monitoring port; SIGCONT brings it back."""
    cluster = nats_cluster
    cluster.stop(0)
    try:
        cluster.monitor(0, "/varz", timeout=0.3)
        raise AssertionError("a stopped server answered")
    except OSError:
        pass
    cluster.cont(0)
    assert cluster.monitor(0, "/varz")["server_name"] == "n0"
