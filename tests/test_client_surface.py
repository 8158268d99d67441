"""One client surface: each operation is declared once and both clients show it.

What a user (``help``, ``inspect``), a type checker (mypy with the project's
config) and an IDE see of ``Client`` and ``AsyncClient`` comes from the one
plan function of each operation. Also: ``gather`` (query_df's pipelining) runs
several paged queries side by side against a real server.
"""

from __future__ import annotations

import asyncio
import inspect
import pydoc
import re
import subprocess
import sys
import textwrap
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xtsdb.client import AsyncClient, Client, connect
from xtsdb.client._core import ClientCore, Session, needs_replacing
from xtsdb.client._ops import Operations, gather, query
from xtsdb.client._points import PointBatches
from xtsdb.client.historian import HistorianOperations
from xtsdb.protocol.errors import InvalidInput, XtsdbConnectionError, XtsdbTimeout
from xtsdb.server.app import ServerThread

ROOT = Path(__file__).resolve().parents[1]
BIG = 1 << 50
OPS = sorted(
    name
    for cls in (Operations, HistorianOperations)
    for name in vars(cls)
    if not name.startswith("_")
)


def test_every_operation_has_its_signature_and_docstring_on_both_clients() -> None:
    core = "write write_many query last stats ping flush_server backup write_df query_df"
    catalog = "create_tag tag tags update_tag rename_tag remove_tag delete delete_tag"
    assert set(f"{core} {catalog} aggregate interpolate plot".split()) <= set(OPS)
    for name in OPS:
        plan = inspect.getattr_static(Operations, name).plan
        params = list(inspect.signature(plan).parameters)[1:]  # core -> self
        doc = inspect.getdoc(plan)
        assert doc and len(doc) > 20, name
        for cls in (Client, AsyncClient):
            method = getattr(cls, name)
            assert list(inspect.signature(method).parameters) == ["self", *params], (cls, name)
            assert inspect.getdoc(method) == doc
            assert inspect.iscoroutinefunction(method) is (cls is AsyncClient), (cls, name)


def test_signature_and_help_of_query() -> None:
    sig = inspect.signature(Client.query)
    assert str(sig) == (
        "(self, tag: 'int | str', start: 'Any', end: 'Any', limit: 'int | None' = None, *, "
        "descending: 'bool' = False, good_only: 'bool' = False, timeout: 'float | None' = None)"
        " -> 'QueryResult'"
    )
    assert inspect.signature(AsyncClient.query) == sig
    bound = inspect.signature(Client.query.__get__(object()))  # what an IDE shows on c.query
    assert "self" not in bound.parameters and "descending" in bound.parameters
    for cls in (Client, AsyncClient):
        text = pydoc.render_doc(cls.query, renderer=pydoc.plaintext)
        assert "newest first with ``descending``" in text
        assert "limit: 'int | None' = None" in text
        text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
        assert "aggregate(self, tag_or_tags" in text and "Aggregates per ``interval``" in text


def test_mypy_sees_each_clients_parameters_and_result(tmp_path: Path) -> None:
    # Lines marked "# E" must be errors, and no other line: a wrong keyword, a wrong
    # result type, a coroutine used as a result, an aggregate of a list used as one.
    snippet = textwrap.dedent(
        """\
        from xtsdb.client import AggregateResult, AsyncClient, Client, QueryResult

        def blocking(c: Client) -> None:
            r: QueryResult = c.query(1, 0, 10, descending=True)
            c.query(1, 0, 10, decending=True)  # E
            n: str = c.write(1, [1], [1.0])  # E
            one: AggregateResult = c.aggregate(1, 0, 10, 5)
            many: AggregateResult = c.aggregate([1, 2], 0, 10, 5)  # E
            names: list[str] = [t.name for t in c.tags("F*", limit=3)]
            c.tags(limit="3")  # E

        async def coroutines(a: AsyncClient) -> None:
            r: QueryResult = await a.query(1, 0, 10, good_only=True)
            await a.query(1, 0, 10, godo_only=True)  # E
            x: QueryResult = a.query(1, 0, 10)  # E
            n: str = await a.write(1, [1], [1.0])  # E
            one: AggregateResult = await a.aggregate(1, 0, 10, 5)
            many: dict[int | str, AggregateResult] = await a.aggregate([1, 2], 0, 10, 5)
            await a.delete_tag(1, timeout="soon")  # E
        """
    )
    path = tmp_path / "snippet.py"
    path.write_text(snippet)
    mypy = Path(sys.executable).with_name("mypy")
    r = subprocess.run(
        [str(mypy), "--config-file", str(ROOT / "pyproject.toml"), str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    errors = {int(m) for m in re.findall(rf"{re.escape(path.name)}:(\d+): error", r.stdout)}
    marked = {i for i, line in enumerate(snippet.splitlines(), 1) if line.endswith("# E")}
    assert errors == marked, r.stdout[-5000:]


# -- the rules both transports apply, written once (sans-I/O) -------------------------


def test_retry_once_and_reconnect_rules() -> None:
    core = ClientCore("xtsdb://127.0.0.1:1")
    ping = core.simple("ping")
    assert ping.retry_once() and not ping.retry_once()  # once: a second failure is not a blip
    assert not core.request({"op": "backup", "id": core.next_id(), "path": "x"}).retry_once()
    live, dead, other = Session[Any](), Session[Any](), Session[Any]()
    dead.close()
    assert needs_replacing(None, None, alive=False)  # never connected
    assert not needs_replacing(live, None, alive=True)
    assert needs_replacing(live, None, alive=False)  # its socket is closing
    assert needs_replacing(dead, None, alive=True)  # its reader closed it
    assert needs_replacing(live, live, alive=True)  # the caller saw this one fail
    assert not needs_replacing(live, other, alive=True)  # another caller replaced it already


def test_settle_plan_waits_resends_once_then_times_out() -> None:
    points: PointBatches[Future[dict[str, Any]]] = PointBatches(10, 0.1)
    with pytest.raises(InvalidInput):
        PointBatches(0, 0.1)
    core = ClientCore("xtsdb://127.0.0.1:1", retry_writes=True)
    assert points.buffer.append(1, 5, 1.0, 192) == 1
    [req] = points.take(core)
    first: Future[dict[str, Any]] = Future()
    batch = points.sent(req, first, Session())
    steps = points.settle(batch, timeout=5.0)
    fut, left = next(steps)
    assert fut is first and left is not None and 0 < left <= 5.0
    first.set_exception(XtsdbConnectionError("lost"))
    assert next(steps) is None  # resend: retry_writes allows one
    assert points.resending(batch) and batch.req.attempts == 1
    again: Future[dict[str, Any]] = Future()
    points.resent(batch, again, Session())
    assert not points.resending(batch)  # under the resend lock: another waiter did it
    fut, _left = next(steps)
    assert fut is again
    again.set_exception(XtsdbConnectionError("lost again"))
    with pytest.raises(StopIteration):  # a second loss is not a blip: failed for good
        next(steps)
    assert batch.settled and points.attention
    with pytest.raises(XtsdbConnectionError, match="lost again"):
        points.report()

    points.buffer.append(1, 6, 1.0, 192)
    [req] = points.take(core)
    batch = points.sent(req, Future(), Session())
    steps = points.settle(batch, timeout=0.0)
    next(steps)
    with pytest.raises(StopIteration):  # no answer in time: nobody can say it is durable
        next(steps)
    with pytest.raises(XtsdbTimeout):
        points.report()


# -- gather: several plans, one round trip a step --------------------------------------


def test_gather_pipelines_the_first_page_of_every_query() -> None:
    core = ClientCore("xtsdb://127.0.0.1:1")
    plan = gather([query.plan(core, t, 0, 10) for t in (1, "b", 3)])
    step = next(plan)
    assert [r.op for r in step.send] == ["query"] * 3 and step.wait == 3
    plan.close()

    bad = gather([core.write_plan([(1, [1], [1.0], None)])])  # keeps its ack outstanding
    with pytest.raises(RuntimeError, match="outstanding"):
        next(bad)


def _sizes(db: Client) -> dict[int, int]:
    sizes = {1: 250, 2: 30, 3: 0, 4: 101}  # pages of 100: 3, 1, 1 and 2 steps
    for tag, n in sizes.items():
        if n:
            db.write(tag, np.arange(n), np.arange(n, dtype=np.float64) * tag)
    return sizes


def test_gather_runs_paged_queries_side_by_side(server: ServerThread) -> None:
    with connect(server.url, max_points_per_frame=100) as db:
        sizes = _sizes(db)
        results = db._drive(gather([query.plan(db._core, t, 0, BIG) for t in sizes]), None)
        before = db.stats()["server"]["requests"]["query"]
        for (tag, n), got in zip(sizes.items(), results, strict=True):
            alone = db.query(tag, 0, BIG)
            assert len(got) == n and np.array_equal(got.timestamps, alone.timestamps)
            assert np.array_equal(got.values, np.arange(n) * float(tag))
        assert db.stats()["server"]["requests"]["query"] - before == 7  # 3 + 1 + 1 + 2

    async def run() -> None:
        async with await AsyncClient.connect(server.url, max_points_per_frame=100) as adb:
            plans = [query.plan(adb._core, t, 0, BIG) for t in sizes]
            results = await adb._drive(gather(plans), None)
            assert [len(r) for r in results] == list(sizes.values())

    asyncio.run(run())


def test_query_df_of_more_tags_than_max_in_flight(server: ServerThread) -> None:
    pytest.importorskip("pandas")
    tags = list(range(1, 11))
    with connect(server.url, max_in_flight=3, max_points_per_frame=50) as db:
        for t in tags:  # 20 to 200 points: one to four pages of 50
            db.write(t, np.arange(t * 20), np.arange(t * 20) + float(t))
        frame = db.query_df(tags, 0, BIG)
    assert frame.shape == (200, 10)
    for t in tags:
        col = frame[t].dropna()
        assert np.array_equal(col.to_numpy(), np.arange(t * 20) + float(t))

    async def run() -> None:
        async with await AsyncClient.connect(server.url, max_in_flight=4) as adb:
            assert (await adb.query_df(tags, 0, BIG)).equals(frame)

    asyncio.run(run())
