"""Persistent worker processes for the CPU-heavy work: encoding and decoding blocks.

The server process is one interpreter: its GIL lets the event loop, the WAL
commit thread and the sealer share one core. ``WorkerPool`` starts ``size``
processes (forkserver: the server has threads, and forking a threaded
process is unsafe), lazily on the first job that needs them, and keeps them.
Each has two pre-faulted shared-memory arenas (:mod:`.arena`), reused for
every job, so no request pays for fresh pages; what crosses the control
socket is offsets, lengths and block summaries, never arrays.

The API is synchronous and thread-safe (the sealer thread and query threads
call it; the engine imports no asyncio). A caller takes workers for itself
(:meth:`WorkerPool.take`), sends each a job, collects the answers and gives
them back. A worker that dies (killed, out of memory) or stops answering is
killed and replaced; its job raises :class:`WorkerDied` and the caller does
that part inline: a dead worker costs a retry, never data or a wrong answer.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import send_handle
from typing import Any

import numpy as np

from xtsdb.protocol.errors import StorageError

from .arena import Arena
from .block_codec import encode_block
from .config import EngineConfig
from .membuffer import Columns
from .summary import Summary, summarise

log = logging.getLogger("xtsdb.engine")

ARENA_START_BYTES = 4 * 1024 * 1024
SLOTS = ("in", "out")  # the parent writes "in", the worker writes "out"
JOB_TIMEOUT_S = 120.0  # a job this late means a stuck worker: it is killed and replaced


class WorkerDied(StorageError):
    """A worker process died or stopped answering during a job (the caller retries inline)."""


def default_size() -> int:
    """One worker per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Worker:
    """One worker process, its control socket and its two arenas."""

    def __init__(self, ctx: Any, cap: int) -> None:
        from . import worker_jobs  # the child's code; imported here to keep imports acyclic

        self.conn, child = multiprocessing.Pipe(duplex=True)
        self.proc: BaseProcess = ctx.Process(
            target=worker_jobs.main, args=(child,), name="xtsdb-worker", daemon=True
        )
        self.proc.start()
        child.close()  # only the child holds its end: its death is EOF here
        self.jobs = 0
        self.broken = False  # a job saw it die or hang: killed when given back
        self.pending = False  # a job was sent and its answer not read: unusable for another
        self.arenas = {s: Arena(f"{s}-{self.proc.pid}", ARENA_START_BYTES, cap) for s in SLOTS}
        try:
            for slot in self.arenas:
                self._share(slot)
        except WorkerDied:
            self.kill()
            raise

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def _share(self, slot: str) -> None:
        try:
            self.conn.send(("map", slot, self.arenas[slot].size))
            send_handle(self.conn, self.arenas[slot].fd, self.pid)
        except OSError as exc:
            self.broken = True
            raise WorkerDied(f"worker {self.pid} is gone ({exc})") from exc
        self.pending = True
        self.answer()

    def fit(self, slot: str, need: int) -> bool:
        """Room for ``need`` bytes in arena ``slot``; False beyond the cap."""
        grown = self.arenas[slot].fit(need)
        if grown is None:
            return False
        if grown:
            self._share(slot)
        return True

    def send(self, msg: tuple[object, ...]) -> None:
        self.pending = True
        try:
            self.conn.send(msg)
        except OSError as exc:
            self.broken = True
            raise WorkerDied(f"worker {self.pid} is gone ({exc})") from exc

    def answer(self) -> Any:
        """The answer to the job sent last; raises what the job raised, or WorkerDied."""
        deadline = time.monotonic() + JOB_TIMEOUT_S
        try:
            while not self.conn.poll(1.0):
                if not self.proc.is_alive() or time.monotonic() > deadline:
                    self.broken = True
                    raise WorkerDied(f"worker {self.pid} died or hangs during a job")
            status, value = self.conn.recv()
            self.pending = False
        except (EOFError, OSError) as exc:
            self.broken = True
            raise WorkerDied(f"worker {self.pid} died during a job ({exc})") from exc
        self.jobs += 1
        if status == "raise":
            raise value
        return value

    def call(self, msg: tuple[object, ...]) -> Any:
        self.send(msg)
        return self.answer()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()
        for a in self.arenas.values():
            a.close()

    def stop(self) -> None:
        self.conn.close()  # EOF: the worker's loop ends
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        for a in self.arenas.values():
            a.close()


class WorkerPool:
    """``size`` worker processes, started on first use; thread-safe."""

    def __init__(self, size: int, arena_cap: int) -> None:
        self.size = size
        self.arena_cap = arena_cap
        self.replaced = 0  # workers that died and were replaced (a counter for tests, stats)
        self._idle: list[Worker] = []
        self._alive = 0
        self._closed = False
        self._cond = threading.Condition()
        self._ctx: Any = None

    def _start(self) -> Worker:
        if self._ctx is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["xtsdb.server.engine.worker_jobs"])
            self._ctx = ctx
        return Worker(self._ctx, self.arena_cap)

    @contextmanager
    def take(self, most: int, wait: bool = True) -> Iterator[list[Worker]]:
        """Between 1 and ``most`` workers for this caller alone (waits for the first);
        with ``wait`` False, none when all are busy (the caller works inline)."""
        got = self._acquire(max(1, min(most, self.size)), wait)
        try:
            yield got
        finally:
            dead = [w for w in got if w.broken or w.pending or not w.proc.is_alive()]
            self._release([w for w in got if w not in dead], dead)

    def _acquire(self, most: int, wait: bool = True) -> list[Worker]:
        to_start = 0
        with self._cond:
            while True:
                if self._closed:
                    raise StorageError("the worker pool is closed")
                got = self._idle[:most]
                del self._idle[: len(got)]
                if len(got) < most and self._alive < self.size:
                    to_start = min(most - len(got), self.size - self._alive)
                    self._alive += to_start
                if got or to_start or not wait:
                    break
                self._cond.wait()
        for i in range(to_start):
            try:
                got.append(self._start())
            except Exception as exc:
                with self._cond:
                    self._alive -= to_start - i
                    self._cond.notify_all()
                if not got:  # the caller does the job inline
                    raise WorkerDied(f"could not start a worker process: {exc}") from exc
                log.error("could not start a worker process: %s", exc)
                break
        return got

    def _release(self, good: list[Worker], dead: list[Worker]) -> None:
        for w in dead:
            log.warning("worker process %s died; a new one replaces it", w.pid)
            w.kill()
        with self._cond:
            self.replaced += len(dead)
            self._alive -= len(dead)
            if self._closed:
                stop, good = good, []
                self._alive -= len(stop)
            else:
                stop = []
                self._idle.extend(good)
            self._cond.notify_all()
        for w in stop:
            w.stop()

    def pids(self) -> list[int]:
        """Process ids of the idle workers (tests kill them)."""
        with self._cond:
            return [w.pid for w in self._idle]

    def start_all(self) -> list[int]:
        """Start every worker now (benches: start-up is not part of a job); their pids."""
        with self.take(self.size) as ws:
            return [w.call(("pid",)) for w in ws]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._alive -= len(idle)
            self._cond.notify_all()
        for w in idle:
            w.stop()


# -- encoding blocks (the sealer) ------------------------------------------------

Encoded = tuple[bytes, Summary]
OUT_SLACK = 1024  # bytes per block beyond 18 a point: headers, trailers, incompressible data


def encode_inline(segments: list[Columns], level: int) -> list[Encoded]:
    return [(encode_block(ts, v, q, level), summarise(ts, v, q)) for ts, v, q in segments]


def split_even(sizes: list[int], parts: int) -> list[range]:
    """Contiguous ranges of ``sizes`` with about equal sums, at most ``parts`` of them."""
    target = max(1, -(-sum(sizes) // max(1, parts)))
    out: list[range] = []
    lo = filled = 0
    for i, n in enumerate(sizes):
        if filled >= target and len(out) < parts - 1:
            out.append(range(lo, i))
            lo, filled = i, 0
        filled += n
    if lo < len(sizes):
        out.append(range(lo, len(sizes)))
    return out


def encode_many(pool: WorkerPool | None, segments: list[Columns], level: int) -> list[Encoded]:
    """``encode_block`` and ``summarise`` of every segment, in the workers when they can.

    One job per worker for the whole batch (the control round trip is paid once
    per batch, not per block). A part whose worker dies, or that exceeds the
    arena cap, is encoded inline: the bytes are the same either way.
    """
    if pool is None or not segments:
        return encode_inline(segments, level)
    result: list[Encoded | None] = [None] * len(segments)
    try:
        with pool.take(len(segments)) as ws:
            _encode_in(ws, segments, level, result)
    except WorkerDied as exc:  # no worker could be started: all of it inline
        log.warning("%s; encoding inline", exc)
    for i, r in enumerate(result):
        if r is None:
            result[i] = encode_inline([segments[i]], level)[0]
    return [r for r in result if r is not None]


def _encode_in(
    ws: list[Worker], segments: list[Columns], level: int, result: list[Encoded | None]
) -> None:
    """One job per worker in ``ws``; parts that fail stay None in ``result``."""
    parts = split_even([s[0].shape[0] for s in segments], len(ws))
    sent: list[tuple[Worker, range]] = []
    for w, part in zip(ws, parts, strict=False):
        try:
            if _send_encode(w, [segments[i] for i in part], level):
                sent.append((w, part))
        except WorkerDied as exc:
            log.warning("%s; encoding inline", exc)
    for w, part in sent:
        try:
            answer = w.answer()
        except Exception as exc:  # inline raises the same error if the input is bad
            log.warning("worker encoding failed (%s); encoding inline", exc)
            continue
        out = w.arenas["out"].view()
        for i, (where, length, summary) in zip(part, answer, strict=True):
            body = where if isinstance(where, bytes) else bytes(out[where : where + length])
            result[i] = (body, summary)
        del out


def _send_encode(w: Worker, segs: list[Columns], level: int) -> bool:
    """Copy ``segs`` into ``w``'s input arena and send the job; False if it does not fit."""
    layout = []
    at = 0
    for ts, _, _ in segs:
        layout.append((at, ts.shape[0]))
        at += -(-17 * ts.shape[0] // 8) * 8  # 8-aligned for the next segment's timestamps
    out_need = sum(18 * n + OUT_SLACK for _, n in layout)
    if not (w.fit("in", at) and w.fit("out", out_need)):
        return False
    buf = w.arenas["in"].buf
    assert buf is not None
    for (off, n), (ts, v, q) in zip(layout, segs, strict=True):
        np.frombuffer(buf, np.int64, n, off)[:] = ts
        np.frombuffer(buf, np.float64, n, off + 8 * n)[:] = v
        np.frombuffer(buf, np.uint8, n, off + 16 * n)[:] = q
    w.send(("encode", level, layout))
    return True


def pool_for(config: EngineConfig) -> WorkerPool | None:
    """The engine's pool (processes start on first use); None when ``workers`` is 0."""
    size = default_size() if config.workers < 0 else config.workers
    return WorkerPool(size, config.arena_max_bytes) if size > 0 else None
