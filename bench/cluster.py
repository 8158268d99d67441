"""Cluster mode on this machine: ingest and query rates of 3 NATS + 3 xtsdb nodes
against one single node in the same run, replica lag under load, and where the
time goes.

Phases, each on fresh processes, all on 127.0.0.1:

1. ``nats``: the JetStream publish rate alone (nats-py, a 3-replica stream on the
   same 3-server NATS cluster the xtsdb nodes use), frames as large as the
   write batches: the ceiling of the cluster's ingest on this machine.
2. ``single``: one ``xtsdb-server``, the same writes and queries.
3. ``cluster``: 3 ``xtsdb-server --cluster`` nodes (64 shards, replication 2,
   tests/cluster_nodes.py) on a 3-server NATS cluster: the same writes through
   one node (one client), then as many again through all 3 (one client each);
   during each, ``cluster_status`` is polled for the largest replica lag, and
   after it the time until every replica has applied all is measured; then the
   same queries through one node (its own shards and forwarded ones).

For every phase, the CPU seconds of each process (``/proc/PID/stat``: utime +
stime of every nats-server and xtsdb node with its workers, and of this
process, the clients), so the table shows CPU per million points by role; a
cluster ingest's CPU runs until every replica has applied (a single node's
ends with its last WAL commit too), and its notes give each process's share.
Results are appended to ``bench/results/cluster.txt`` with the load average.

    .venv/bin/python -m bench.cluster --quick        # smoke: 200 K points
    .venv/bin/python -m bench.cluster                # 2 M points, 20 tags
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # `bench` and the NATS harness of the tests
from cluster_nodes import ClusterNodes  # noqa: E402
from nats_harness import NatsCluster  # noqa: E402

from xtsdb.client import Client  # noqa: E402
from xtsdb.server.process import ServerProcess, flags  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
SIZES = {"chunk_size": "4MiB", "block_points": 10_000}
RESULTS = ROOT / "bench" / "results" / "cluster.txt"


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` so far with its children: its own utime + stime, that of
    children it reaped (cutime + cstime), and each live descendant's (the server's
    worker processes); 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    total = sum(int(x) for x in fields[11:15]) / TICK
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        total += sum(cpu_seconds(int(child)) for child in children)
    return total


@dataclass
class Phase:
    name: str
    points: int = 0
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # role -> CPU seconds
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.points / self.seconds if self.seconds else 0.0


@contextmanager
def measured(phase: Phase, procs: dict[str, list[int]]) -> Iterator[None]:
    """Wall time of the block into ``phase.seconds``; CPU per role into ``phase.cpu``
    (the clients: this process alone, whose children are the servers)."""
    before = {role: sum(map(cpu_seconds, ps)) for role, ps in procs.items()}
    own, t0 = time.process_time(), time.perf_counter()
    yield
    phase.seconds = time.perf_counter() - t0
    for role, ps in procs.items():
        phase.cpu[role] = sum(map(cpu_seconds, ps)) - before[role]
    phase.cpu["clients (this process)"] = time.process_time() - own


Items = list[tuple[int, Any, Any, None]]


def batches(tags: list[int], points: int, batch: int, start: int = 0) -> Items:
    """``points`` per tag (1 s apart, from ``start`` s after 1.7e9 s), in write items of
    ``batch`` points, tags interleaved."""
    items = []
    for lo in range(start, start + points, batch):
        s = np.arange(lo, min(start + points, lo + batch), dtype=np.int64) + 1_700_000_000
        ts = s * 1_000_000
        items += [(tag, ts, np.sin(ts / 1e9) + tag, None) for tag in tags]
    return items


def create_tags(url: str, count: int) -> list[int]:
    """Tags ``b0..`` made by a first write each (a cluster's catalog is shared); their ids."""
    ids = []
    with Client(url, timeout=60) as c:
        for k in range(count):
            c.write(f"b{k}", [0], [0.0])  # at 1970: outside every range the phases query
            ids.append(c.tag(f"b{k}").id)
    return ids


def ingest(urls: list[str], items: list[tuple[int, Any, Any, None]]) -> int:
    """Write ``items`` over one client per URL, in parallel threads; points acknowledged."""
    parts = [items[i :: len(urls)] for i in range(len(urls))]
    done = [0] * len(urls)

    def run(i: int) -> None:
        with Client(urls[i], timeout=120, max_in_flight=8) as c:
            done[i] = c.write_many(parts[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(urls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def query_all(url: str, tags: list[int], reps: int, points: int) -> int:
    """The first ``points`` of every tag's writes, ``reps`` times; points received."""
    got, end = 0, (1_700_000_000 + points) * 1_000_000
    with Client(url, timeout=120) as c:
        for _ in range(reps):
            for tag in tags:
                got += len(c.query(tag, 1, end))
    return got


async def publish_rate(
    urls: list[str], frames: int, size: int, window: int, stream: str
) -> tuple[int, float]:
    """JetStream alone: ``frames`` of ``size`` bytes to a 3-replica stream, at most
    ``window`` unacknowledged; (frames acked, seconds)."""
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(urls)
    try:
        js = nc.jetstream(timeout=30)
        subject = f"bench.{stream}"
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{subject}.>"], num_replicas=3))
        payload = os.urandom(size)
        acked = 0
        t0 = time.perf_counter()
        for lo in range(0, frames, window):
            n = min(window, frames - lo)
            subjects = [f"{subject}.{(lo + k) % 64}" for k in range(n)]  # one per shard
            acks = await asyncio.gather(*(js.publish(s, payload) for s in subjects))
            acked += len(acks)
        return acked, time.perf_counter() - t0
    finally:
        await nc.close()


def start_node(work: Path, name: str, *extra: str) -> ServerProcess:
    args = flags(port=0, http_port=0, data_dir=work / name, **SIZES)
    srv = ServerProcess([*args, "--auto-create-tags", *extra], workdir=work, name=name)
    srv.wait_ready(120)
    return srv


def lags(status: dict[str, Any]) -> list[int]:
    """Every replica's lag in frames as ``status`` reports it (-1: not known yet)."""
    return [
        int(entry.get("lag", 0))
        for shards in (status.get("replicas") or {}).values()
        for entry in shards.values()
        if isinstance(entry, dict)
    ]


def poll_lag(url: str, stop: threading.Event, seen: list[int]) -> None:
    """The largest replica lag every 0.2 s until ``stop``."""
    with Client(url, timeout=30) as c:
        while not stop.wait(0.2):
            seen.append(max(lags(c.cluster_status()), default=0))


def wait_caught_up(url: str, timeout: float) -> float:
    """Seconds until every replica has applied the whole log (lag 0 everywhere)."""
    t0 = time.perf_counter()
    with Client(url, timeout=30) as c:
        while any(lag != 0 for lag in lags(c.cluster_status())):
            if time.perf_counter() - t0 > timeout:
                return float("inf")
            time.sleep(0.1)
    return time.perf_counter() - t0


def phase_nats(work: Path, args: argparse.Namespace) -> list[Phase]:
    """The publish rate with frames of a write batch, and of a tenth of one (the
    cost per frame against the cost per byte)."""
    phases = []
    nats = NatsCluster(work / "nats-baseline")
    try:
        for batch in (args.batch, max(1, args.batch // 10)):
            phase = Phase(f"nats publish (R3), {batch:,}-point frames")
            frames, size = args.tags * args.points // batch, batch * 17 + 64
            with measured(phase, {"nats-server x3": nats.pids()}):
                acked, _ = asyncio.run(publish_rate(nats.urls, frames, size, 64, f"B{batch}"))
            phase.points = acked * batch
            phase.notes.append(f"{acked:,} frames of {size:,} B, 64 in flight")
            phases.append(phase)
    finally:
        nats.close()
    return phases


def phase_single(work: Path, args: argparse.Namespace) -> list[Phase]:
    write, read = Phase("single node: ingest"), Phase("single node: query")
    srv = start_node(work, "single")
    try:
        tags = create_tags(srv.url, args.tags)
        roles = {"xtsdb node": [srv.pid]}
        with measured(write, roles):
            write.points = ingest([srv.url], batches(tags, args.points, args.batch))
        with measured(read, roles):
            read.points = query_all(srv.url, tags, args.reps, args.points)
    finally:
        srv.close()
    return [write, read]


def cluster_ingest(
    phase: Phase, nodes: ClusterNodes, urls: list[str], items: Items, roles: dict[str, list[int]]
) -> None:
    """Write ``items`` through ``urls``, sampling the largest replica lag meanwhile, until
    every replica has applied everything: the rate is of the acknowledgements, the
    CPU is until caught up (a single node's ingest CPU too ends with its last WAL
    commit), with each process's share in a note."""
    stop, seen = threading.Event(), [0]
    poller = threading.Thread(target=poll_lag, args=(nodes.urls[0], stop, seen))
    each = {f"{role.split()[0]} {k}": pid for role, ps in roles.items() for k, pid in enumerate(ps)}
    before = {name: cpu_seconds(pid) for name, pid in each.items()}
    poller.start()
    try:
        with measured(phase, roles):
            t0 = time.perf_counter()
            phase.points = ingest(urls, items)
            acked = time.perf_counter() - t0
            stop.set()
            poller.join()
            caught_up = wait_caught_up(nodes.urls[0], 300)
    finally:
        stop.set()
        poller.join()
    phase.seconds = acked
    per_m = phase.points / 1e6
    shares = ", ".join(f"{n} {(cpu_seconds(p) - before[n]) / per_m:.2f}" for n, p in each.items())
    phase.notes.append(f"largest lag cluster_status reported during the load: {max(seen):,} frames")
    phase.notes.append(f"every replica caught up {caught_up:.2f} s after the last ack")
    phase.notes.append(f"CPU s per M points by process, until caught up: {shares}")


def phase_cluster(work: Path, args: argparse.Namespace) -> list[Phase]:
    one = Phase("cluster: ingest via 1 node (1 client)")
    three = Phase("cluster: ingest via 3 nodes (3 clients)")
    read = Phase("cluster: query via 1 node")
    nats = NatsCluster(work / "nats")
    nodes: ClusterNodes | None = None
    try:
        settings = {**SIZES, "http_port": 0}
        nodes = ClusterNodes(work / "xtsdb", nats, shards=64, heartbeat=1.0, settings=settings)
        nodes.wait_settled(timeout=60)
        tags = create_tags(nodes.urls[0], args.tags)
        roles = {"nats-server x3": nats.pids(), "xtsdb node x3": [nodes.pid(i) for i in range(3)]}
        cluster_ingest(one, nodes, nodes.urls[:1], batches(tags, args.points, args.batch), roles)
        later = batches(tags, args.points, args.batch, start=args.points)
        cluster_ingest(three, nodes, nodes.urls, later, roles)
        with measured(read, roles):  # from one node: its own shards and forwarded ones
            read.points = query_all(nodes.urls[0], tags, args.reps, args.points)
    finally:
        if nodes is not None:
            nodes.close()
        nats.close()
    return [one, three, read]


def report(phases: list[Phase], header: str) -> list[str]:
    lines = [header, ""]
    head = ("phase", "points", "seconds", "points/s", "CPU s per M points, by process")
    rows = [head]
    for p in phases:
        per_m = ", ".join(
            f"{role} {cpu / (p.points / 1e6):.2f}" for role, cpu in p.cpu.items() if p.points
        )
        rows.append((p.name, f"{p.points:,}", f"{p.seconds:.2f}", f"{p.rate:,.0f}", per_m))
    w = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines += ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    for p in phases:
        lines += [f"  {p.name}: {note}" for note in p.notes]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 K points (smoke run)")
    ap.add_argument("--tags", type=int, default=20)
    ap.add_argument("--points", type=int, default=100_000, help="per tag")
    ap.add_argument("--batch", type=int, default=10_000, help="points per write item")
    ap.add_argument("--reps", type=int, default=3, help="query passes over every tag")
    ap.add_argument("--phases", default="nats,single,cluster")
    ap.add_argument("--no-save", action="store_true", help=f"do not append to {RESULTS}")
    args = ap.parse_args(argv)
    if args.quick:
        args.tags, args.points, args.reps = 10, 20_000, 1
    run: dict[str, Callable[[Path], list[Phase]]] = {
        "nats": lambda w: phase_nats(w, args),
        "single": lambda w: phase_single(w, args),
        "cluster": lambda w: phase_cluster(w, args),
    }
    phases: list[Phase] = []
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="xtsdb-cluster-bench-") as tmp:
        for name in args.phases.split(","):
            (Path(tmp) / name).mkdir()
            phases += run[name](Path(tmp) / name)
            load.append(os.getloadavg())
    header = (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.tags} tags x "
        f"{args.points:,} points, batches of {args.batch:,}; load average (1 min) "
        + " -> ".join(f"{x[0]:.2f}" for x in load)
        + f"; {os.cpu_count()} CPUs"
    )
    lines = report(phases, header)
    print("\n".join(lines))
    if not args.no_save and not args.quick:
        with RESULTS.open("a") as f:
            f.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
