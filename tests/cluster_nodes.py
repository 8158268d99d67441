"""Real xtsdb cluster nodes (``xtsdb-server --cluster``) on a real NATS cluster, for tests.

:class:`ClusterNodes` runs N ``python -m xtsdb.server --cluster ...`` children
(:class:`ServerProcess`) against a :class:`NatsCluster`, each on a fixed port
picked once (a restarted node keeps its address, so multi-host client URLs stay
valid) with its own data directory. Faults are injected per node, each by the
node's own pid: :meth:`kill9`, :meth:`restart`, :meth:`pause` (SIGSTOP),
:meth:`resume` (SIGCONT), :meth:`stop` (SIGTERM, a clean stop).

:meth:`wait_settled` waits until ``cluster_status`` shows every shard owned by
live nodes only, each owner with lag 0; :meth:`compare_replicas` stops every
node and compares, shard by shard, the replicas that applied the most, bit for
bit, opening their data directories in this process; :meth:`wait_readable`
reads through one node what :mod:`cluster_load`'s writers had acknowledged.
Every wait is bounded; every failure message ends with the nodes' log tails.
Tests use the ``cluster_nodes`` fixture (import ``cluster_nodes_fixture`` next
to ``nats_cluster_fixture``); bench scripts use the class.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cluster_load import ClusterError, Ledger, ShardCheck, check_points, compare_shard
from nats_harness import NatsCluster

from xtsdb.client import Client
from xtsdb.server.process import ServerProcess, flags, free_port

HOST = "127.0.0.1"
SMALL = {"chunk_size": "256KiB", "meta_extents": 1, "block_points": 1000, "workers": 0}


@dataclass
class Node:
    node_id: str
    port: int
    data_dir: Path
    proc: ServerProcess | None = None
    paused: bool = False

    @property
    def url(self) -> str:
        return f"xtsdb://{HOST}:{self.port}"

    @property
    def live(self) -> bool:
        """Running and not SIGSTOPped: what the cluster should count as a member."""
        return self.proc is not None and self.proc.running() and not self.paused


@dataclass
class Settled:
    """One ``cluster_status`` view in which every shard is owned by live nodes at lag 0."""

    status: dict[str, Any]
    owners: dict[int, list[str]] = field(default_factory=dict)
    applied: dict[int, int] = field(default_factory=dict)  # shard -> owners' applied seq


class ClusterNodes:
    """``size`` xtsdb nodes ``n1..nN`` in cluster mode on ``nats``, under ``root``."""

    def __init__(
        self,
        root: Path,
        nats: NatsCluster,
        size: int = 3,
        *,
        shards: int = 8,
        replication: int = 2,
        heartbeat: float = 0.5,
        extra: Sequence[str] = (),
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.root, self.nats = root, nats
        self.shards, self.replication, self.heartbeat = shards, replication, heartbeat
        self.extra = list(extra)
        self.settings = dict(SMALL if settings is None else settings)
        root.mkdir(parents=True, exist_ok=True)
        self.nodes = [Node(f"n{i + 1}", free_port(HOST), root / f"n{i + 1}") for i in range(size)]
        try:
            for i in range(size):  # all at once: the first creates the stream, others join
                self._spawn(i)
            for i in range(size):
                self._wait_ready(i)
        except BaseException:
            self.close()
            raise

    # -- addresses and clients -------------------------------------------------------
    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def multi_url(self, first: int = 0) -> str:
        """Every node in one URL, starting at node ``first`` (the rest in order after it)."""
        order = self.nodes[first:] + self.nodes[:first]
        return "xtsdb://" + ",".join(f"{HOST}:{n.port}" for n in order)

    def client(self, i: int, **kwargs: Any) -> Client:
        """A sync client of node ``i`` alone (default timeout 10 s)."""
        kwargs.setdefault("timeout", 10.0)
        return Client(self.nodes[i].url, **kwargs)

    def multi_client(self, first: int = 0, **kwargs: Any) -> Client:
        """A sync client given every node, connected to ``first`` if it answers."""
        kwargs.setdefault("timeout", 10.0)
        return Client(self.multi_url(first), **kwargs)

    def live(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.live]

    def pid(self, i: int) -> int:
        proc = self.nodes[i].proc
        assert proc is not None, f"node {self.nodes[i].node_id} is not running"
        return proc.pid

    # -- processes -------------------------------------------------------------------
    def args(self, i: int) -> list[str]:
        n = self.nodes[i]
        return [
            *("--cluster", self.nats.url_arg, "--node-id", n.node_id, "--host", HOST),
            *flags(port=n.port, data_dir=n.data_dir, heartbeat=self.heartbeat),
            *flags(shards=self.shards, replication=self.replication, **self.settings),
            "--auto-create-tags",
            *self.extra,
        ]

    def _spawn(self, i: int) -> None:
        n = self.nodes[i]
        n.proc, n.paused = ServerProcess(self.args(i), workdir=self.root, name=n.node_id), False

    def _wait_ready(self, i: int, timeout: float = 60.0) -> None:
        proc = self.nodes[i].proc
        assert proc is not None
        try:
            proc.wait_ready(timeout)
        except Exception as exc:
            raise ClusterError(f"node {self.nodes[i].node_id} did not join: {exc}") from None

    def start(self, i: int, wait: bool = True) -> None:
        """Start node ``i`` (not running) on its port and data directory."""
        proc = self.nodes[i].proc
        assert proc is None or not proc.running(), "already running"
        self._spawn(i)
        if wait:
            self._wait_ready(i)

    def kill9(self, i: int) -> None:
        """SIGKILL node ``i`` (a crash; a SIGSTOPped one too) and reap it."""
        n = self.nodes[i]
        assert n.proc is not None
        n.proc.kill9()
        n.proc.wait(10)
        n.paused = False

    def restart(self, i: int) -> None:
        """Kill node ``i`` if it runs, then start it again and wait until it joined."""
        proc = self.nodes[i].proc
        if proc is not None and proc.running():
            self.kill9(i)
        self.start(i)

    def pause(self, i: int) -> None:
        """SIGSTOP node ``i``: its sockets stay open, it answers nothing, no heartbeat."""
        n = self.nodes[i]
        assert n.proc is not None
        n.proc.send_signal(signal.SIGSTOP)
        n.paused = True

    def resume(self, i: int) -> None:
        n = self.nodes[i]
        assert n.proc is not None
        n.proc.send_signal(signal.SIGCONT)
        n.paused = False

    def stop(self, i: int, timeout: float = 30.0) -> int:
        """SIGTERM node ``i`` and wait: its exit code (0: a clean stop)."""
        n = self.nodes[i]
        assert n.proc is not None
        if n.paused:
            self.resume(i)
        return n.proc.stop(timeout)

    def stop_all(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM every running node at once (no shard moves to a node about to stop),
        then wait for each: node id -> exit code (a node still running after
        ``timeout`` is killed: -9)."""
        running = [n for n in self.nodes if n.proc is not None and n.proc.running()]
        for n in running:
            assert n.proc is not None
            if n.paused:
                n.proc.send_signal(signal.SIGCONT)
                n.paused = False
            n.proc.send_signal(signal.SIGTERM)  # once: a second one may land after the
            # loop removed its handler, and end the exiting process with -15
        codes = {}
        deadline = time.monotonic() + timeout
        for n in running:
            assert n.proc is not None
            try:
                codes[n.node_id] = n.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.proc.close()
                codes[n.node_id] = n.proc.wait()
        return codes

    def close(self) -> None:
        """Kill every node that still runs, each by its own pid."""
        for n in self.nodes:
            if n.proc is not None:
                if n.paused and n.proc.running():
                    n.proc.send_signal(signal.SIGCONT)
                n.proc.close()
                n.paused = False

    # -- diagnostics -----------------------------------------------------------------
    def logs(self, lines: int = 15) -> str:
        parts = []
        for n in self.nodes:
            tail = n.proc.log_tail(lines) if n.proc is not None else "(never started)"
            state = "live" if n.live else "paused" if n.paused else "down"
            parts.append(f"--- {n.node_id} ({state}) log tail:\n{tail}")
        return "\n".join(parts)

    def fail(self, message: str) -> ClusterError:
        return ClusterError(f"{message}\n{self.logs()}")

    def poll(self, what: str, check: Callable[[], Any], timeout: float, step: float = 0.1) -> Any:
        """``check()`` until it returns something true (returned), up to ``timeout`` s;
        exceptions count as not yet (the last one is in the failure message)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                got = check()
                if got:
                    return got
                last = got
            except Exception as exc:  # a node restarting, a forwarded read timing out
                last = exc
            if time.monotonic() > deadline:
                raise self.fail(f"{what}: not reached within {timeout} s (last: {last!r})")
            time.sleep(step)

    # -- cluster status --------------------------------------------------------------
    def status(self, i: int, timeout: float = 5.0) -> dict[str, Any]:
        with self.client(i, timeout=timeout) as c:
            return c.cluster_status()

    def check_settled(
        self, status: dict[str, Any], live: Sequence[str], lag: bool = True
    ) -> Settled | str:
        """A :class:`Settled` if ``status`` shows exactly the ``live`` members, each shard
        owned by ``min(replication, len(live))`` of them and (with ``lag``) every owner
        at lag 0 with the same applied sequence; else why not."""
        members = sorted(status.get("members") or {})
        if members != sorted(live):
            return f"members {members}, expected {sorted(live)}"
        owners = {int(s): list(o) for s, o in (status.get("owners") or {}).items()}
        replicas = {
            str(node): {int(s): e for s, e in shards.items()}
            for node, shards in (status.get("replicas") or {}).items()
        }
        got = Settled(status)
        want = min(self.replication, len(live))
        for shard in range(self.shards):
            own = owners.get(shard, [])
            if len(own) != want or not set(own) <= set(live):
                return f"shard {shard} owned by {own}"
            got.owners[shard] = own
            if not lag:
                continue
            seqs = set()
            for node in own:
                entry = replicas.get(node, {}).get(shard)
                if entry is None or int(entry.get("lag", -1)) != 0:
                    return f"shard {shard} on {node}: {entry}"
                seqs.add(int(entry["applied_seq"]))
            if len(seqs) != 1:
                return f"shard {shard}: owners applied {seqs}"
            got.applied[shard] = seqs.pop()
        return got

    def wait_settled(
        self, via: int | None = None, timeout: float = 30.0, lag: bool = True
    ) -> Settled:
        """Until node ``via`` (default: the first live one) shows the live nodes as the
        members, every shard owned by live nodes (with ``lag``: at lag 0; writes must
        have stopped), the same in two views one heartbeat apart (a stale report of
        lag 0 would change)."""
        live = [self.nodes[i].node_id for i in self.live()]
        node = self.live()[0] if via is None else via
        previous: list[Settled] = []

        def settled() -> Settled | None:
            got = self.check_settled(self.status(node), live, lag)
            if isinstance(got, str):
                previous.clear()
                raise ValueError(got)
            stable = bool(previous) and (previous[-1].owners, previous[-1].applied) == (
                got.owners,
                got.applied,
            )
            previous[:] = [got]
            return got if stable else None

        result: Settled = self.poll(
            f"cluster settled as seen by {self.nodes[node].node_id}",
            settled,
            timeout,
            step=self.heartbeat,
        )
        return result

    def wait_readable(
        self, i: int, ledger: Ledger, tags: Sequence[int], timeout: float = 30.0
    ) -> int:
        """Until every acknowledged point of ``tags`` reads back right through node ``i``
        (replicas apply asynchronously); the points read."""

        def readable() -> int:
            with self.client(i) as c:
                return check_points(c, ledger, tags) or 1  # 0 points read is still done

        try:
            got: int = self.poll(
                f"acked points readable via {self.nodes[i].node_id}", readable, timeout
            )
        except ClusterError as exc:
            raise ClusterError(f"{exc}\n--- status:\n{self.describe()}") from None
        return got

    def describe(self) -> str:
        """Each live node's view: members, and per shard its owners with applied/lag."""
        lines = []
        for i in self.live():
            try:
                st = self.status(i)
            except Exception as exc:
                lines.append(f"{self.nodes[i].node_id}: no status ({exc!r})")
                continue
            reps = st.get("replicas") or {}
            shards = [
                f"{s}: " + ", ".join(_replica(reps, n, s) for n in own)
                for s, own in sorted((int(k), v) for k, v in (st.get("owners") or {}).items())
            ]
            lines.append(
                f"{st.get('node')}: members {sorted(st.get('members') or {})}, stream last "
                f"{st.get('stream_last_seq')}; " + "; ".join(shards)
            )
        return "\n".join(lines)

    # -- replicas compared offline ---------------------------------------------------
    def compare_replicas(self, min_replicas: int | None = None) -> list[ShardCheck]:
        """Stop every node cleanly, then for each shard open the data directories of the
        nodes that applied the most of it and compare every tag of the shard bit for
        bit. Raises :class:`ClusterError` on a difference, or when fewer than
        ``min_replicas`` (default ``replication``) nodes applied the most of a shard."""
        from xtsdb.server.cluster.applied import read_applied
        from xtsdb.server.engine import Engine, EngineConfig

        codes = self.stop_all()
        if any(codes.values()):
            raise self.fail(f"a node did not stop cleanly: exit codes {codes}")
        applied = {n.node_id: read_applied(n.data_dir) for n in self.nodes}
        need = self.replication if min_replicas is None else min_replicas
        config = EngineConfig(read_workers=1, workers=0, compaction=False)
        engines = {n.node_id: Engine.open(n.data_dir, config) for n in self.nodes}
        try:
            checks = []
            for shard in range(self.shards):
                top = max(a.get(shard, 0) for a in applied.values())
                nodes = sorted(n for n, a in applied.items() if a.get(shard, 0) == top)
                if len(nodes) < need:
                    raise self.fail(f"shard {shard}: only {nodes} applied up to {top}: {applied}")
                check = ShardCheck(shard, top, nodes)
                compare_shard(check, [engines[n] for n in nodes], self.shards)
                checks.append(check)
            return checks
        finally:
            for eng in engines.values():
                eng.close()


def _replica(replicas: dict[str, Any], node: str, shard: int) -> str:
    e = (replicas.get(node) or {}).get(str(shard)) or {}
    return f"{node}@{e.get('applied_seq', '?')}/lag {e.get('lag', '?')}"


@pytest.fixture(name="cluster_nodes")
def cluster_nodes_fixture(tmp_path: Path, nats_cluster: NatsCluster) -> Iterator[ClusterNodes]:
    """3 started xtsdb nodes (8 shards, replication 2, heartbeat 0.5 s) on ``nats_cluster``."""
    nodes = ClusterNodes(tmp_path / "xtsdb", nats_cluster)
    try:
        yield nodes
    finally:
        nodes.close()
