"""Several servers behind one client: failover after kill -9, with real processes.

Two single-node ``xtsdb-server`` subprocesses (no NATS needed) and a client
given both. The server the client is on is killed with SIGKILL; the client
goes on with the other. A write in flight at the kill is made deterministic by
SIGSTOPping the server first (the request is sent and never answered), then
killing it: without ``retry_writes`` that write is reported, with it the write
is resent on the other server. Every acknowledged point is checked on the
servers, the killed one restarted on its data directory.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from xtsdb.client import AsyncClient, Client
from xtsdb.client._hosts import Hosts, parse_targets, split_hosts
from xtsdb.protocol.errors import InvalidInput, XtsdbConnectionError
from xtsdb.server.process import ServerProcess

SMALL = ["--chunk-size", "256KiB", "--meta-extents", "1", "--block-points", "1000"]
TAG = 7


def start(tmp_path: Path, name: str) -> ServerProcess:
    args = ["--port", "0", "--http-port", "0", "--data-dir", str(tmp_path / name), *SMALL]
    srv = ServerProcess(args, workdir=tmp_path, name=name)
    srv.wait_ready()
    return srv


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    servers = [start(tmp_path, "a"), start(tmp_path, "b")]
    try:
        yield servers
    finally:
        for srv in servers:
            srv.close()


def url_of(servers: list[ServerProcess]) -> str:
    return "xtsdb://" + ",".join(f"{s.host}:{s.port}" for s in servers)


def on(srv: ServerProcess) -> str:
    return f"xtsdb://{srv.host}:{srv.port}"


def stored(srv: ServerProcess) -> np.ndarray:
    with Client(on(srv)) as c:
        return np.asarray(c.query(TAG, 0, 1 << 40).timestamps).copy()


def batch(i: int, n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    ts = i * n + np.arange(n, dtype=np.int64)
    return ts, ts * 0.5


def write_into_a_dead_server(client: Client, srv: ServerProcess, ts: np.ndarray) -> list[object]:
    """``client.write`` of ``ts`` sent to a stopped ``srv``, which is then killed:
    what the write returned or raised."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(client.write(TAG, ts, ts * 0.5))
        except Exception as exc:
            outcome.append(exc)

    srv.send_signal(signal.SIGSTOP)
    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)  # the frame is in the stopped server's socket buffer, unanswered
    assert not outcome, "a stopped server answered"
    srv.send_signal(signal.SIGCONT)  # kill9 of a stopped process works, but be plain about it
    srv.kill9()
    srv.wait(10)
    t.join(20)
    assert not t.is_alive()
    return outcome


def test_kill_9_the_server_in_use_client_goes_on_with_the_other(
    pair: list[ServerProcess], tmp_path: Path
) -> None:
    a, b = pair
    with Client(url_of(pair), timeout=5) as client:
        assert client.url == on(a)  # the first that answers, in the order given
        ts0, v0 = batch(0)
        assert client.write(TAG, ts0, v0) == 100
        ts1, _ = batch(1)
        outcome = write_into_a_dead_server(client, a, ts1)
        # Not retried without retry_writes: the caller is told, nothing is hidden.
        assert len(outcome) == 1 and isinstance(outcome[0], XtsdbConnectionError), outcome
        ts2, v2 = batch(2)
        assert client.write(TAG, ts2, v2) == 100  # the next call fails over to b
        assert client.url == on(b) and client.reconnects == 1
        got = client.query(TAG, 0, 1 << 40)  # reads go on, from b
        np.testing.assert_array_equal(got.timestamps, ts2)
        np.testing.assert_array_equal(got.values, v2)
    revived = start(tmp_path, "a")  # the acknowledged batch 0 is on a, durable
    try:
        np.testing.assert_array_equal(stored(revived)[:100], ts0)
    finally:
        revived.close()


def test_retry_writes_resends_the_lost_write_on_the_other_server(pair: list[ServerProcess]) -> None:
    a, b = pair
    with Client(url_of(pair), timeout=5, retry_writes=True) as client:
        ts, _ = batch(3)
        outcome = write_into_a_dead_server(client, a, ts)
        assert outcome == [100]
        assert client.url == on(b)
    np.testing.assert_array_equal(stored(b), ts)


def test_write_point_batches_lost_with_the_server_are_reported(pair: list[ServerProcess]) -> None:
    """Points in flight when the server dies: the flush after them raises; every point
    of a flush that returned is stored on one of the servers."""
    a, b = pair
    flushed: list[np.ndarray] = []
    failures = 0
    with Client(url_of(pair), timeout=5, batch_size=50, flush_interval=10) as client:
        for i in range(12):
            ts, _ = batch(i)
            if i == 4:  # batches of 50 go out as points come; a is stopped with them unacked
                a.send_signal(signal.SIGSTOP)
            for t in ts.tolist():
                client.write_point(TAG, t, t * 0.5)
            if i == 4:
                time.sleep(0.3)
                a.send_signal(signal.SIGCONT)
                a.kill9()
                a.wait(10)
            try:
                client.flush()
                flushed.append(ts)
            except XtsdbConnectionError:
                failures += 1
    assert failures >= 1, "the batches lost with a were not reported"
    assert len(flushed) >= 12 - failures and flushed[-1][0] == 1100
    on_b = stored(b)
    assert np.isin(np.concatenate(flushed[4:]), on_b).all()


async def test_async_client_fails_over(pair: list[ServerProcess]) -> None:
    a, b = pair
    client = await AsyncClient.connect([on(a), on(b)], timeout=5)
    try:
        ts, v = batch(0)
        assert await client.write(TAG, ts, v) == 100
        a.kill9()
        a.wait(10)
        await asyncio.sleep(0.1)  # the loop sees the connection closed
        ts2, v2 = batch(1)
        assert await client.write(TAG, ts2, v2) == 100
        assert client.url == on(b) and client.reconnects == 1
        got = await client.query(TAG, 0, 1 << 40)
        np.testing.assert_array_equal(got.timestamps, ts2)
    finally:
        await client.close()


def test_every_server_down_is_an_error_naming_the_last(pair: list[ServerProcess]) -> None:
    for srv in pair:
        srv.kill9()
        srv.wait(10)
    with pytest.raises(XtsdbConnectionError, match=f"{pair[1].port}"):
        Client(url_of(pair), timeout=2)


def test_host_lists_parse_and_order() -> None:
    assert split_hosts("xtsdb://:t@h1:1,h2:2") == ["xtsdb://:t@h1:1", "xtsdb://:t@h2:2"]
    targets = parse_targets(["xtsdb://h1:1,h2", "xtsdb://h3:3"])
    assert [(t.host, t.port) for t in targets] == [("h1", 1), ("h2", 7878), ("h3", 3)]
    for bad in ("xtsdb://h1:1,,h2:2", "xtsdb://h1:1,h1:1", "xtsdb://h1:x,h2:2"):
        with pytest.raises(InvalidInput):
            parse_targets(bad)
    with pytest.raises(InvalidInput, match="one scheme"):
        parse_targets(["xtsdb://h1:1", "xtsdbs://h2:2"])
    with pytest.raises(InvalidInput, match="one token"):
        parse_targets(["xtsdb://:a@h1:1", "xtsdb://:b@h2:2"])
    with pytest.raises(InvalidInput, match="no server"):
        parse_targets([])
    hosts = Hosts(parse_targets("xtsdb://h0:1,h1:1,h2:1"))
    assert hosts.order() == [0, 1, 2]  # as given
    hosts.use(1)
    assert hosts.order() == [2, 0, 1]  # after a loss: the others first, the lost one last
    shuffled = {tuple(t.host for t in Hosts(targets, shuffle=True).targets) for _ in range(50)}
    assert len(shuffled) > 1
