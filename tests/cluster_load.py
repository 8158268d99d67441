"""Load for the cluster tests: writers that keep an exact ledger, and the check of it.

:class:`Writers` write from threads, each through its own (multi-host) client,
under faults, and record in a :class:`Ledger` every write attempted and exactly
those acknowledged (a write that raised is not counted: it may or may not be
stored). :func:`check_points` reads tags back through one client: every
acknowledged point there, nothing that was never written, every value and
quality bit for bit (:func:`expected`). :class:`cluster_nodes.ClusterNodes`
polls it until replicas have applied; bench/cluster_torture.py uses both.
:func:`compare_shard` compares a shard's replicas opened offline;
:func:`stream_leader` names the NATS server to kill for a leader election.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from xtsdb.client import Client

if TYPE_CHECKING:
    from nats_harness import NatsCluster

NO_TIME = (0, 1 << 62)  # every timestamp a test writes


class ClusterError(AssertionError):
    """A wait that ran out or a check that failed; the message ends with the log tails."""


BASE_US = 1_700_000_000_000_000
WRITER_STRIDE = 1_000_000_000  # writer w writes timestamps BASE_US + w * stride + k


def expected(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The value and quality written at ``ts`` (timestamps are unique across tags and
    writers, so a point read back under the wrong tag shows up as one never written):
    full-mantissa values and both Good and Bad qualities, checked bit for bit."""
    values = np.sin(ts.astype(np.float64) * 1e-7) * 1000.0
    return values, np.where(ts % 7 == 0, 0, 192).astype(np.uint8)


@dataclass
class Ledger:
    """What writers sent: every attempted write and exactly those acknowledged."""

    acked: dict[int, list[np.ndarray]] = field(default_factory=dict)
    tried: dict[int, list[np.ndarray]] = field(default_factory=dict)
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # the last few, for messages
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, tag: int, ts: np.ndarray, error: Exception | None) -> None:
        with self.lock:
            self.tried.setdefault(tag, []).append(ts)
            if error is None:
                self.acked.setdefault(tag, []).append(ts)
                self.ok += 1
            else:
                self.failed += 1
                self.errors[:] = [*self.errors[-4:], f"{type(error).__name__}: {error}"]

    def points(self, tag: int, acked: bool = True) -> np.ndarray:
        with self.lock:
            parts = list((self.acked if acked else self.tried).get(tag, []))
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)

    @property
    def acked_points(self) -> int:
        with self.lock:
            return sum(len(ts) for parts in self.acked.values() for ts in parts)


class Writers:
    """One thread per URL writing ``batch``-point writes to ``tags`` in turn (distinct
    timestamps per writer), one each ``pace`` s, until :meth:`stop`, ``max_writes``
    each or ``seconds``.
    A write that raises is counted failed (it may or may not be stored) and the
    client fails over on the next one; nothing is retried."""

    def __init__(
        self,
        urls: Sequence[str],
        tags: Sequence[int],
        *,
        batch: int = 20,
        max_writes: int = 2_000,
        seconds: float = 60.0,
        timeout: float = 5.0,
        ledger: Ledger | None = None,
        first_k: int = 0,
        pace: float = 0.01,
    ) -> None:
        self.urls, self.tags, self.batch = list(urls), list(tags), batch
        self.max_writes, self.seconds, self.timeout = max_writes, seconds, timeout
        self.ledger = ledger or Ledger()
        self.first_k = first_k  # a later round goes on after an earlier one's timestamps
        self.pace = pace  # seconds between a writer's writes: the load lasts until stopped
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(w,), daemon=True)
            for w in range(len(self.urls))
        ]

    def start(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def join(self) -> Ledger:
        """Wait until every writer is done by itself (``max_writes`` or ``seconds``)."""
        for t in self._threads:
            t.join(self.seconds + 4 * self.timeout)
            assert not t.is_alive(), "a writer did not end"
        return self.ledger

    def stop(self) -> Ledger:
        self._stop.set()
        for t in self._threads:
            t.join(self.seconds + 4 * self.timeout)
            assert not t.is_alive(), "a writer did not stop"
        return self.ledger

    def wait_acks(self, more: int, timeout: float) -> bool:
        """Whether ``more`` writes were acknowledged after this call within ``timeout`` s."""
        goal, deadline = self.ledger.ok + more, time.monotonic() + timeout
        while self.ledger.ok < goal and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.ledger.ok >= goal

    def _run(self, w: int) -> None:
        deadline = time.monotonic() + self.seconds
        client: Client | None = None
        try:
            for k in range(self.first_k, self.first_k + self.max_writes):
                if self._stop.wait(self.pace) or time.monotonic() > deadline:
                    return
                tag = self.tags[(w + k) % len(self.tags)]
                ts = BASE_US + w * WRITER_STRIDE + k * self.batch + np.arange(self.batch)
                values, q = expected(ts)
                try:
                    client = client or Client(self.urls[w], timeout=self.timeout)
                    client.write(tag, ts, values, q)
                except Exception as exc:
                    self.ledger.record(tag, ts, exc)
                    time.sleep(0.05)  # not a busy loop while no node answers
                else:
                    self.ledger.record(tag, ts, None)
        finally:
            if client is not None:
                client.close()


def check_points(client: Client, ledger: Ledger, tags: Sequence[int]) -> int:
    """Every acknowledged point of ``tags`` read through ``client``, nothing that was
    never written, every value and quality bit for bit; the points read."""
    seen = 0
    for tag in tags:
        got = client.query(tag, *NO_TIME)
        ts = np.asarray(got.timestamps)
        missing = np.setdiff1d(ledger.points(tag), ts)
        if missing.size:
            raise ClusterError(f"tag {tag}: {missing.size} acknowledged points missing")
        stray = np.setdiff1d(ts, ledger.points(tag, acked=False))
        if stray.size:
            raise ClusterError(f"tag {tag}: {stray.size} points that were never written")
        values, q = expected(ts)
        if not np.array_equal(np.asarray(got.values).view(np.uint64), values.view(np.uint64)):
            raise ClusterError(f"tag {tag}: values differ from those written")
        if not np.array_equal(np.asarray(got.qualities), q):
            raise ClusterError(f"tag {tag}: qualities differ from those written")
        seen += ts.size
    return seen


@dataclass
class ShardCheck:
    """What :meth:`ClusterNodes.compare_replicas` compared for one shard."""

    shard: int
    applied: int
    nodes: list[str]
    tags: int = 0
    points: int = 0


def stream_leader(nats: NatsCluster, stream: str = "XTSDB_LOG") -> int:
    """The index of the running NATS server leading ``stream`` (0 if none says)."""
    names = [s.name for s in nats.servers]
    for i, srv in enumerate(nats.servers):
        if srv.proc is None:
            continue
        for acc in nats.monitor(i, "/jsz?streams=true").get("account_details") or []:
            for info in acc.get("stream_detail") or []:
                leader = (info.get("cluster") or {}).get("leader")
                if info.get("name") == stream and leader in names:
                    return names.index(leader)
    return 0


def compare_shard(check: ShardCheck, engines: list[Any], shards: int) -> None:
    """Every tag of ``check.shard`` (in any of the engines' catalogs) identical in all."""
    ids = sorted({t.id for e in engines for t in e.catalog.all() if t.id % shards == check.shard})
    for tag in ids:
        first = engines[0].query(tag, *NO_TIME)
        for eng, name in zip(engines[1:], check.nodes[1:], strict=True):
            other = eng.query(tag, *NO_TIME)
            for col in ("timestamps", "values", "qualities"):
                a, b = getattr(first, col), getattr(other, col)
                same = a.shape == b.shape and bool(
                    np.array_equal(a.view(np.uint8), b.view(np.uint8))
                )
                if not same:
                    raise ClusterError(
                        f"shard {check.shard} tag {tag}: {col} differ between "
                        f"{check.nodes[0]} ({a.shape[0]} points) and {name} ({b.shape[0]})"
                    )
        check.tags += 1
        check.points += int(first.timestamps.shape[0])
