"""The historian ops end to end: SDK -> wire -> server -> engine, on a real server.

Tag catalog and names, auto-created tags, aggregates checked against numpy
(points on disk and in memory), interpolation and plot mode through the wire,
descending / good-only queries and paging, deletes across a restart, roles,
and the rules docs/historian.md states (duplicate policies, per-tag retention).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xtsdb.client import AsyncClient, Client, InterpolateResult, connect
from xtsdb.client.cli import main
from xtsdb.client.cli_historian import parse_duration
from xtsdb.protocol import QUERY
from xtsdb.protocol.errors import InvalidInput, NotFound, PermissionDenied
from xtsdb.server.app import ServerThread
from xtsdb.server.config import ConfigError, ServerConfig
from xtsdb.server.engine import Engine, EngineConfig

T0 = 1_700_000_000_000_000  # us
SEC = 1_000_000
READ_SECRET = "read-secret-0123456789abcdef"
WRITE_SECRET = "write-secret-0123456789abcdef"


def requests_of(db: Client, op: str) -> int:
    n: int = db.stats()["server"]["requests"].get(op, 0)
    return n


# -- the tag catalog and names ---------------------------------------------------------


def test_tag_catalog_round_trip(server: ServerThread) -> None:
    with connect(server.url) as db:
        info = db.create_tag("boiler.temp", unit="degC", description="outlet", duplicates="last")
        assert (info.name, info.unit, info.description) == ("boiler.temp", "degC", "outlet")
        assert info.created_us > T0 and db.tag("boiler.temp") == info == db.tag(info.id)
        other = db.create_tag("boiler.pressure", unit="bar")
        db.create_tag("pump.speed")
        assert [t.name for t in db.tags("boiler.*")] == ["boiler.pressure", "boiler.temp"]
        assert len(db.tags()) == 3 and len(db.tags(limit=1)) == 1
        with pytest.raises(InvalidInput, match="exists"):
            db.create_tag("boiler.temp")
        with pytest.raises(InvalidInput, match="unknown tag fields"):
            db.create_tag("x", colour="red")  # refused before sending
        with pytest.raises(InvalidInput, match="duplicates"):
            db.create_tag("x", duplicates="sometimes")  # refused by the server's catalog
        with pytest.raises(NotFound):
            db.tag("nope")

        assert db.update_tag("boiler.temp", unit="K", retention_us=86_400 * SEC).unit == "K"
        assert db.tag(info.id).retention_us == 86_400 * SEC
        renamed = db.rename_tag("boiler.temp", "boiler.outlet")
        assert renamed.id == info.id and db.tag("boiler.outlet").unit == "K"
        with pytest.raises(NotFound):
            db.tag("boiler.temp")

        db.write("boiler.outlet", [T0, T0 + SEC], [1.0, 2.0])
        assert db.remove_tag("boiler.outlet").id == info.id
        assert len(db.query(info.id, 0, T0 + 10 * SEC)) == 0  # its points went with it
        with pytest.raises(NotFound):
            db.remove_tag("boiler.outlet")
        assert db.tag(other.id).name == "boiler.pressure"


def test_tag_search_pages_through_names_and_descriptions(tmp_path: Path) -> None:
    tokens = [f"read:{READ_SECRET}", f"write:{WRITE_SECRET}"]
    config = ServerConfig(port=0, data_dir=tmp_path / "d", tokens=tokens)
    with ServerThread(config) as srv:
        with connect(srv.url, token=WRITE_SECRET) as db:
            for i in range(5):
                db.create_tag(f"line{i}.BOILER.temp")
            db.create_tag("pump.speed", description="feeds the boiler")
            db.create_tag("fan.speed")
        with connect(srv.url, token=READ_SECRET) as db:  # a read token may search
            first = db.search_tags("boiler", limit=4)
            assert [t.name for t in first.tags] == [f"line{i}.BOILER.temp" for i in range(4)]
            assert first.more
            rest = db.search_tags("boiler", after=first.tags[-1].name, limit=4)
            assert [t.name for t in rest.tags] == ["line4.BOILER.temp", "pump.speed"]
            assert not rest.more
            assert [t.name for t in db.search_tags().tags][:1] == ["fan.speed"]
            assert db.search_tags("nothing like it") == ([], False)
            with pytest.raises(InvalidInput, match="limit"):
                db.search_tags(limit=0)


def test_names_in_write_query_last_without_auto_create(server: ServerThread) -> None:
    with connect(server.url) as db:
        with pytest.raises(NotFound, match="auto-create"):
            db.write("flow", [T0], [1.0])
        flow = db.create_tag("flow").id
        level = db.create_tag("level").id
        assert db.write("flow", [T0, T0 + SEC], [1.5, 2.5], [192, 0]) == 2
        db.write(level, [T0 + 5 * SEC], [7.0])
        r = db.query("flow", T0, T0 + 10 * SEC)
        assert r.values.tolist() == [1.5, 2.5] and r.qualities.tolist() == [192, 0]
        last = db.last(["flow", level, "level"])
        assert last.tags.tolist() == [flow, level, level]
        assert last.values.tolist() == [2.5, 7.0, 7.0]
        assert db.last("flow").to_dict() == {flow: (T0 + SEC, 2.5, 0)}
        with pytest.raises(NotFound):
            db.query("nope", 0, 1)
        with pytest.raises(NotFound):
            db.last(["flow", "nope"])


async def test_auto_create_tags_keeps_pipelined_writes_in_order(
    server_factory: Callable[..., ServerThread],
) -> None:
    srv = server_factory(auto_create_tags=True)
    ts = np.arange(5, dtype=np.int64) + T0
    async with await AsyncClient.connect(srv.url) as db:
        # Both writes wait for the one creation and are queued in the order sent:
        # the later one wins every timestamp.
        n1, n2 = await asyncio.gather(
            db.write("new.tag", ts, np.zeros(5)), db.write("new.tag", ts, np.ones(5))
        )
        assert n1 == n2 == 5
        info = await db.tag("new.tag")
        r = await db.query("new.tag", 0, T0 + SEC)
        assert r.values.tolist() == [1.0] * 5
        assert (await db.query(info.id, 0, T0 + SEC)).values.tolist() == [1.0] * 5
        with pytest.raises(InvalidInput):
            await db.write("bad\x01name", [T0], [1.0])  # auto-creation still checks the name
        assert [t.name for t in await db.tags()] == ["new.tag"]


# -- queries -----------------------------------------------------------------------------


def test_query_descending_good_only_and_more(server: ServerThread) -> None:
    ts = T0 + np.arange(10, dtype=np.int64) * SEC
    q = np.where(np.arange(10) % 3 == 0, 0, 192).astype(np.uint8)
    with connect(server.url) as db:
        db.write(5, ts, np.arange(10.0), q)
        newest = db.query(5, 0, T0 + 100 * SEC, limit=3, descending=True)
        assert newest.timestamps.tolist() == ts[::-1][:3].tolist()
        good = db.query(5, 0, T0 + 100 * SEC, good_only=True)
        assert good.values.tolist() == [v for v in range(10) if v % 3]
        both = db.query(5, 0, T0 + 100 * SEC, descending=True, good_only=True)
        assert both.values.tolist() == good.values.tolist()[::-1]
        # The quality filter applies after duplicates are resolved: a later Bad
        # write of a timestamp hides the earlier Good value, it does not bring it back.
        db.write(5, ts[1:2], [99.0], [0])
        assert 1.0 not in db.query(5, 0, T0 + 100 * SEC, good_only=True).values.tolist()
        counts = db.aggregate(5, T0, T0 + 100 * SEC, 100 * SEC, "count", origin=T0, good_only=True)
        assert counts["count"].tolist() == [len(good) - 1]


def test_late_points_are_in_the_next_answer(server: ServerThread) -> None:
    ts = T0 + np.arange(0, 100, 2, dtype=np.int64) * SEC
    with connect(server.url) as db:
        db.write(7, ts, np.ones(50))
        db.flush_server()  # sealed into blocks
        db.write(7, [T0 + 51 * SEC, T0 - 10 * SEC], [5.0, 5.0])  # late, and older than all
        r = db.aggregate(7, T0 - 60 * SEC, T0 + 120 * SEC, 60 * SEC, ["count", "max"], origin=T0)
        assert r["count"].tolist() == [1, 31, 20] and r["max"].tolist() == [5.0, 5.0, 1.0]
        assert db.query(7, 0, T0 + 1000 * SEC).timestamps[0] == T0 - 10 * SEC


@pytest.mark.parametrize("descending", [False, True])
def test_paging_with_exactly_full_pages_sends_no_extra_request(
    server: ServerThread, descending: bool
) -> None:
    ts = T0 + np.arange(300, dtype=np.int64)
    with connect(server.url, max_points_per_frame=100) as db:
        db.write(6, ts, np.arange(300.0))
        before = requests_of(db, "query")
        r = db.query(6, 0, T0 + 1000, descending=descending)
        assert requests_of(db, "query") - before == 3  # three full pages; the last says no more
        want = ts[::-1] if descending else ts
        assert np.array_equal(r.timestamps, want)
        before = requests_of(db, "query")
        assert len(db.query(6, 0, T0 + 1000, limit=200)) == 200
        assert requests_of(db, "query") - before == 2


# -- analytics ---------------------------------------------------------------------------


def expected_buckets(
    ts: np.ndarray, v: np.ndarray, q: np.ndarray, start: int, end: int, iv: int, good_only: bool
) -> dict[str, list[Any]]:
    """The point aggregates as the docs define them, one bucket at a time."""
    out: dict[str, list[Any]] = {k: [] for k in ("start", "count", "min", "max", "sum", "avg")}
    out |= {"first": [], "last": []}
    b = start // iv * iv
    while b < end:
        sel = (ts >= max(b, start)) & (ts < min(b + iv, end)) & ~np.isnan(v)
        if good_only:
            sel &= q >= 192
        x = v[sel]
        out["start"].append(b)
        out["count"].append(int(x.shape[0]))
        for name, f in (("min", np.min), ("max", np.max), ("sum", np.sum), ("avg", np.mean)):
            out[name].append(float(f(x)) if x.shape[0] else np.nan)
        out["first"].append(float(x[0]) if x.shape[0] else np.nan)
        out["last"].append(float(x[-1]) if x.shape[0] else np.nan)
        b += iv
    return out


@pytest.mark.parametrize("good_only", [False, True])
def test_aggregates_match_numpy_on_disk_and_in_memory(
    server: ServerThread, good_only: bool
) -> None:
    rng = np.random.default_rng(7)
    n = 3000
    ts = T0 + np.cumsum(rng.integers(1, 2 * SEC, n))
    v = rng.normal(size=n)
    v[rng.integers(0, n, 30)] = np.nan  # NaN is missing, never propagated
    q = np.where(rng.random(n) < 0.1, 64, 192).astype(np.uint8)
    cut = 2000
    iv = 60 * SEC
    start, end = int(ts[10]) + 7, int(ts[-10])  # unaligned: partial first and last buckets
    with connect(server.url) as db:
        db.write(11, ts[:cut], v[:cut], q[:cut])
        db.flush_server()  # these points are in blocks on disk ...
        # ... and these in memory, rewriting 50 of the disk points (the later write wins)
        over = slice(cut - 50, n)
        v2, q2 = v.copy(), q.copy()
        v2[over] = rng.normal(size=n - cut + 50)
        q2[over] = np.where(rng.random(n - cut + 50) < 0.1, 0, 192)
        db.write(11, ts[over], v2[over], q2[over])
        names = ["count", "min", "max", "sum", "avg", "first", "last"]
        r = db.aggregate(11, start, end, iv, names, good_only=good_only)
    want = expected_buckets(ts, v2, q2, start, end, iv, good_only)
    assert r.start.tolist() == want["start"] and r.start[0] <= start < r.start[0] + iv
    assert r.values["count"].dtype == np.int64 and r["count"].tolist() == want["count"]
    for name in names[1:]:
        np.testing.assert_allclose(r[name], want[name], rtol=1e-12, equal_nan=True)


def test_time_weighted_averages_and_many_tags(server: ServerThread) -> None:
    with connect(server.url) as db:
        db.write(21, [0, 10 * SEC, 20 * SEC], [1.0, 3.0, 5.0])
        db.write(22, [5 * SEC], [4.0])
        r = db.aggregate(21, 0, 20 * SEC, 20 * SEC, ["twa_step", "twa_linear", "avg"])
        # step: 1.0 for 10 s then 3.0 to the end; linear: trapezoids up to the point at 20 s
        assert r["twa_step"].tolist() == [2.0] and r["twa_linear"].tolist() == [3.0]
        assert r["avg"].tolist() == [2.0]
        many = db.aggregate([21, 22], 0, 20 * SEC, 10 * SEC, "twa_step", origin=5 * SEC)
        assert list(many) == [21, 22]
        assert many[21].start.tolist() == [-5 * SEC, 5 * SEC, 15 * SEC]  # aligned to origin
        # tag 22 is unknown before its only point (no earlier point): those buckets are NaN
        assert np.isnan(many[22]["twa_step"][0]) and many[22]["twa_step"][1:].tolist() == [4, 4]
        df = r.to_pandas() if _has_pandas() else None
        assert df is None or list(df.columns) == ["twa_step", "twa_linear", "avg"]
        with pytest.raises(InvalidInput, match="aggregates"):
            db.aggregate(21, 0, 1, 1, ["median"])
        with pytest.raises(InvalidInput, match="interval"):
            db.aggregate(21, 0, 1, 0)


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def test_interpolate_and_plot_through_the_wire(server: ServerThread) -> None:
    with connect(server.url) as db:
        db.write(31, [10 * SEC, 20 * SEC], [1.0, 3.0])
        at = np.array([5, 10, 15, 20, 30]) * SEC
        prev = db.interpolate(31, at)
        assert prev.status.tolist() == [1, 0, 0, 0, 0]
        assert prev.values.tolist()[1:] == [1.0, 1.0, 3.0, 3.0] and np.isnan(prev.values[0])
        lin = db.interpolate(31, at, method="linear")
        assert lin.status.tolist() == [1, 0, 0, 0, InterpolateResult.STATUS_AFTER_LAST]
        assert lin.values.tolist()[1:4] == [1.0, 2.0, 3.0]
        gap = db.interpolate(31, at, max_gap=5 * SEC)
        assert gap.status.tolist() == [1, 0, 0, 0, 2]  # 30 s is 10 s after the last point
        grid = db.interpolate(31, start=5 * SEC, end=35 * SEC, interval=5 * SEC)
        assert grid.timestamps.tolist() == [5 * SEC * k for k in range(1, 7)]
        assert grid.values[1:].tolist() == [1.0, 1.0, 3.0, 3.0, 3.0]
        with pytest.raises(InvalidInput, match="sorted"):
            db.interpolate(31, [3, 2])
        with pytest.raises(InvalidInput, match="either"):
            db.interpolate(31, at, start=0, end=1, interval=1)

        n = 1000
        ts = np.arange(n, dtype=np.int64) * SEC
        v = np.sin(np.arange(n) / 50.0)
        db.write(32, ts, v)
        p = db.plot(32, 0, n * SEC, 10)
        assert 10 < len(p) <= 40 and np.all(np.diff(p.timestamps) > 0)
        assert {0, n - 1} <= set((p.timestamps // SEC).tolist())
        assert p.values.max() == v.max() and p.values.min() == v.min()
        assert set(p.values.tolist()) <= set(v.tolist())


# -- deletes -------------------------------------------------------------------------


def test_deletes_survive_a_restart(
    server_factory: Callable[..., ServerThread], tmp_path: Path
) -> None:
    data = tmp_path / "restart"
    ts = T0 + np.arange(100, dtype=np.int64) * SEC
    srv = server_factory(data_dir=data)
    with connect(srv.url) as db:
        tag = db.create_tag("line.speed").id
        db.write(tag, ts, np.arange(100.0))
        db.flush_server()  # half of the deleted range on disk ...
        db.write(tag, ts[:10] + SEC // 2, np.full(10, -1.0))  # ... and half in memory
        assert db.delete("line.speed", int(ts[0]), int(ts[20])) > 0
        db.write(41, ts, np.ones(100))
        db.delete_tag(41)
        db.write(tag, ts[:1], [42.0])  # written after the delete: kept
    srv.stop()
    srv = server_factory(data_dir=data)
    with connect(srv.url) as db:
        r = db.query("line.speed", 0, T0 + 1000 * SEC)
        assert r.timestamps.tolist() == [int(ts[0]), *ts[20:].tolist()]
        assert r.values[0] == 42.0 and len(db.query(41, 0, T0 + 1000 * SEC)) == 0
        with pytest.raises(InvalidInput, match="empty"):
            db.delete(tag, 10, 10)


def test_duplicate_policies_through_the_wire(server: ServerThread) -> None:
    with connect(server.url) as db:
        db.create_tag("first", duplicates="first")
        db.create_tag("reject", duplicates="reject")
        db.write("first", [1, 2], [1.0, 2.0])
        db.write("first", [2, 3], [9.0, 3.0])
        assert db.query("first", 0, 10).values.tolist() == [1.0, 2.0, 3.0]
        db.write("reject", [1], [1.0])
        with pytest.raises(InvalidInput, match="reject"):
            db.write("reject", [1, 5], [7.0, 5.0])  # the whole write is refused
        assert db.query("reject", 0, 10).values.tolist() == [1.0]


def test_per_tag_retention_trims_once_a_tenth_of_the_window_expired(tmp_path: Path) -> None:
    hour = 3600 * SEC
    with Engine.open(tmp_path / "e", EngineConfig(read_workers=0)) as eng:
        tag = eng.create_tag("short", retention_us=10 * hour).id
        eng.write(tag, np.arange(30, dtype=np.int64) * hour, np.arange(30.0))
        eng.apply_retention(now_us=29 * hour, grace_s=0)  # cutoff 19 h: points 0..18 h go
        first = eng.query(tag, 0, 100 * hour).timestamps[0]
        assert first == 19 * hour
        eng.write(tag, [30 * hour], [30.0])
        eng.apply_retention(now_us=29 * hour + hour // 2, grace_s=0)  # under a tenth: no trim
        assert eng.query(tag, 0, 100 * hour).timestamps[0] == first
        eng.apply_retention(now_us=30 * hour, grace_s=0)  # a tenth (1 h) expired: trimmed
        assert eng.query(tag, 0, 100 * hour).timestamps[0] == 20 * hour


# -- roles and the async client --------------------------------------------------------


def test_read_role_may_analyse_but_not_change(server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(tokens=(f"read:{READ_SECRET}", f"write:{WRITE_SECRET}"))
    with connect(srv.url, token=WRITE_SECRET) as writer:
        writer.create_tag("t")
        writer.write("t", [1, 2, 3], [1.0, 2.0, 3.0])
    with connect(srv.url, token=READ_SECRET) as reader:
        assert reader.aggregate("t", 0, 10, 10, "count")["count"].tolist() == [3]
        assert reader.interpolate("t", [2]).values.tolist() == [2.0]
        assert reader.plot("t", 0, 10, 1).values.tolist() == [1.0, 3.0]  # first = min, last = max
        assert reader.tag("t").name == "t" and len(reader.tags()) == 1
        for call in (
            lambda: reader.delete("t", 0, 10),
            lambda: reader.delete_tag("t"),
            lambda: reader.create_tag("u"),
            lambda: reader.update_tag("t", unit="m"),
            lambda: reader.rename_tag("t", "u"),
            lambda: reader.remove_tag("t"),
        ):
            with pytest.raises(PermissionDenied):
                call()
        assert len(reader.query("t", 0, 10)) == 3  # nothing changed


async def test_async_client_historian_ops(server: ServerThread) -> None:
    async with await AsyncClient.connect(server.url) as db:
        info = await db.create_tag("a.b", unit="m")
        await db.write("a.b", [1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0])
        agg, interp, plot = await asyncio.gather(
            db.aggregate("a.b", 0, 4, 2, ["sum", "count"]),
            db.interpolate("a.b", [2, 3], method="linear"),
            db.plot("a.b", 0, 5, 1),
        )
        assert agg["sum"].tolist() == [1.0, 5.0] and agg["count"].tolist() == [1, 2]
        assert interp.values.tolist() == [2.0, 3.0] and plot.timestamps.tolist() == [1, 4]
        assert (await db.update_tag(info.id, description="d")).description == "d"
        assert (await db.rename_tag("a.b", "a.c")).name == "a.c"
        assert await db.delete("a.c", 0, 3) > 0
        assert (await db.query("a.c", 0, 10)).values.tolist() == [3.0, 4.0]
        assert await db.delete_tag(info.id) > 0
        assert [t.id for t in await db.tags("a.*")] == [info.id]
        assert (await db.tag(info.id)).name == "a.c"
        assert (await db.remove_tag("a.c")).id == info.id
        assert await db.tags() == []


# -- the wire, by hand, and the CLI ------------------------------------------------------


def test_hand_made_historian_requests(server: ServerThread, raw: Callable[..., Any]) -> None:
    conn = raw(server)
    assert conn.call("tag_create", name="w.t", unit="m")["tag"]["name"] == "w.t"
    ts = np.array([0, 10, 20], "<i8").tobytes()
    assert conn.call("write", tag="w.t", ts=ts, values=np.ones(3, "<f8").tobytes())["ok"]
    resp = conn.call(
        "aggregate", tag="w.t", start=0, end=30, interval=10, aggregates=["count", "avg"]
    )
    assert np.frombuffer(resp["start"], "<i8").tolist() == [0, 10, 20]
    assert np.frombuffer(resp["values"]["count"], "<i8").tolist() == [1, 1, 1]
    assert np.frombuffer(resp["values"]["avg"], "<f8").tolist() == [1.0, 1.0, 1.0]
    many = conn.call(
        "aggregate", tags=["w.t", 999], start=0, end=30, interval=30, aggregates=["count"]
    )
    counts = [np.frombuffer(r["values"]["count"], "<i8").tolist() for r in many["results"]]
    assert counts == [[3], [0]]
    q = conn.call("query", tag="w.t", start=0, end=30, limit=2)
    assert q["more"] is True and conn.call("query", tag="w.t", start=0, end=30)["more"] is False
    interp = conn.call("interpolate", tag="w.t", times={"start": 5, "end": 25, "interval": 10})
    assert np.frombuffer(interp["status"], "u1").tolist() == [0, 0]
    one_bucket = {"tag": "w.t", "start": 0, "end": 1, "interval": 1}
    for op, fields, field in [
        ("aggregate", {**one_bucket, "aggregates": "avg"}, "aggregates"),
        ("interpolate", {"tag": "w.t", "times": [1, 2]}, "times"),
        ("plot", {"tag": "w.t", "start": 0, "end": 1, "intervals": 0}, "intervals"),
        ("delete", {"tag": "w.t", "start": "0", "end": 1}, "start"),
        ("tag_create", {"name": "x", "retention_us": -5}, "retention_us"),
        ("query", {"tag": "w.t", "start": 0, "end": 1, "good_only": 1}, "good_only"),
    ]:
        resp = conn.call(op, **fields)
        assert resp["error"]["code"] == InvalidInput.code and field in resp["error"]["message"]
    assert conn.call("plot", tag="nope", start=0, end=1, intervals=1)["error"]["code"] == (
        NotFound.code
    )


def test_cli_tags_aggregate_delete_and_query_flags(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse_duration("5m") == 300 * SEC and parse_duration("250") == 250
    with pytest.raises(InvalidInput, match="duration"):
        parse_duration("5 minutes")
    url = ["--url", server.url]
    assert main([*url, "tag", "create", "cli.t", "--unit", "bar", "--retention", "30d"]) == 0
    out = capsys.readouterr().out
    assert "cli.t" in out and "bar" in out and str(30 * 86_400 * SEC) in out
    with connect(server.url) as db:
        db.write("cli.t", T0 + np.arange(0, 600, 60, dtype=np.int64) * SEC, np.arange(10.0))
    assert main([*url, "tag", "list", "cli.*"]) == 0
    assert "cli.t" in capsys.readouterr().out
    span = ["--start", str(T0), "--end", str(T0 + 600 * SEC), "--origin", str(T0)]
    agg = [*url, "aggregate", "cli.t", *span, "--interval", "5m", "--agg", "count,avg"]
    assert main([*agg, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "bucket_start_us,count,avg",
        f"{T0},5,2.0",
        f"{T0 + 300 * SEC},5,7.0",
    ]
    assert main(agg) == 0 and "(2 buckets)" in capsys.readouterr().out
    query = [*url, "query", "--tag", "cli.t", "--start", "0", "--end", str(T0 + 10**12)]
    assert main([*query, "--desc", "--limit", "2", "--format", "csv"]) == 0
    assert [line.split(",")[1] for line in capsys.readouterr().out.splitlines()[1:]] == [
        "9.0",
        "8.0",
    ]
    assert main([*url, "delete", "cli.t", "--start", str(T0), "--end", str(T0 + 300 * SEC)]) == 0
    assert "LSN" in capsys.readouterr().out
    assert main([*url, "last", "cli.t"]) == 0 and "9.0" in capsys.readouterr().out
    assert main([*url, "tag", "rename", "cli.t", "cli.u"]) == 0
    assert main([*url, "tag", "show", "cli.u", "--json"]) == 0
    assert '"name": "cli.u"' in capsys.readouterr().out
    assert main([*url, "tag", "rm", "cli.u"]) == 0
    capsys.readouterr()
    assert main([*url, "tag", "show", "cli.u"]) == 1
    assert "no tag" in capsys.readouterr().err


def test_config_exposes_auto_create_and_retention() -> None:
    cfg = ServerConfig.load(["--retention-us", "3600000000"], {"XTSDB_AUTO_CREATE_TAGS": "1"})
    assert cfg.auto_create_tags and cfg.engine_config().retention_us == 3_600_000_000
    assert not ServerConfig().auto_create_tags and ServerConfig().engine_config().retention_us == 0
    with pytest.raises(ConfigError, match="retention_us"):
        ServerConfig(retention_us=-1)


# -- large answers as pieces ----------------------------------------------------------------


def test_large_answers_to_a_slow_reader_arrive_whole(
    server: ServerThread, raw: Callable[..., Any]
) -> None:
    """Answers framed as array views wait in the transport while the client does not
    read; the server stops reading that client meanwhile, and every byte arrives."""
    n = 200_000
    ts = np.arange(n, dtype=np.int64) * 10
    values = np.random.default_rng(3).normal(size=n)
    with connect(server.url) as db:
        db.write(90, ts, values)
        slow, observer = raw(server, timeout=20), raw(server)
        for i in range(8):  # ~27 MB of answers: more than the socket buffers hold
            slow.send(QUERY.build(100 + i, 90, 0, 10 * n, descending=i % 2 == 1))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            gauges = db.stats()["server"]
            if gauges["write_buffer_bytes"] > 0 and gauges["readers_paused"] >= 1:
                break
            time.sleep(0.02)
        assert gauges["write_buffer_bytes"] > 0 and gauges["readers_paused"] >= 1, gauges
        assert observer.call("ping")["ok"]  # other connections are served meanwhile
        got = {}
        for _ in range(8):
            resp = slow.recv()
            got[resp["id"]] = tuple(QUERY.parse_answer(resp))[:3]
        for i in range(8):
            r_ts, r_values, _ = got[100 + i]
            step = -1 if i % 2 else 1
            assert np.array_equal(r_ts, ts[::step]) and np.array_equal(r_values, values[::step])
