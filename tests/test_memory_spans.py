"""A query merges only the in-memory parts whose time span meets its range.

Each MemBuffer part (one write's points of one tag) carries its oldest and
newest timestamp, so a query of old data no longer concatenates and sorts
every part a tag received since its last seal. Skipping a part can change an
answer only if the span is wrong, so the answers are checked against a plain
reference model over random writes (unordered, duplicated, multi-tag),
deletes, seals and ranges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xtsdb.server.engine import Engine, EngineConfig
from xtsdb.server.engine.membuffer import MemBuffer, overlapping, span_of

T_MAX = 400

write = st.tuples(
    st.just("write"),
    st.lists(st.integers(0, T_MAX), min_size=1, max_size=30),  # unordered, repeats
    st.integers(0, 2),  # tag
)
delete = st.tuples(st.just("delete"), st.integers(0, T_MAX), st.integers(1, 40))  # start, length
seal = st.tuples(st.just("seal"))
steps = st.lists(st.one_of(write, write, write, delete, seal), min_size=1, max_size=25)


def _check(eng: Engine, model: dict[int, dict[int, float]], ranges: list[tuple[int, int]]) -> None:
    for tag in range(3):
        for lo, hi in ranges:
            got = eng.query(tag, lo, hi)
            want = sorted((t, v) for t, v in model[tag].items() if lo <= t < hi)
            assert got.timestamps.tolist() == [t for t, _ in want], (tag, lo, hi)
            assert got.values.tolist() == [v for _, v in want], (tag, lo, hi)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    steps=steps,
    ranges=st.lists(st.tuples(st.integers(0, T_MAX), st.integers(0, T_MAX + 1)), max_size=6),
)
def test_answers_equal_a_reference_model(
    tmp_path_factory: object,
    steps: list[tuple],
    ranges: list[tuple[int, int]],  # type: ignore[type-arg]
) -> None:
    path = Path(tmp_path_factory.mktemp("spans"))  # type: ignore[attr-defined]
    eng = Engine.open(path / "db", EngineConfig(block_points=1 << 20, workers=0))
    model: dict[int, dict[int, float]] = {0: {}, 1: {}, 2: {}}
    counter = 0.0
    try:
        for step in steps:
            if step[0] == "write":
                _, times, tag = step
                values = [counter + i for i in range(len(times))]
                counter += len(times)
                eng.write(tag, np.array(times, np.int64), np.array(values))
                for t, v in zip(times, values, strict=True):
                    model[tag][t] = v  # later wins, inside a write too
            elif step[0] == "delete":
                _, a, length = step
                b = a + length
                for tag in range(3):
                    eng.delete(tag, a, b)
                    model[tag] = {t: v for t, v in model[tag].items() if not a <= t < b}
            else:
                eng.flush()
        _check(eng, model, [(0, T_MAX + 1), *ranges])
    finally:
        eng.close()


def test_a_query_of_old_time_skips_the_newer_parts(tmp_path: Path) -> None:
    eng = Engine.open(tmp_path / "db", EngineConfig(block_points=1 << 20, workers=0))
    try:
        for k in range(100):  # 100 writes of 80 points each, appending new time
            ts = np.arange(k * 80, (k + 1) * 80, dtype=np.int64)
            eng.write(7, ts, ts.astype(np.float64))
        snap = eng._reads.snapshot(7)
        assert snap is not None and len(snap.memory) == 100
        assert len(snap.memory_in(0, 80)) == 1
        assert len(snap.memory_in(790, 1000)) == 4  # 720-799, 800-879, 880-959, 960-1039
        assert snap.memory_in(9000, 9100) == []
        got = eng.query(7, 790, 1000)
        assert got.timestamps.tolist() == list(range(790, 1000))
        assert got.stats.points_from_memory == 210
    finally:
        eng.close()


def test_spans_follow_a_partial_delete() -> None:
    buf = MemBuffer()
    ts = np.array([5, 1, 9, 3], np.int64)
    buf.append(ts, np.zeros(4), np.full(4, 192, np.uint8), lsn=1)
    buf.append(np.array([20, 21], np.int64), np.zeros(2), np.full(2, 192, np.uint8), lsn=2)
    assert buf.spans == [(1, 9), (20, 21)]
    assert buf.drop_range(8, 21) == 2  # 9 and 20 go
    assert buf.spans == [span_of(buf.parts[0][0]), (21, 21)] == [(1, 5), (21, 21)]
    assert overlapping(buf.parts, buf.spans, 6, 21) == []
    assert len(overlapping(buf.parts, buf.spans, 5, 6)) == 1
