"""Cluster torture: kill -9 an xtsdb node, then a NATS server, then both, in rounds,
under concurrent writers, for a bounded time; every acknowledged point checked.

3 NATS servers (JetStream, R3 stream) and 3 xtsdb nodes on 127.0.0.1, started by
the test harnesses (tests/nats_harness.py, tests/cluster_nodes.py). Each round:

1. writers (one thread per node, each with a multi-host client starting on its
   node, batches of ``--batch`` points) run; once some writes are acknowledged,
   the round's fault: ``node`` (SIGKILL one xtsdb node), ``nats`` (SIGKILL the
   NATS server leading the stream), ``both`` (one of each at once); victims
   rotate;
2. the writers go on until more writes are acknowledged after the fault (the
   cluster kept or regained its write path), then stop; "writes back s" is the
   time from the fault to the first write acknowledged after it (by any writer);
3. every point acknowledged so far (all rounds) is read back through every
   surviving node: present, with the value and quality written, nothing that
   was never written;
4. the victims restart; the catch-up time is from the restart until
   ``cluster_status`` shows every shard owned by live nodes at lag 0; then the
   restarted node is checked as in 3.

At the end every node is stopped cleanly and the replicas of each shard are
compared bit for bit (``ClusterNodes.compare_replicas``). A table is printed
and appended to ``bench/results/cluster.txt``; mismatches must be 0.

    .venv/bin/python -m bench.cluster_torture               # 120 s
    .venv/bin/python -m bench.cluster_torture --seconds 30
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]  # the harnesses of the tests
import numpy as np  # noqa: E402
from cluster_load import BASE_US, ClusterError, Ledger, Writers, expected, stream_leader  # noqa: E402
from cluster_nodes import ClusterNodes  # noqa: E402
from nats_harness import NatsCluster  # noqa: E402

FAULTS = ("node", "nats", "both")
ROUND_K = 1_000_000  # each round's writers start past every earlier round's timestamps
RESULTS = ROOT / "bench" / "results" / "cluster.txt"


@dataclass
class Round:
    number: int
    fault: str
    victims: str = ""
    acked: int = 0
    failed: int = 0
    points: int = 0
    mismatches: int = 0
    outage: float = float("nan")  # from the fault to the next acknowledged write
    catch_up: float = float("nan")


def check(
    nodes: ClusterNodes, which: list[int], ledger: Ledger, tags: list[int], row: Round
) -> None:
    """Every acknowledged point through each node of ``which``; a failure is a mismatch."""
    for i in which:
        try:
            row.points += nodes.wait_readable(i, ledger, tags, timeout=60)
        except ClusterError as exc:
            row.mismatches += 1
            print(f"round {row.number}: {exc}", file=sys.stderr)


def one_round(
    n: int, nodes: ClusterNodes, nats: NatsCluster, ledger: Ledger, tags: list[int], batch: int
) -> Round:
    row = Round(n, FAULTS[n % len(FAULTS)])
    ok0, failed0 = ledger.ok, ledger.failed
    urls = [nodes.multi_url(w) for w in range(len(nodes.nodes))]
    writers = Writers(urls, tags, batch=batch, max_writes=2_000, seconds=60, ledger=ledger)
    writers.first_k = n * ROUND_K
    writers.start()
    try:
        if not writers.wait_acks(20, 30):
            row.mismatches += 1
            print(f"round {n}: no write acknowledged before the fault", file=sys.stderr)
        node = n // len(FAULTS) % len(nodes.nodes)
        server = stream_leader(nats)
        if row.fault in ("node", "both"):
            nodes.kill9(node)
            row.victims += f"{nodes.nodes[node].node_id} "
        if row.fault in ("nats", "both"):
            nats.kill(server)
            row.victims += f"nats{server}"
        faulted = time.perf_counter()
        back = writers.wait_acks(1, 30)  # by any writer: a node kill stops one of them
        row.outage = time.perf_counter() - faulted if back else float("nan")
        if not (back and writers.wait_acks(40, 30)):  # writes must come back, boundedly
            row.mismatches += 1
            print(f"round {n}: writes did not resume: {ledger.errors}", file=sys.stderr)
    finally:
        writers.stop()
    row.acked, row.failed = ledger.ok - ok0, ledger.failed - failed0
    check(nodes, nodes.live(), ledger, tags, row)
    t0 = time.perf_counter()
    if row.fault in ("nats", "both"):
        nats.restart(server)
    if row.fault in ("node", "both"):
        nodes.restart(node)
    try:
        nodes.wait_settled(timeout=120)
        row.catch_up = time.perf_counter() - t0
    except ClusterError as exc:
        row.mismatches += 1
        print(f"round {n}: did not settle: {exc}", file=sys.stderr)
    if row.fault in ("node", "both"):
        check(nodes, [node], ledger, tags, row)
    return row


def table(rows: list[Round]) -> list[str]:
    head = ("round", "fault", "victims", "acked", "failed", "points checked", "mismatches")
    out = [(*head, "writes back s", "catch-up s")]
    for r in rows:
        nums = (f"{r.acked:,}", f"{r.failed:,}", f"{r.points:,}", str(r.mismatches))
        times = (f"{r.outage:.2f}", f"{r.catch_up:.2f}")
        out.append((str(r.number), r.fault, r.victims.strip(), *nums, *times))
    w = [max(len(r[i]) for r in out) for i in range(len(out[0]))]
    return ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in out]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="start no round after this")
    ap.add_argument("--max-rounds", type=int, default=100)
    ap.add_argument("--tags", type=int, default=8)
    ap.add_argument("--batch", type=int, default=20, help="points per write")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--no-save", action="store_true", help=f"do not append to {RESULTS}")
    args = ap.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = [os.getloadavg()[0]]
    rows: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="xtsdb-cluster-torture-") as tmp:
        nats = NatsCluster(Path(tmp) / "nats")
        nodes: ClusterNodes | None = None
        try:
            nodes = ClusterNodes(Path(tmp) / "xtsdb", nats, shards=args.shards)
            nodes.wait_settled()
            ledger = Ledger()
            tags = make_tags(nodes, ledger, args.tags)
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.seconds and len(rows) < args.max_rounds:
                rows.append(one_round(len(rows), nodes, nats, ledger, tags, args.batch))
                print("\n".join(table(rows)[-1:]), flush=True)
            checks = nodes.compare_replicas()
            compared = f"{len(checks)} shards, {sum(c.points for c in checks):,} points"
            same = "identical"
        except ClusterError as exc:
            compared, same = "not compared", f"FAILED: {exc}"
        finally:
            if nodes is not None:
                nodes.close()
            nats.close()
    load.append(os.getloadavg()[0])
    lines = table(rows)
    total = sum(r.mismatches for r in rows) + (same != "identical")
    lines += [
        f"rounds {len(rows)}, writes acked {sum(r.acked for r in rows):,}, failed "
        f"{sum(r.failed for r in rows):,}, points checked {sum(r.points for r in rows):,}, "
        f"mismatches {total}",
        f"replicas compared after a clean stop: {compared}: {same}",
        f"load average (1 min) {load[0]:.2f} -> {load[1]:.2f}; {os.cpu_count()} CPUs",
    ]
    print("\n".join(lines))
    if not args.no_save:
        with RESULTS.open("a") as f:
            head = f"bench.cluster_torture, {started}, --seconds {args.seconds:.0f}:"
            f.write("\n".join([head, "", *lines]) + "\n\n")
    return 1 if total else 0


def make_tags(nodes: ClusterNodes, ledger: Ledger, count: int) -> list[int]:
    """Tags ``t0..`` auto-created by a first point each through node 0; their ids."""
    ids = []
    with nodes.client(0) as c:
        for k in range(count):
            ts = np.array([BASE_US - 1 - k], np.int64)
            c.write(f"t{k}", ts, *expected(ts))
            ids.append(c.tag(f"t{k}").id)
            ledger.record(ids[-1], ts, None)
    return ids


if __name__ == "__main__":
    sys.exit(main())
