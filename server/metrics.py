"""Prometheus metrics of one server, in a registry of its own (never the global one).

Two kinds of figures, each with exactly one owner:

- **Measured when they happen**, by prometheus_client instruments here,
  because nothing else records them: the latency of every request by op
  (:class:`RequestObserver`, which also writes the slow-request log line) and
  of every group commit (:class:`TimedWriter`, wrapped around the engine the
  write queue calls).
- **Counted anyway** by the engine, the write queue and the connections --
  the figures the ``stats`` op returns. :class:`StatsCollector` reads them at
  scrape time and turns them into metric families, so no counter is kept
  twice and ``xtsdb stats`` and ``/metrics`` can never disagree.

A scrape (:meth:`Metrics.render`) runs in a worker thread, since
``Engine.stats()`` walks every block; the figures owned by the event loop
(connections, queue) are snapshotted on the loop first and handed in.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from xtsdb.protocol.errors import ERROR_CLASSES
from xtsdb.server.engine.wal_records import WriteBatch
from xtsdb.server.write_queue import BatchWriter

log = logging.getLogger("xtsdb.server")

try:
    VERSION = metadata.version("xtsdb")
except metadata.PackageNotFoundError:  # pragma: no cover - a bare checkout
    VERSION = "0+unknown"

_ERROR_CODES = {cls.name: code for code, cls in ERROR_CLASSES.items()}

# stats() key -> (metric name, help). Counters get "_total" appended by the exposition.
ENGINE_COUNTERS = {
    "points_written": ("xtsdb_points_written", "Points committed to the WAL (acknowledged)."),
    "write_batches": ("xtsdb_write_batches", "Write requests committed to the WAL."),
    "wal_commits": ("xtsdb_wal_commits", "Group commits: one WAL write and one fsync each."),
    "blocks_written": ("xtsdb_blocks_flushed", "Blocks sealed from MemBuffers into containers."),
    "blocks_read": ("xtsdb_blocks_read", "Blocks read and decoded by queries."),
    "blocks_skipped": ("xtsdb_blocks_skipped", "Blocks of a queried tag skipped by time range."),
    "blocks_summarised": (
        "xtsdb_blocks_summarised",
        "Blocks an aggregate answered from their summaries, without decoding them.",
    ),
    "checkpoints": ("xtsdb_checkpoints", "Checkpoints written (WAL before them recyclable)."),
    "seal_errors": ("xtsdb_seal_errors", "Failed attempts to seal MemBuffers into blocks."),
    "blocks_merged": ("xtsdb_blocks_compacted", "Merged blocks written by compaction."),
    "blocks_compacted": (
        "xtsdb_blocks_retired_by_compaction",
        "Blocks and tombstones compaction superseded (read, merged and retired).",
    ),
}
ENGINE_GAUGES = {
    "memory_points": ("xtsdb_membuffer_points", "Points in MemBuffers, not yet in blocks."),
    "wal_bytes": ("xtsdb_wal_bytes", "Bytes in live WAL segments."),
    "tags": ("xtsdb_tags", "Tags with data."),
    "blocks": ("xtsdb_blocks", "Blocks on disk."),
    "block_points": ("xtsdb_block_points", "Points stored in blocks."),
    "block_bytes": ("xtsdb_block_bytes", "Compressed bytes of block bodies."),
    "wal_last_lsn": ("xtsdb_wal_last_lsn", "LSN of the newest WAL record."),
    "checkpoint_lsn": ("xtsdb_checkpoint_lsn", "LSN up to which every point is in blocks."),
}
SERVER_COUNTERS = {
    "connections_total": ("xtsdb_connections_accepted", "Connections accepted."),
    "connections_refused": ("xtsdb_connections_refused", "Connections refused at the cap."),
    "connections_idle_closed": ("xtsdb_connections_idle_closed", "Idle connections closed."),
    "failed_commits": ("xtsdb_commits_failed", "Group commits that failed (nothing acked)."),
    "read_pauses": ("xtsdb_read_pauses", "Times a socket stopped being read (backpressure)."),
    "queue_pauses": ("xtsdb_write_queue_pauses", "Times the write queue filled up."),
    "writes_refused": ("xtsdb_writes_refused", "Writes refused alone at commit (reject policy)."),
    "partial_refused": ("xtsdb_partial_refused", "Requests refused: max_partial_bytes spent."),
}
SERVER_GAUGES = {
    "connections": ("xtsdb_connections", "Open client connections."),
    "inflight_requests": ("xtsdb_inflight_requests", "Requests being worked on."),
    "pending_bytes": ("xtsdb_pending_bytes", "Bytes of requests received, not yet answered."),
    "queue_depth": ("xtsdb_write_queue_depth", "Writes waiting for the next group commit."),
    "queue_bytes": ("xtsdb_write_queue_bytes", "Bytes of writes waiting for their commit."),
    "readers_paused": ("xtsdb_readers_paused", "Connections not being read (backpressure)."),
    "partial_bytes": ("xtsdb_partial_bytes", "Bytes reserved by requests still arriving."),
    "answers_waiting": ("xtsdb_answers_waiting", "Requests waiting to start (unread answers)."),
}
DATA_AREAS = {
    "wal": ("wal",),
    "containers": ("containers",),
    "index": ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"),
}
"""Disk usage is reported per area of the data directory: its files and directories."""

# Seconds. A request may wait for a group commit or scan for long; a commit is one fsync.
REQUEST_BUCKETS = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
    *(0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
COMMIT_BUCKETS = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025),
    *(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


class StatsSource(Protocol):
    def stats(self) -> dict[str, Any]: ...


class Metrics:
    """The registry, its instruments, and the sources read at scrape time."""

    def __init__(self, data_dir: Path) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "xtsdb_request_duration_seconds",
            "Time from a request's arrival to its response being ready, by op "
            "(a write includes waiting for its group commit).",
            ["op"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "xtsdb_commit_duration_seconds",
            "One group commit: WAL write, fsync (durability=fsync) and apply to memory.",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.commit_writes = Histogram(
            "xtsdb_commit_writes",
            "Write requests sharing one group commit.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 100),
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)  # CPU, RSS, open fds, start time
        self.collector = StatsCollector(data_dir)
        self.registry.register(self.collector)
        self._render_lock = threading.Lock()

    def attach(self, engine: StatsSource) -> None:
        """From now on scrapes report ``engine``'s figures (once recovery has finished)."""
        self.collector.engine = engine

    def detach(self) -> None:
        self.collector.engine = None

    def timed(self, engine: BatchWriter) -> TimedWriter:
        return TimedWriter(engine, self)

    def observer(self, slow_query_ms: float) -> RequestObserver:
        return RequestObserver(self, slow_query_ms)

    def render(self, server_stats: Mapping[str, Any] | None, ready: bool) -> bytes:
        """The exposition text; ``server_stats`` is the snapshot taken on the event loop."""
        with self._render_lock:  # the snapshot is handed to the collector for this scrape only
            self.collector.server = server_stats
            self.collector.ready = ready
            try:
                return generate_latest(self.registry)
            finally:
                self.collector.server = None


class TimedWriter:
    """The engine as the write queue sees it, with each group commit timed."""

    def __init__(self, engine: BatchWriter, metrics: Metrics) -> None:
        self._engine = engine
        self._seconds = metrics.commit_seconds
        self._writes = metrics.commit_writes

    def write_batches(self, batches: list[WriteBatch]) -> int:
        started = time.perf_counter()
        try:
            return self._engine.write_batches(batches)
        finally:
            self._seconds.observe(time.perf_counter() - started)
            self._writes.observe(len(batches))


_SHOWN_FIELDS = ("tag", "start", "end", "limit")
_NEVER_SLOW = frozenset({"backup"})  # takes minutes by nature: a warning would be noise


class RequestObserver:
    """Called by the service with each finished request: latency histogram + slow log."""

    def __init__(self, metrics: Metrics, slow_query_ms: float) -> None:
        self._hist = metrics.request_seconds
        self._slow = slow_query_ms / 1000.0

    def __call__(self, op: str, msg: Mapping[str, Any], seconds: float) -> None:
        self._hist.labels(op).observe(seconds)
        if 0 < self._slow <= seconds and op not in _NEVER_SLOW:
            fields = {k: msg[k] for k in _SHOWN_FIELDS if isinstance(msg.get(k), int | str)}
            ts = msg.get("ts")
            if isinstance(ts, bytes | bytearray | memoryview):
                fields["points"] = len(ts) // 8  # int64 timestamps
            shown = "".join(f" {k}={v}" for k, v in fields.items())
            ms = round(seconds * 1e3, 1)
            extra = {"event": "slow_request", "op": op, "duration_ms": ms, **fields}
            log.warning("slow request: %s took %.0f ms%s", op, ms, shown, extra=extra)


class StatsCollector(Collector):
    """Metric families made at scrape time from the owners' own counters."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.engine: StatsSource | None = None
        self.server: Mapping[str, Any] | None = None
        self.ready = False

    def describe(self) -> list[Metric]:
        return []  # names vary with what is attached; nothing to check for clashes up front

    def collect(self) -> Iterator[Metric]:
        yield _gauge(
            "xtsdb_ready", "1 once recovery finished and writes are accepted.", float(self.ready)
        )
        version = [([VERSION], 1.0)]
        yield _labelled(
            GaugeMetricFamily, "xtsdb_build_info", "The xtsdb version.", ["version"], version
        )
        yield _labelled(
            GaugeMetricFamily,
            "xtsdb_disk_bytes",
            "Bytes allocated on disk (as du counts them: container files are sparse), by area.",
            ["area"],
            (([area], _allocated(self.data_dir, names)) for area, names in DATA_AREAS.items()),
        )
        engine = self.engine
        if engine is not None:
            stats = engine.stats()
            yield from _families(stats, ENGINE_COUNTERS, ENGINE_GAUGES)
            yield _labelled(
                CounterMetricFamily,
                "xtsdb_points_read",
                "Points returned by queries, by where they came from.",
                ["source"],
                (([src], stats.get(f"points_from_{src}", 0)) for src in ("disk", "memory")),
            )
            failed = float(bool(stats.get("failed")))
            yield _gauge(
                "xtsdb_engine_failed", "1 if the engine refuses writes after a failure.", failed
            )
        server = self.server
        if server is not None:
            yield from _families(server, SERVER_COUNTERS, SERVER_GAUGES)
            yield _labelled(
                CounterMetricFamily,
                "xtsdb_requests",
                "Requests received, by op.",
                ["op"],
                (([op], n) for op, n in _items(server.get("requests"))),
            )
            yield _labelled(
                CounterMetricFamily,
                "xtsdb_errors",
                "Error responses sent, by error code.",
                ["code", "name"],
                (
                    ([str(_ERROR_CODES.get(name, 1)), name], n)
                    for name, n in _items(server.get("errors"))
                ),
            )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _families(
    stats: Mapping[str, Any],
    counters: Mapping[str, tuple[str, str]],
    gauges: Mapping[str, tuple[str, str]],
) -> Iterator[Metric]:
    """One unlabelled family per stat the tables name, counters then gauges."""
    tables = ((counters, CounterMetricFamily), (gauges, GaugeMetricFamily))
    for table, kind in tables:
        for key, (name, doc) in table.items():
            value = stats.get(key)
            # Tolerant on purpose: a renamed or missing stat drops one metric, not the scrape.
            if isinstance(value, int | float) and not isinstance(value, bool):
                yield kind(name, doc, value=float(value))


def _labelled(
    kind: Callable[..., CounterMetricFamily | GaugeMetricFamily],
    name: str,
    doc: str,
    labels: list[str],
    samples: Iterable[tuple[list[str], float]],
) -> Metric:
    """One family with a sample per set of label values."""
    family = kind(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, float(value))
    return family


def _items(value: Any) -> Iterator[tuple[str, float]]:
    if isinstance(value, Mapping):
        for key, n in sorted(value.items()):
            if isinstance(n, int | float):
                yield str(key), float(n)


def _allocated(data_dir: Path, names: tuple[str, ...]) -> int:
    """Bytes allocated to ``names`` under ``data_dir`` (files, or directories walked)."""
    total = 0
    for name in names:
        path = data_dir / name
        try:
            if path.is_dir():
                with os.scandir(path) as it:
                    total += sum(e.stat().st_blocks * 512 for e in it if e.is_file())
            elif path.exists():
                total += path.stat().st_blocks * 512
        except OSError:  # a WAL segment recycled under us: skip it this scrape
            continue
    return total
