"""Crash torture: kill -9 the server under concurrent writers, restart, check every ack.

    .venv/bin/python -m bench.torture --rounds 300           # long mode
    .venv/bin/python -m bench.torture --rounds 5 --seed 7    # what tests/test_torture.py runs
    .venv/bin/python -m bench.torture --durability none      # acks without fsync (process crash)

Each round starts ``xtsdb-server`` as a subprocess on the same data directory with
tiny engine sizes (64 KiB chunks, 1 meta extent, 200-point blocks, 32 KiB WAL
segments, a checkpoint every 96 KiB of WAL), so block flushes, chunk seals, WAL
rotations and checkpoints happen many times a second; a kill at a random moment
therefore lands in the middle of one of them most of the time. Several writer
threads (SDK clients) write single-tag and interleaved multi-tag frames and record
a point only after its write was acknowledged. After the kill the next round's
server must hold:

- every acknowledged point, with its exact value and quality;
- nothing else but points that were sent, every one with the value and quality
  it was sent with;
- each write whose acknowledgement never came (in flight at the kill) either
  whole or not at all: a request is one WAL record;
- a ``last`` per tag equal to the newest point a query returns.

The value and quality of a point are functions of ``(tag, ts)``, so a point that
comes back can be checked without knowing which write carried it. Timestamps of
a tag never repeat, so "later write wins" cannot hide a lost point. The data
directory is kept when a round fails. Exit status 0 if every round passed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a file: make `bench` and the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import grid
from xtsdb.client import Client
from xtsdb.protocol.errors import XtsdbError
from xtsdb.server.process import ServerProcess, ServerStartError, flags, server_env

TINY_SIZES: dict[str, object] = {
    "chunk_size": "64KiB",
    "meta_extents": 1,
    "block_points": 200,
    "wal_segment_bytes": "32KiB",
    "wal_checkpoint_bytes": "96KiB",
    "read_workers": 1,
    "query_threads": 2,
}
TINY = flags(**TINY_SIZES)
TAGS_PER_WRITER = 3
START_TIMEOUT = 30.0
BIG = 1 << 60
REPAIR_KINDS = {  # log text -> short name, for the report
    "torn tail": "WAL torn tail cut",
    "torn segment header": "WAL torn segment header",
    "torn after the checkpoint": "block torn after checkpoint",
    "index rebuilt": "index rebuilt",
    "directory entry": "directory entry damaged",
    "seal record torn": "seal record torn",
}


Writes = list[list[tuple[int, np.ndarray]]]  # per write: (tag, timestamps) of each part


def value_of(tag: int, ts: np.ndarray) -> np.ndarray:
    return ts * 0.25 + tag


def quality_of(tag: int, ts: np.ndarray) -> np.ndarray:
    return ((ts * 7 + tag) % 256).astype(np.uint8)


class Failure(AssertionError):
    pass


@dataclass
class TagLog:
    """What was sent to one tag: timestamps ``0..sent-1``; ``acked`` marks the acknowledged."""

    sent: int = 0
    acked: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    present: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # as last verified

    def ack(self, ts: np.ndarray) -> None:
        if self.acked.size < self.sent:
            grown = np.zeros(max(self.sent, 2 * self.acked.size), bool)
            grown[: self.acked.size] = self.acked
            self.acked = grown
        self.acked[ts] = True


@dataclass
class Report:
    rounds: int = 0
    acked_points: int = 0
    acked_writes: int = 0
    unanswered: int = 0  # writes in flight at a kill: each found whole or not at all
    repairs: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    failure: str = ""
    data_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failure

    def table(self) -> str:
        rows = [
            ("rounds (kill -9, restart, check)", str(self.rounds)),
            ("acknowledged writes", f"{self.acked_writes:,}"),
            ("acknowledged points, all found exact", f"{self.acked_points:,}"),
            ("writes in flight at a kill, each whole or absent", f"{self.unanswered:,}"),
            *((f"repair: {k}", str(n)) for k, n in sorted(self.repairs.items())),
            ("seconds", f"{self.seconds:.1f}"),
            ("result", "PASS" if self.ok else f"FAIL: {self.failure}"),
        ]
        return grid(rows)


class Server(ServerProcess):
    """A ready server on ``data_dir`` (``sizes``), its output appended to ``log``.

    :class:`Failure` if it does not start. No metrics HTTP port: servers side by
    side must not fight over the default one.
    """

    def __init__(
        self, data_dir: Path, log: Path, extra: list[str], sizes: list[str] = TINY
    ) -> None:
        args = ["--port", "0", "--data-dir", str(data_dir), *sizes, *extra]
        env = server_env(XTSDB_HTTP_PORT="-1")
        super().__init__(args, workdir=data_dir.parent, name="torture", log_file=log, env=env)
        try:
            self.wait_ready(START_TIMEOUT)
        except ServerStartError as exc:
            self.close()
            raise Failure(f"server did not start: {exc}") from exc


class Writer(threading.Thread):
    """Writes until told to stop or the server dies; records acks only after they arrive."""

    def __init__(self, url: str, tags: list[int], logs: dict[int, TagLog], seed: int) -> None:
        super().__init__(daemon=True)
        self.url, self.tags, self.logs = url, tags, logs
        self.rng = np.random.default_rng(seed)
        self.stop = threading.Event()
        self.acked_writes = self.acked_points = 0
        self.error: BaseException | None = None
        self.in_flight: list[tuple[int, np.ndarray]] = []  # (tag, ts) of the unanswered write

    def run(self) -> None:
        try:
            with Client(self.url, timeout=10) as db:
                while not self.stop.is_set():
                    self.write_once(db)
        except (XtsdbError, OSError):
            return  # the server was killed: whatever was in flight was not acknowledged
        except BaseException as exc:  # a harness bug: reported by the main thread
            self.error = exc

    def write_once(self, db: Client) -> None:
        k = int(self.rng.integers(1, len(self.tags) + 1))
        tags = [int(t) for t in self.rng.choice(self.tags, k, replace=False)]
        parts = []
        for tag in tags:
            log = self.logs[tag]
            n = int(self.rng.integers(1, 300))
            ts = np.arange(log.sent, log.sent + n, dtype=np.int64)
            log.sent += n  # sent (maybe stored) from here on, acknowledged or not
            parts.append((np.full(n, tag, np.uint32), ts))
        tag_col = np.concatenate([p[0] for p in parts])
        ts_col = np.concatenate([p[1] for p in parts])
        if len(parts) > 1:  # interleave the tags in one frame: one WAL record, all or nothing
            order = self.rng.permutation(ts_col.size)
            tag_col, ts_col = tag_col[order], ts_col[order]
        values = ts_col * 0.25 + tag_col
        q = ((ts_col * 7 + tag_col) % 256).astype(np.uint8)
        arg = int(tag_col[0]) if len(parts) == 1 else tag_col
        self.in_flight = [(int(tag[0]), ts) for tag, ts in parts]
        if db.write(arg, ts_col, values, q) != ts_col.size:
            raise Failure("a write acknowledged a different number of points")
        self.in_flight = []
        for tag, ts in parts:
            self.logs[int(tag[0])].ack(ts)
        self.acked_writes += 1
        self.acked_points += ts_col.size


def verify(url: str, logs: dict[int, TagLog], since: dict[int, int], unanswered: Writes) -> None:
    """Check each tag's points with ``ts >= since[tag]`` (0: everything).

    Every acknowledged point is there, exact; nothing is there that was not sent;
    each write in ``unanswered`` is all there or not at all.
    """
    with Client(url, timeout=30) as db:
        tags = sorted(logs)
        last = db.last(tags).to_dict()
        for tag in tags:
            log, lo = logs[tag], since.get(tag, 0)
            r = db.query(tag, lo, BIG)
            ts = r.timestamps
            if ts.size and (ts[-1] >= log.sent or (np.diff(ts) <= 0).any()):
                raise Failure(f"tag {tag}: timestamps outside 0..{log.sent - 1} or unsorted")
            if not np.array_equal(r.values, value_of(tag, ts)):
                bad = int(np.flatnonzero(r.values != value_of(tag, ts))[0])
                raise Failure(f"tag {tag}: wrong value at ts {ts[bad]}: {r.values[bad]}")
            if not np.array_equal(r.qualities, quality_of(tag, ts)):
                raise Failure(f"tag {tag}: wrong quality")
            log.present = np.zeros(max(log.sent, log.acked.size), bool)
            log.present[ts] = True
            missing = np.flatnonzero(log.acked[lo:] & ~log.present[lo : log.acked.size]) + lo
            if missing.size:
                lost = f"{missing.size} acknowledged points lost, first ts {missing[0]}"
                raise Failure(f"tag {tag}: {lost}")
            if ts.size and last.get(tag, (None,))[0] != ts[-1]:
                raise Failure(f"tag {tag}: last() says {last.get(tag)}, query ends at {ts[-1]}")
        for write in unanswered:
            found = [int(logs[tag].present[ts].sum()) for tag, ts in write]
            if 0 < sum(found) < sum(ts.size for _, ts in write):
                sizes = [ts.size for _, ts in write]
                raise Failure(f"an unacknowledged write is partly stored: {found} of {sizes}")


def count_repairs(log_text: str, report: Report) -> None:
    for line in log_text.splitlines():
        if "recovery:" not in line:
            continue
        kind = next((name for key, name in REPAIR_KINDS.items() if key in line), "other")
        report.repairs[kind] += 1
        if kind == "other":
            print(f"  unclassified repair: {line.strip()}", file=sys.stderr)


def tags_of(writer: int) -> list[int]:
    """The tags one writer writes (each tag has one writer: its timestamps never repeat)."""
    return [writer * 100 + t for t in range(TAGS_PER_WRITER)]


def run_torture(
    rounds: int,
    workdir: Path,
    *,
    writers: int = 4,
    seed: int = 0,
    durability: str = "fsync",
    min_run: float = 0.2,
    max_run: float = 1.2,
    full_every: int = 1,
    progress: bool = False,
) -> Report:
    """Run ``rounds`` kill/restart/verify rounds in ``workdir``; never raises for a failure.

    Every ``full_every`` rounds (and after the last) all data is checked; in between
    only what the last two rounds wrote, which keeps long runs linear in time.
    """
    rng = np.random.default_rng(seed)
    data_dir, log = workdir / "data", workdir / "server.log"
    logs = {tag: TagLog() for w in range(writers) for tag in tags_of(w)}
    report = Report(data_dir=data_dir)
    unanswered: Writes = []  # writes in flight at the last kill
    marks: list[dict[int, int]] = []  # per round: what each tag had been sent before it
    extra = ["--durability", durability]
    started = time.monotonic()
    try:
        for rnd in range(rounds):
            srv = Server(data_dir, log, extra)
            team: list[Writer] = []
            full = rnd % full_every == 0
            marks.append({tag: tl.sent for tag, tl in logs.items()})
            try:
                # What the previous kill left behind.
                verify(srv.url, logs, {} if full else marks[max(0, rnd - 2)], unanswered)
                count_repairs(srv.log(), report)
                team = [
                    Writer(srv.url, tags_of(w), logs, seed * 1000 + rnd * 10 + w)
                    for w in range(writers)
                ]
                for t in team:
                    t.start()
                time.sleep(float(rng.uniform(min_run, max_run)))
            finally:
                srv.close()  # SIGKILL, writers still running: the kill lands mid-write
            for t in team:
                t.stop.set()
                t.join(30)
                if t.error is not None:
                    raise t.error
            unanswered = [t.in_flight for t in team if t.in_flight]
            report.unanswered += len(unanswered)
            report.acked_writes += sum(t.acked_writes for t in team)
            report.acked_points += sum(t.acked_points for t in team)
            report.rounds = rnd + 1
            if progress:
                done = f"{report.acked_points:,} points acknowledged so far"
                repairs = sum(report.repairs.values())
                print(f"round {rnd + 1}/{rounds}: {done}, {repairs} repairs", flush=True)
        srv = Server(data_dir, log, extra)  # the last kill's aftermath, then a clean stop
        try:
            verify(srv.url, logs, {}, unanswered)
            count_repairs(srv.log(), report)
            if srv.stop() != 0:
                raise Failure("the server did not stop cleanly after the last check")
        finally:
            srv.close()
    except (Failure, XtsdbError, OSError) as exc:
        report.failure = f"round {report.rounds + 1}: {type(exc).__name__}: {exc}"
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.torture", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--durability", choices=("fsync", "none"), default="fsync")
    p.add_argument("--full-every", type=int, default=10, help="rounds between full checks")
    p.add_argument("--workdir", type=Path, default=None, help="parent of the data directory")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xtsdb-torture-", dir=args.workdir) as tmp:
        report = run_torture(
            args.rounds,
            Path(tmp),
            writers=args.writers,
            seed=args.seed,
            durability=args.durability,
            full_every=args.full_every,
            progress=True,
        )
        print(report.table())
        if not report.ok:
            keep = Path(tempfile.mkdtemp(prefix="xtsdb-torture-failed-", dir=args.workdir))
            Path(tmp).rename(keep / "run")
            print(f"data directory and server log kept in {keep / 'run'}")
            Path(tmp).mkdir()  # for TemporaryDirectory's cleanup
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
