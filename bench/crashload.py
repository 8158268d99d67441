"""The workload the crash-point and power-loss harnesses run, and the check after a crash.

A single SDK client writes fixed-size frames round-robin to a few tags, deletes two
ranges and asks for one flush, in a fixed order, recording each write or delete
only once its acknowledgement arrived. The server runs with tiny sizes
(:data:`SIZES`), so in a few seconds the workload creates the data directory and
its files, rotates WAL segments, seals blocks and chunks, writes checkpoints and
recycles segments, and ends with a clean SIGTERM stop.

Values and qualities are functions of ``(tag, ts)`` that do not compress (a
chunk fills after a few blocks), so any point found after a crash can be checked
without knowing which write carried it, and timestamps of a tag never repeat.
:func:`check` opens the data directory with the engine (what the server does at
start) and demands: every acknowledged point there, exact; nothing there that was
not sent or that an acknowledged delete removed; an unacknowledged write or delete
(in flight at the crash) all or nothing.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.torture import TINY_SIZES
from xtsdb.client import Client
from xtsdb.protocol.errors import XtsdbError
from xtsdb.server.engine import Engine, EngineConfig
from xtsdb.server.process import ServerExited, ServerProcess, flags, server_env

SIZES = flags(**{**TINY_SIZES, "block_points": 2000})  # the torture's sizes, larger blocks
ENGINE = EngineConfig(
    chunk_size=64 * 1024,
    meta_extents=1,
    block_points=2000,
    wal_segment_bytes=32 * 1024,
    wal_checkpoint_bytes=96 * 1024,
    read_workers=1,
)
TAGS = (1, 2, 3)
FRAME = 500  # points per write
N_WRITES = 60
BIG = 1 << 60
START_TIMEOUT = 60.0


def value_of(tag: int, ts: np.ndarray) -> np.ndarray:
    """A hash of (tag, ts) in [0, 1): reproducible, and it does not compress."""
    x = ts.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(tag * 0x632BE5AB)
    x ^= x >> np.uint64(29)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(32)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def quality_of(tag: int, ts: np.ndarray) -> np.ndarray:
    return ((ts * 7 + tag) % 256).astype(np.uint8)


@dataclass
class Op:
    kind: str  # "write" | "delete" | "flush"
    tag: int = 0
    lo: int = 0  # write: ts lo..hi-1; delete: [lo, hi)
    hi: int = 0


def plan(n_writes: int) -> list[Op]:
    """The fixed sequence of operations: writes, two deletes of acknowledged ranges, a flush."""
    sent = dict.fromkeys(TAGS, 0)
    ops: list[Op] = []
    for i in range(n_writes):
        tag = TAGS[i % len(TAGS)]
        ops.append(Op("write", tag, sent[tag], sent[tag] + FRAME))
        sent[tag] += FRAME
        if i == n_writes // 3:
            ops.append(Op("delete", 1, 100, 700))  # spans two frames of tag 1
        if i == n_writes // 2:
            ops.append(Op("flush"))
        if i == 2 * n_writes // 3:
            ops.append(Op("delete", 2, 0, FRAME * 2))
    return ops


@dataclass
class Outcome:
    """How far the workload got: ``acked`` ops finished; ``pending`` was in flight."""

    ops: list[Op]
    acked: int = 0
    pending: Op | None = None
    finished: bool = False  # every op acknowledged (the server may still die at the stop)
    error: str = ""


def run_ops(url: str, ops: list[Op], out: Outcome) -> None:
    """Run ``ops`` in order; stops quietly at the first connection failure (the crash)."""
    try:
        with Client(url, timeout=30, retry_writes=False) as db:
            for op in ops:
                out.pending = op
                if op.kind == "write":
                    ts = np.arange(op.lo, op.hi, dtype=np.int64)
                    n = db.write(op.tag, ts, value_of(op.tag, ts), quality_of(op.tag, ts))
                    if n != ts.size:
                        raise AssertionError(f"write acknowledged {n} of {ts.size} points")
                elif op.kind == "delete":
                    db.delete(op.tag, op.lo, op.hi)
                else:
                    db.flush_server()
                out.pending = None
                out.acked += 1
        out.finished = True
    except (XtsdbError, OSError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"


def start_server(
    data_dir: Path, workdir: Path, *, name: str = "server", wrapper: Sequence[str] = ()
) -> ServerProcess:
    """The server on ``data_dir`` with :data:`SIZES` and no metrics port, its files
    ``NAME.ready`` and ``NAME.log`` in ``workdir``; not waited for."""
    args = ["--port", "0", "--data-dir", str(data_dir), *SIZES]
    env = server_env(XTSDB_HTTP_PORT="-1")
    return ServerProcess(args, workdir=workdir, name=name, env=env, wrapper=wrapper)


def traced_run(data_dir: Path, workdir: Path, strace: list[str], out: Outcome | None) -> int:
    """Run the server under ``strace -f STRACE...`` and the workload ``out``; the exit code.

    Without a workload the server is stopped (SIGTERM) once ready; with one, once
    the workload finished. A crash (an injected SIGKILL, a crash point in the
    start-up) ends it earlier: strace exits the way its tracee did, so the code
    is ``-SIGKILL`` then. Killed and reaped on the way out, whatever happens.
    """
    wrapper = ["strace", "-f", "-qq", "-e", "signal=none", *strace]
    with start_server(data_dir, workdir, wrapper=wrapper) as srv:
        try:
            srv.wait_ready(START_TIMEOUT)
        except ServerExited as exc:
            return exc.returncode
        if out is not None:
            run_ops(srv.url, out.ops, out)
        if out is None or out.finished:
            srv.send_signal(signal.SIGTERM)  # a crash point may still fire during the stop
        return srv.wait(60)


@dataclass
class Verdict:
    ok: bool
    problems: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)


class _Source(Protocol):
    def query(self, tag: int, start: int, end: int) -> Any: ...


def check(data_dir: Path, out: Outcome, *, via: str = "server") -> Verdict:
    """Open ``data_dir`` again and compare it with what was acknowledged.

    ``via="server"`` starts the real server on it (no strace) and reads through the
    SDK, then stops it and demands a clean exit; ``via="engine"`` opens the engine
    in this process (the same recovery, faster, for many crash states).
    """
    if not data_dir.exists():
        # The crash came before the directory existed: nothing can have been acknowledged.
        return Verdict(out.acked == 0, [] if out.acked == 0 else ["data directory missing"])
    if via == "engine":
        try:
            eng = Engine.open(data_dir, ENGINE)
        except Exception as exc:  # the defect looked for: a start that fails
            return Verdict(False, [f"open failed: {type(exc).__name__}: {exc}"])
        try:
            problems = _compare(eng, out)
            return Verdict(not problems, problems, list(eng.repairs))
        finally:
            eng.close()
    with start_server(data_dir, data_dir.parent, name="check") as srv:
        try:
            srv.wait_ready(START_TIMEOUT)
        except ServerExited:
            return Verdict(False, [f"server did not start: {srv.log_tail(1)}"])
        with Client(srv.url, timeout=30) as db:
            problems = _compare(db, out)
        if (code := srv.stop(60)) != 0:
            problems.append(f"server exited with {code} after the check")
    lines = srv.log().splitlines()
    repairs = [ln[ln.index("recovery:") :].rstrip('"}') for ln in lines if "recovery:" in ln]
    return Verdict(not problems, problems, repairs)


def _compare(src: _Source, out: Outcome) -> list[str]:
    problems: list[str] = []
    done, pending = out.ops[: out.acked], out.pending
    sent_ops = done + ([pending] if pending is not None else [])
    for tag in TAGS:
        r = src.query(tag, -BIG, BIG)
        ts = r.timestamps
        sent = max((op.hi for op in sent_ops if op.kind == "write" and op.tag == tag), default=0)
        if ts.size and (ts[0] < 0 or ts[-1] >= sent or (np.diff(ts) <= 0).any()):
            problems.append(f"tag {tag}: timestamps outside 0..{sent - 1} or unsorted")
            continue
        if not np.array_equal(r.values, value_of(tag, ts)) or not np.array_equal(
            r.qualities, quality_of(tag, ts)
        ):
            problems.append(f"tag {tag}: a point with a wrong value or quality")
        present = np.zeros(sent, bool)
        present[ts] = True
        must = np.zeros(sent, bool)  # acknowledged and not deleted by an acknowledged delete
        for op in done:
            if op.tag != tag:
                continue
            if op.kind == "write":
                must[op.lo : op.hi] = True
            elif op.kind == "delete":
                must[op.lo : op.hi] = False
                if present[op.lo : min(op.hi, sent)].any():
                    problems.append(f"tag {tag}: points deleted by an acknowledged delete are back")
        if pending is not None and pending.tag == tag and pending.kind == "delete":
            # An unacknowledged delete is all or nothing: its range is either as before or empty.
            rng = must[pending.lo : pending.hi]
            got = present[pending.lo : pending.hi]
            if got.any() and not np.array_equal(got, rng):
                problems.append(f"tag {tag}: an unacknowledged delete applied in part")
            must[pending.lo : pending.hi] &= got
        lost = np.flatnonzero(must & ~present)
        if lost.size:
            problems.append(f"tag {tag}: {lost.size} acknowledged points lost, first ts {lost[0]}")
        if pending is not None and pending.kind == "write" and pending.tag == tag:
            part = present[pending.lo : pending.hi]
            if part.any() and not part.all():
                problems.append(f"tag {tag}: an unacknowledged write stored in part")
    return problems
