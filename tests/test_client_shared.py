"""One client shared by threads (``Client``) or tasks (``AsyncClient``), on a slow disk.

The server is a subprocess under strace, which delays every ``fdatasync`` by
300 ms (``tests/slow_disk.py``), so every acknowledgement is slow and the
windows between a write going out and its ack are wide. Several threads or
tasks then use one client at once; every result is checked against a model of
what each worker has written, and the server is killed with SIGKILL right
after a ``flush()`` returns. After a restart, every point whose ``flush()`` or
``write()`` returned (and every acknowledged delete and catalog change) must be
there; the one operation each worker had in flight at the kill may have gone
either way. Rounds, workers and operations are bounded and seeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import require_program
from slow_disk import slow_server

from xtsdb.client import AsyncClient, Client, _ledger
from xtsdb.client._core import Request, Session
from xtsdb.client._ledger import Ledger
from xtsdb.client.results import AggregateResult, LastResult, QueryResult, TagInfo
from xtsdb.protocol.errors import (
    InvalidInput,
    XtsdbConnectionError,
    XtsdbError,
    XtsdbTimeout,
)
from xtsdb.server.app import ServerThread

BIG = 1 << 50
WIN = 1_000  # each write gets a window of WIN microseconds of its own


# -- flush() waits for every thread's points ---------------------------------------------------


def _claim_check(url: str, claimed: dict[int, list[int]]) -> None:
    """Every point a worker was told is durable is on the server, with its value."""
    with Client(url, timeout=30) as db:
        for tag, stamps in claimed.items():
            r = db.query(tag, 0, BIG)
            got = dict(zip(r.timestamps.tolist(), r.values.tolist(), strict=True))
            lost = [t for t in stamps if got.get(t) != float(tag * 1_000_000 + t)]
            assert not lost, f"tag {tag}: {len(lost)} acknowledged points lost, e.g. {lost[:5]}"


@dataclass
class FlushRound:
    """Shared by the workers of one round: who was told what, and the kill."""

    claimed: dict[int, list[int]]
    kill: Callable[[], None]
    lock: threading.Lock = field(default_factory=threading.Lock)
    killed: bool = False

    def durable(self, tag: int, stamps: list[int]) -> None:
        """``flush()`` returned for these points: record them, and crash the server
        the first time, while other workers' acks may still be in flight."""
        with self.lock:
            self.claimed.setdefault(tag, []).extend(stamps)
            if not self.killed:
                self.killed = True
                self.kill()


FLUSH_WORKERS, FLUSH_POINTS = 4, 5
# (batch_size, flush_interval): flush() alone sends; the size trigger sends from
# write_point; the timer sends in the background while workers are still writing.
FLUSH_ROUNDS = [(10_000, 60.0), (2, 60.0), (10_000, 0.002)]


def test_flush_on_a_shared_client_covers_every_thread(tmp_path: Path) -> None:
    strace = require_program("strace", "strace")
    data, claimed = tmp_path / "data", {}
    for rnd, (batch_size, interval) in enumerate(FLUSH_ROUNDS):
        with slow_server(tmp_path, data, strace=strace) as srv:
            _claim_check(srv.url, claimed)
            shared = FlushRound(claimed, srv.kill9)
            barrier = threading.Barrier(FLUSH_WORKERS)
            errors: list[BaseException] = []
            db = Client(srv.url, timeout=10, batch_size=batch_size, flush_interval=interval)

            def work(tag: int, db: Client = db, shared: FlushRound = shared) -> None:
                stamps = [rnd * 100 + i for i in range(FLUSH_POINTS)]  # noqa: B023 (joined below)
                barrier.wait(10)  # noqa: B023
                try:
                    for t in stamps:
                        db.write_point(tag, t, float(tag * 1_000_000 + t))
                        time.sleep(0.0005)  # let the other threads buffer theirs
                    db.flush()
                except (XtsdbConnectionError, XtsdbTimeout):
                    return  # the server was killed first: nothing was promised
                except BaseException as exc:
                    errors.append(exc)  # noqa: B023
                    return
                shared.durable(tag, stamps)

            threads = [threading.Thread(target=work, args=(k + 1,)) for k in range(FLUSH_WORKERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            with contextlib.suppress(XtsdbError):
                db.close()
            assert not errors, errors
            assert shared.killed, "no flush() returned: the round proved nothing"
    with slow_server(tmp_path, data, strace=None) as srv:
        _claim_check(srv.url, claimed)


async def test_async_flush_on_a_shared_client_covers_every_task(tmp_path: Path) -> None:
    strace = require_program("strace", "strace")
    data, claimed = tmp_path / "data", {}
    for rnd, (batch_size, interval) in enumerate(FLUSH_ROUNDS):
        with slow_server(tmp_path, data, strace=strace) as srv:
            await asyncio.to_thread(_claim_check, srv.url, claimed)
            shared = FlushRound(claimed, srv.kill9)
            db = await AsyncClient.connect(
                srv.url, timeout=10, batch_size=batch_size, flush_interval=interval
            )

            async def work(tag: int, db: AsyncClient = db, shared: FlushRound = shared) -> None:
                stamps = [rnd * 100 + i for i in range(FLUSH_POINTS)]  # noqa: B023
                try:
                    for t in stamps:
                        await db.write_point(tag, t, float(tag * 1_000_000 + t))
                        await asyncio.sleep(0)  # let the other tasks buffer theirs
                    await db.flush()
                except (XtsdbConnectionError, XtsdbTimeout):
                    return
                shared.durable(tag, stamps)

            await asyncio.wait_for(asyncio.gather(*(work(k + 1) for k in range(FLUSH_WORKERS))), 30)
            with contextlib.suppress(XtsdbError):
                await db.close()
            assert shared.killed, "no flush() returned: the round proved nothing"
    with slow_server(tmp_path, data, strace=None) as srv:
        _claim_check(srv.url, claimed)


# -- every method at once, against a model --------------------------------------------------------


@dataclass
class Call:
    """One client method call a worker wants made (``kill`` crashes the server)."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


Points = dict[int, tuple[float, int]]  # ts -> (value, quality)


@dataclass
class Model:
    """What one worker has written: its numeric tag's points and its named tags."""

    k: int
    tag: int
    points: Points = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # name -> unit
    windows: int = 0
    made: int = 0  # named tags created, for unique names
    # The operation in flight, applied to the model only once acknowledged:
    pending_window: tuple[int, int] | None = None
    pending_names: set[str] = field(default_factory=set)
    # After a failed call: the windows and names whose state is unknown until checked.
    unsure_windows: list[tuple[int, int]] = field(default_factory=list)
    unsure_names: set[str] = field(default_factory=set)

    def in_range(self, lo: int, hi: int) -> Points:
        return {t: p for t, p in self.points.items() if lo <= t < hi}

    def fail(self) -> None:
        if self.pending_window is not None:
            self.unsure_windows.append(self.pending_window)
        self.unsure_names |= self.pending_names

    def settle(self, stored: QueryResult, catalog: list[TagInfo]) -> None:
        """After a restart: the server's state must be the model's, except where an
        operation was in flight at the kill; there it is either outcome, and the
        model takes what the server kept."""
        got: Points = dict(
            zip(
                stored.timestamps.tolist(),
                zip(stored.values.tolist(), stored.qualities.tolist(), strict=True),
                strict=True,
            )
        )
        unsure = self.unsure_windows

        def sure(t: int) -> bool:
            return not any(lo <= t < hi for lo, hi in unsure)

        want = {t: p for t, p in self.points.items() if sure(t)}
        assert {t: p for t, p in got.items() if sure(t)} == want, f"worker {self.k}: points"
        self.points = {**want, **{t: p for t, p in got.items() if not sure(t)}}
        names = {i.name: i.unit for i in catalog}
        for name, unit in self.names.items():
            if name not in self.unsure_names:
                assert names.get(name) == unit, f"worker {self.k}: tag {name!r}"
        for name in self.unsure_names:
            self.names.pop(name, None)
            if name in names:
                self.names[name] = names[name]
        extra = set(names) - set(self.names)
        assert not extra, f"worker {self.k}: tags nobody created: {extra}"
        self.unsure_windows, self.unsure_names = [], set()


def _points(res: QueryResult) -> list[tuple[int, float, int]]:
    return list(
        zip(res.timestamps.tolist(), res.values.tolist(), res.qualities.tolist(), strict=True)
    )


def _expect(points: Points, stamps: list[int]) -> list[tuple[int, float, int]]:
    return [(t, *points[t]) for t in stamps]


Plan = Generator[Call, Any, None]


def worker_plan(m: Model, rng: np.random.Generator, ops: int, kill_at: int | None) -> Plan:
    """Random operations on the worker's own tags, each result checked against ``m``."""
    for op in range(ops):
        m.pending_window, m.pending_names = None, set()
        kind = "point" if op == kill_at else rng.choice(KINDS, p=WEIGHTS)
        span = (m.windows + 1) * WIN
        if kind in ("write", "point", "many"):
            lo = m.windows * WIN
            windows = 2 if kind == "many" else 1
            m.windows += windows
            n = int(rng.integers(1, 40))
            offsets = rng.choice(WIN * windows, n, replace=False)
            stamps = np.sort(offsets).astype(np.int64) + lo
            values, qs = rng.normal(size=n).round(3), rng.choice([0, 64, 192], n).astype(np.uint8)
            m.pending_window = (lo, lo + windows * WIN)
            if kind == "write":
                assert (yield Call("write", (m.tag, stamps, values, qs))) == n
            elif kind == "many":
                cut = n // 2  # two items, pipelined in one call
                items = [
                    (m.tag, stamps[a:b], values[a:b], qs[a:b]) for a, b in ((0, cut), (cut, n))
                ]
                assert (yield Call("write_many", (items,))) == n
            else:
                for t, v, q in zip(stamps.tolist(), values.tolist(), qs.tolist(), strict=True):
                    yield Call("write_point", (m.tag, t, v, q))
                yield Call("flush")
            new = zip(values.tolist(), qs.tolist(), strict=True)
            m.points.update(zip(stamps.tolist(), new, strict=True))
            if op == kill_at:
                yield Call("kill")
                return
        elif kind == "interpolate":
            times = np.sort(rng.integers(0, span, 5))
            res = yield Call("interpolate", (m.tag, times))
            for t, v, status in zip(
                times.tolist(), res.values.tolist(), res.status.tolist(), strict=True
            ):
                before = [u for u in m.points if u <= t]
                if before:
                    assert (status, v) == (0, m.points[max(before)][0]), f"worker {m.k}: at {t}"
                else:
                    assert status == 1 and np.isnan(v), f"worker {m.k}: at {t}"
        elif kind == "plot":
            lo, hi = sorted(int(x) for x in rng.integers(0, span, 2))
            res = yield Call("plot", (m.tag, lo, hi + 1, int(rng.integers(1, 20))))
            got = _points(res)
            inside = sorted(m.in_range(lo, hi + 1))
            assert set(got) <= set(_expect(m.points, inside)), f"worker {m.k}: plot"
            if inside:  # each column keeps its ends: so do the first and the last column
                assert got[0][0] == inside[0] and got[-1][0] == inside[-1], f"worker {m.k}: plot"
        elif kind == "misc":
            assert (yield Call("ping")) > 0
            assert "engine" in (yield Call("stats"))
            yield Call("flush_server")
        elif kind == "query":
            lo, hi = sorted(int(x) for x in rng.integers(0, span, 2))
            desc, limit = bool(rng.integers(2)), int(rng.integers(1, 30))
            res = yield Call("query", (m.tag, lo, hi), {"limit": limit, "descending": desc})
            stamps = sorted(m.in_range(lo, hi), reverse=desc)[:limit]
            assert _points(res) == _expect(m.points, stamps), f"worker {m.k}: query"
        elif kind == "last":
            res: LastResult = yield Call("last", ([m.tag],))
            latest = max(m.points, default=None)
            want = {} if latest is None else {m.tag: (latest, *m.points[latest])}
            assert res.to_dict() == want, f"worker {m.k}: last"
        elif kind == "aggregate":
            interval = int(rng.choice([WIN // 4, WIN, 3 * WIN]))
            agg: AggregateResult = yield Call(
                "aggregate", (m.tag, 0, span, interval, ["count", "min", "max"])
            )
            buckets: dict[int, list[float]] = {}
            for t, (v, _q) in m.points.items():
                buckets.setdefault(t - t % interval, []).append(v)
            for i, start in enumerate(agg.start.tolist()):
                vs = buckets.pop(start, [])
                assert int(agg["count"][i]) == len(vs), f"worker {m.k}: aggregate count"
                if vs:
                    assert (agg["min"][i], agg["max"][i]) == (min(vs), max(vs))
            assert not buckets, f"worker {m.k}: aggregate lost buckets {sorted(buckets)}"
        elif kind == "delete" and m.windows:
            w = int(rng.integers(m.windows)) * WIN
            lo, hi = w + int(rng.integers(WIN // 2)), w + WIN // 2 + int(rng.integers(WIN // 2))
            m.pending_window = (w, w + WIN)
            yield Call("delete", (m.tag, lo, hi))
            m.points = {t: p for t, p in m.points.items() if not lo <= t < hi}
        elif kind == "catalog":
            yield from catalog_op(m, rng)


def catalog_op(m: Model, rng: np.random.Generator) -> Plan:
    """Create, update, remove or rename one of the worker's named tags, then read the catalog."""
    prefix = f"w{m.k}."
    action = int(rng.integers(4)) if m.names else 0
    pick = sorted(m.names)[int(rng.integers(len(m.names)))] if m.names else ""
    if action == 0:
        name, unit = f"{prefix}n{m.made}", f"u{m.made}"
        m.made += 1
        m.pending_names = {name}
        info: TagInfo = yield Call("create_tag", (name,), {"unit": unit})
        assert info.name == name and info.unit == unit
        m.names[name] = unit
    elif action == 1:
        unit = f"v{int(rng.integers(1000))}"
        m.pending_names = {pick}
        info = yield Call("update_tag", (pick,), {"unit": unit})
        assert info.unit == unit
        m.names[pick] = unit
        info = yield Call("tag", (pick,))
        assert (info.name, info.unit) == (pick, unit)
    elif action == 2:
        m.pending_names = {pick}
        info = yield Call("remove_tag", (pick,))
        assert info.name == pick
        del m.names[pick]
    else:
        new = f"{prefix}r{m.made}"
        m.made += 1
        m.pending_names = {pick, new}
        info = yield Call("rename_tag", (pick, new))
        assert info.name == new
        m.names[new] = m.names.pop(pick)
    m.pending_names = set()
    listed: list[TagInfo] = yield Call("tags", (prefix + "*",))
    assert {i.name: i.unit for i in listed} == m.names, f"worker {m.k}: catalog"


KINDS = ["write", "point", "many", "query", "last", "aggregate", "interpolate", "plot"]
KINDS += ["delete", "catalog", "misc"]
WEIGHTS = [0.12, 0.16, 0.06, 0.1, 0.08, 0.08, 0.06, 0.06, 0.08, 0.16, 0.04]
WORKERS, KILL_AT, MAX_OPS = 4, 7, 40
MODEL_ROUNDS = 2


class Crash:
    """The kill of one round: the only time a connection error is expected."""

    def __init__(self, kill: Callable[[], None]) -> None:
        self.done = False
        self._kill = kill

    def __call__(self) -> None:
        self.done = True
        self._kill()


def run_sync(db: Client, plan: Plan, m: Model, crash: Crash) -> None:
    try:
        call = next(plan)
        while True:
            if call.method == "kill":
                crash()
                result = None
            else:
                result = getattr(db, call.method)(*call.args, **call.kwargs)
            call = plan.send(result)
    except StopIteration:
        return
    except (XtsdbConnectionError, XtsdbTimeout):
        if not crash.done:
            raise
        m.fail()


async def run_async(db: AsyncClient, plan: Plan, m: Model, crash: Crash) -> None:
    try:
        call = next(plan)
        while True:
            if call.method == "kill":
                crash()
                result = None
            else:
                result = await getattr(db, call.method)(*call.args, **call.kwargs)
            call = plan.send(result)
    except StopIteration:
        return
    except (XtsdbConnectionError, XtsdbTimeout):
        if not crash.done:
            raise
        m.fail()


def _settle(url: str, models: list[Model]) -> None:
    with Client(url, timeout=30) as db:
        for m in models:
            m.settle(db.query(m.tag, 0, BIG), db.tags(f"w{m.k}.*"))


def _models(data_url: str) -> list[Model]:
    models = [Model(k, k + 1) for k in range(WORKERS)]
    with Client(data_url, timeout=30) as db:
        # Every numeric tag used before any named tag exists: the catalog gives names
        # ids above every id in use, so no named tag can land on a worker's tag.
        for m in models:
            db.write(m.tag, [0], [0.0], [192])
            m.points[0] = (0.0, 192)
            m.windows = 1
    return models


def _plans(models: list[Model], rnd: int, seed: int) -> list[Plan]:
    return [
        worker_plan(
            m, np.random.default_rng([seed, rnd, m.k]), MAX_OPS, KILL_AT if not m.k else None
        )
        for m in models
    ]


@pytest.mark.parametrize("seed", [1])
def test_every_method_from_threads_with_a_crash(tmp_path: Path, seed: int) -> None:
    strace = require_program("strace", "strace")
    data = tmp_path / "data"
    models: list[Model] = []
    for rnd in range(MODEL_ROUNDS):
        with slow_server(tmp_path, data, strace=strace) as srv:
            if rnd:
                _settle(srv.url, models)
            else:
                models = _models(srv.url)
            crash = Crash(srv.kill9)
            db = Client(srv.url, timeout=10, batch_size=16, flush_interval=0.05, max_in_flight=2)
            errors: list[BaseException] = []

            def work(m: Model, plan: Plan, db: Client = db, crash: Crash = crash) -> None:
                try:
                    run_sync(db, plan, m, crash)
                except BaseException as exc:
                    errors.append(exc)  # noqa: B023 (joined below)

            plans = _plans(models, rnd, seed)
            threads = [
                threading.Thread(target=work, args=a) for a in zip(models, plans, strict=True)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            with contextlib.suppress(XtsdbError):
                db.close()
            if errors:
                raise errors[0]
            assert crash.done
    with slow_server(tmp_path, data, strace=None) as srv:
        _settle(srv.url, models)


@pytest.mark.parametrize("seed", [2])
async def test_every_method_from_tasks_with_a_crash(tmp_path: Path, seed: int) -> None:
    strace = require_program("strace", "strace")
    data = tmp_path / "data"
    models: list[Model] = []
    for rnd in range(MODEL_ROUNDS):
        with slow_server(tmp_path, data, strace=strace) as srv:
            if rnd:
                await asyncio.to_thread(_settle, srv.url, models)
            else:
                models = await asyncio.to_thread(_models, srv.url)
            crash = Crash(srv.kill9)
            db = await AsyncClient.connect(
                srv.url, timeout=10, batch_size=16, flush_interval=0.05, max_in_flight=2
            )
            plans = _plans(models, rnd, seed)
            runs = (run_async(db, p, m, crash) for m, p in zip(models, plans, strict=True))
            await asyncio.wait_for(asyncio.gather(*runs), 60)
            with contextlib.suppress(XtsdbError):
                await db.close()
            assert crash.done
    with slow_server(tmp_path, data, strace=None) as srv:
        await asyncio.to_thread(_settle, srv.url, models)


# -- reconnecting while other threads are mid-request ------------------------------------------


class Cutter:
    """A TCP proxy that can cut every connection through it at once."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.url_host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._cut: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def cut(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
            self._cut += socks  # closed by close(), once their pump threads are done
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                down, _ = self._listener.accept()
            except TimeoutError:
                continue
            up = socket.create_connection(self._target, timeout=10)
            for s in (down, up):
                s.settimeout(None)
            with self._lock:
                self._socks += [down, up]
            for src, dst in ((down, up), (up, down)):
                t = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                self._threads.append(t)
                t.start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self.cut()
        for t in self._threads:
            t.join(5)
        for s in self._cut:
            s.close()
        self._listener.close()


@pytest.fixture
def cutter(server_factory: Callable[..., ServerThread]) -> Iterator[Cutter]:
    srv = server_factory(tokens=(f"write:{TOKEN}",))
    c = Cutter(srv.address)
    yield c
    c.close()


TOKEN = "shared-client-token-0123456789abcdef"
CUTS, READERS = 12, 6


def test_reconnects_under_many_threads_keep_the_token_and_the_routing(cutter: Cutter) -> None:
    """Connections cut under 6 threads of pings, queries and lasts: every call
    reconnects (hello and token first) or retries once, and gets its own answer."""
    db = Client(f"xtsdb://:{TOKEN}@{cutter.url_host}", timeout=10)
    for k in range(READERS):
        db.write(100 + k, np.arange(k + 1), np.full(k + 1, float(k)))
    stop = threading.Event()
    errors: list[BaseException] = []
    calls = [0] * READERS

    def read(k: int) -> None:
        rng = np.random.default_rng(k)
        while not stop.is_set():
            try:
                if rng.integers(3) == 0:
                    assert db.ping() > 0
                elif rng.integers(2):
                    assert db.query(100 + k, 0, BIG).values.tolist() == [float(k)] * (k + 1)
                else:
                    assert db.last([100 + k]).to_dict() == {100 + k: (k, float(k), 192)}
                calls[k] += 1
            except XtsdbConnectionError:
                pass  # cut twice in a row: one retry is all an idempotent call gets
            except BaseException as exc:  # AuthenticationFailed: a request went before hello
                errors.append(exc)
                return

    threads = [threading.Thread(target=read, args=(k,)) for k in range(READERS)]
    for t in threads:
        t.start()
    try:
        for _ in range(CUTS):
            stop.wait(0.05)
            cutter.cut()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        db.close()
    assert not errors, errors
    assert db.reconnects >= CUTS // 2 and min(calls) > 0, (db.reconnects, calls)


async def test_reconnects_under_many_tasks_keep_the_token_and_the_routing(cutter: Cutter) -> None:
    """The same with tasks sharing an AsyncClient."""
    db = await AsyncClient.connect(f"xtsdb://:{TOKEN}@{cutter.url_host}", timeout=10)
    for k in range(READERS):
        await db.write(100 + k, np.arange(k + 1), np.full(k + 1, float(k)))
    stop = asyncio.Event()
    calls = [0] * READERS

    async def read(k: int) -> None:
        rng = np.random.default_rng(k)
        while not stop.is_set():
            try:
                if rng.integers(3) == 0:
                    assert await db.ping() > 0
                elif rng.integers(2):
                    res = await db.query(100 + k, 0, BIG)
                    assert res.values.tolist() == [float(k)] * (k + 1)
                else:
                    last = await db.last([100 + k])
                    assert last.to_dict() == {100 + k: (k, float(k), 192)}
                calls[k] += 1
            except XtsdbConnectionError:
                pass  # cut twice in a row: one retry is all an idempotent call gets

    async def cut() -> None:
        try:
            for _ in range(CUTS):
                await asyncio.sleep(0.05)
                cutter.cut()
        finally:
            stop.set()

    try:
        await asyncio.wait_for(asyncio.gather(cut(), *(read(k) for k in range(READERS))), 60)
    finally:
        await db.close()
    assert db.reconnects >= CUTS // 2 and min(calls) > 0, (db.reconnects, calls)


# -- a failed batch is reported to every thread or task whose points it may hold -------------

BAD_TS = 1 << 61  # refused by the server (|ts| >= 2**60): the whole batch with it


def test_a_failed_batch_is_raised_by_every_thread_s_flush(server: ServerThread) -> None:
    # One thread per executor: each keeps its own view of what it was told.
    with (
        Client(server.url, flush_interval=60) as db,
        ThreadPoolExecutor(1) as a,
        ThreadPoolExecutor(1) as b,
    ):
        a.submit(db.write_point, 1, 10, 1.0).result()  # shares the batch with b's bad point
        b.submit(db.write_point, 1, BAD_TS, 2.0).result()
        with pytest.raises(InvalidInput) as refused:
            b.submit(db.flush).result()
        assert "a write_point batch of 2 points" in str(refused.value.__notes__)
        with pytest.raises(InvalidInput):  # a's point was in it: a's flush must not succeed
            a.submit(db.flush).result()
        a.submit(db.flush).result()  # each thread is told once
        b.submit(db.write_point, 1, 11, 3.0).result()  # b was told by its flush already
        b.submit(db.flush).result()
        with pytest.raises(InvalidInput):  # a thread that never flushed hears of it too
            db.flush()
        assert db.query(1, 0, BIG).timestamps.tolist() == [11]
    db = Client(server.url, flush_interval=60)
    db.write_point(1, BAD_TS, 1.0)
    with pytest.raises(InvalidInput):
        db.close()  # a failure nobody was told of is raised by close()


async def test_a_failed_batch_is_raised_by_every_task_s_flush(server: ServerThread) -> None:
    async with await AsyncClient.connect(server.url, flush_interval=60) as db:
        written, flushed = asyncio.Event(), asyncio.Event()

        async def a() -> None:
            await db.write_point(2, 10, 1.0)
            written.set()
            await flushed.wait()
            with pytest.raises(InvalidInput):
                await db.flush()
            await db.flush()  # told once

        async def b() -> None:
            await written.wait()
            await db.write_point(2, BAD_TS, 2.0)
            with pytest.raises(InvalidInput):
                await db.flush()
            flushed.set()
            await db.write_point(2, 11, 3.0)
            await db.flush()

        await asyncio.wait_for(asyncio.gather(a(), b()), 30)
        assert (await db.query(2, 0, BIG)).timestamps.tolist() == [11]


# -- a write_point batch lost with its connection: resent once with retry_writes=True ---------


def test_a_batch_lost_in_flight_is_resent_once_with_retry_writes(tmp_path: Path) -> None:
    strace = require_program("strace", "strace")
    with slow_server(tmp_path, tmp_path / "data", strace=strace) as srv:
        host, port = srv.url.removeprefix("xtsdb://").split(":")
        cutter = Cutter((host, int(port)))
        url = f"xtsdb://{cutter.url_host}"
        try:
            for retry, tag in ((False, 1), (True, 2)):
                with Client(url, timeout=10, flush_interval=60, retry_writes=retry) as db:
                    for t in range(3):
                        db.write_point(tag, t, 1.0)
                    with ThreadPoolExecutor(1) as other:
                        flushing = other.submit(db.flush)  # its ack needs >= 300 ms
                        time.sleep(0.1)
                        cutter.cut()
                        if retry:
                            flushing.result()
                        else:
                            with pytest.raises(XtsdbConnectionError):
                                flushing.result()
                    assert len(db.query(tag, 0, BIG)) == (3 if retry else 0)

            async def tasks() -> None:
                db = await AsyncClient.connect(
                    url, timeout=10, flush_interval=60, retry_writes=True
                )
                async with db:
                    for t in range(3):
                        await db.write_point(3, t, 1.0)
                    flushing = asyncio.gather(db.flush(), db.flush())  # two tasks, one batch
                    await asyncio.sleep(0.1)
                    cutter.cut()
                    await asyncio.wait_for(flushing, 30)
                    assert len(await db.query(3, 0, BIG)) == 3

            asyncio.run(tasks())
        finally:
            cutter.close()


# -- the ledger alone (sans-I/O) -------------------------------------------------------------


def test_ledger_tells_each_context_of_each_failure_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ledger, "MAX_FAILURES", 3)
    book: Ledger[Future[dict[str, Any]]] = Ledger()

    def send(points: int, ok: bool) -> None:
        fut: Future[dict[str, Any]] = Future()
        batch = book.add(Request(book.sent + 1, "write", b"", False, points), fut, Session())
        if ok:
            fut.set_result({"id": batch.req.id, "ok": True, "n": points, "lsn": 1})
        else:
            fut.set_exception(XtsdbConnectionError("lost"))
        assert book.finish(batch, fut) is not ok
        assert not book.finish(batch, fut)  # the second call for one future changes nothing

    send(2, True)
    send(3, False)
    send(4, True)
    a, b, c = (contextvars.copy_context() for _ in range(3))
    with pytest.raises(XtsdbConnectionError) as lost:  # b's write_point hears of it first ...
        raise_(b.run(book.for_write_point))
    assert lost.value.__notes__ == ["(a write_point batch of 3 points)"]
    assert b.run(book.for_flush, book.sent) is None  # ... so b's flush does not repeat it
    assert isinstance(a.run(book.for_flush, book.sent), XtsdbConnectionError)  # a must hear too
    assert a.run(book.for_flush, book.sent) is None  # once
    assert book.for_close(book.sent) is None  # somebody was told
    send(1, False)
    send(1, False)
    assert "2 write_point batches, 2 points" in str(a.run(book.for_flush, book.sent).__notes__)
    assert book.for_close(book.sent) is None
    for _ in range(3):
        send(1, False)  # more failures than the ledger keeps
    assert book.for_close(book.sent) is not None  # the last three: nobody was told yet
    summary = c.run(book.for_flush, book.sent)  # c never flushed: told of the lot, in short
    assert summary is not None and "more than 3 write_point batches" in str(summary.__notes__)
    assert c.run(book.for_flush, book.sent) is None
    assert len(book) == 0 and book.sent == 8


def raise_(err: BaseException | None) -> None:
    if err is not None:
        raise err
