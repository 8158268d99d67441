"""A /write body's new tags: all created in one catalog transaction, durable, bad names alone.

The engine on a temporary directory and :func:`influx_write.prepare`, as the
/write route runs it; SQLite's own statement trace says how many transactions
the catalog made.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from xtsdb.protocol.errors import InvalidInput
from xtsdb.server.engine import Engine
from xtsdb.server.influx_write import prepare, prepare_inline


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = Engine.open(tmp_path / "data")
    try:
        yield e
    finally:
        e.close()


def traced(engine: Engine) -> list[str]:
    statements: list[str] = []
    engine.catalog._db.set_trace_callback(statements.append)
    return statements


def transactions(statements: list[str]) -> tuple[int, int]:
    """(transactions that inserted tags, INSERTs made outside any BEGIN ... COMMIT)."""
    begun, inside, outside, count = False, 0, 0, 0
    for s in statements:
        word = s.split(None, 1)[0].upper()
        if word == "BEGIN":
            begun, inside = True, 0
        elif word in ("COMMIT", "END"):
            count += inside > 0
            begun = False
        elif word == "INSERT":
            if begun:
                inside += 1
            else:
                outside += 1
    return count, outside


def body(hosts: int, fields: int, t: int = 1) -> bytes:
    return b"".join(
        f"cpu,host=h{h:03d} {','.join(f'f{k}={k}.5' for k in range(fields))} {t}\n".encode()
        for h in range(hosts)
    )


def test_new_names_of_a_body_are_one_transaction(engine: Engine, tmp_path: Path) -> None:
    statements = traced(engine)
    prep = prepare(engine, body(40, 5), "s", 0, 0)
    assert prep.errors == [] and prep.created == 200
    assert transactions(statements) == (1, 0)
    # durable: the catalog file alone, opened again, holds every name
    engine.close()
    again = Engine.open(tmp_path / "data")
    try:
        names = {i.name for i in again.catalog.all()}
        assert {f"cpu,host=h{h:03d}.f{k}" for h in range(40) for k in range(5)} <= names
    finally:
        again.close()
        engine.catalog = again.catalog  # the fixture closes what it holds


def test_known_names_make_no_transaction(engine: Engine) -> None:
    prepare(engine, body(10, 3), "s", 0, 0)
    statements = traced(engine)
    prep = prepare(engine, body(10, 3, t=2), "s", 0, 0)
    assert prep.created == 0 and transactions(statements) == (0, 0)


def test_a_bad_name_is_refused_alone_and_the_rest_created(engine: Engine) -> None:
    long = "x" * 300  # the catalog's limit is 256 characters
    data = f"m,h=a v=1 1\nm,h={long} v=2 2\nm,h=b v=3 3\n".encode()
    statements = traced(engine)
    prep = prepare(engine, data, "s", 0, 0)
    assert [no for no, _ in prep.errors] == [2] and "256" in prep.errors[0][1]
    assert prep.created == 2 and transactions(statements) == (1, 0)
    assert engine.catalog.get("m,h=a.v") is not None and engine.catalog.get("m,h=b.v") is not None
    (queued,) = prep.batches
    assert len({tag for tag, _ in queued.batch.runs()}) == 2 and queued.batch.n_points == 2


def test_create_tags_with_types_and_an_existing_name(engine: Engine) -> None:
    old = engine.create_tag("a", value_type="int64")
    got = engine.create_tags([("a", {}), ("b", {"value_type": "bool"}), ("", {}), ("b", {})])
    assert got[0] == old
    assert isinstance(got[1], type(old)) and got[1].value_type == "bool"
    assert isinstance(got[2], InvalidInput) and got[3] == got[1]
    assert engine.catalog.get("b") == got[1] and len(engine.catalog.all()) == 2
    ids = [i.id for i in engine.catalog.all()]
    assert len(set(ids)) == 2


def test_inline_prepare_declines_what_may_wait_for_the_disk(engine: Engine) -> None:
    """On the event loop: a new name or a 'reject' tag hands the slice to the pool, and
    declining touches nothing; with every tag known, the very batches ``prepare`` makes."""
    statements = traced(engine)
    assert prepare_inline(engine, body(3, 2), "s", 0, 0) is None
    assert statements == [] and engine.catalog.get("cpu,host=h000.f0") is None
    prepare(engine, body(3, 2), "s", 0, 0)
    got = prepare_inline(engine, body(3, 2, t=5), "s", 0, 7)
    want = prepare(engine, body(3, 2, t=5), "s", 0, 7)
    assert got is not None and got.created == 0 and got.errors == want.errors == []
    assert [(q.batch.n_points, q.lines.tolist()) for q in got.batches] == [
        (q.batch.n_points, q.lines.tolist()) for q in want.batches
    ]
    assert got.batches[0].batch.n_points == 6
    engine.create_tags([("strict,host=a.v", {"duplicates": "reject"})])
    assert prepare_inline(engine, b"strict,host=a v=1 1\n", "s", 0, 0) is None
    mixed = body(3, 2, t=6) + b"strict,host=a v=1 1\n"
    assert prepare_inline(engine, mixed, "s", 0, 0) is None
