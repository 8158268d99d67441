"""Aggregates, interpolation and plot mode through the engine: disk, memory, deletes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xtsdb.protocol.errors import InvalidInput
from xtsdb.server.engine import Engine, EngineConfig

CFG = EngineConfig(chunk_size=256 * 1024, meta_extents=1, block_points=300, read_workers=0)
MIN = 60_000_000


@pytest.fixture
def eng(tmp_path: Path):  # type: ignore[no-untyped-def]
    e = Engine.open(tmp_path / "db", CFG)
    # One point a minute for 10 hours: value = minute index; half on disk, half in memory.
    ts = np.arange(600, dtype=np.int64) * MIN
    e.write(1, ts[:300], np.arange(300.0))
    e.flush()
    e.write(1, ts[300:], np.arange(300.0, 600.0))
    yield e
    e.close()


def test_bucket_aggregates_match_numpy_across_disk_and_memory(eng: Engine) -> None:
    b = eng.aggregate(1, 0, 600 * MIN, 60 * MIN, ["count", "min", "max", "avg", "first", "last"])
    assert b.start.tolist() == [h * 60 * MIN for h in range(10)]
    v = np.arange(600.0).reshape(10, 60)
    assert b.values["count"].tolist() == [60] * 10
    assert np.array_equal(b.values["min"], v.min(axis=1))
    assert np.array_equal(b.values["max"], v.max(axis=1))
    assert np.allclose(b.values["avg"], v.mean(axis=1))
    assert np.array_equal(b.values["first"], v[:, 0]) and np.array_equal(b.values["last"], v[:, -1])


def test_time_weighted_average_uses_the_point_before_the_range(eng: Engine) -> None:
    # Bucket [30.5 min, 31.5 min): value 30 holds until 31 min, then 31: average 30.5.
    start = 30 * MIN + MIN // 2
    b = eng.aggregate(1, start, start + MIN, MIN, ["twa_step", "count"], origin_us=start)
    assert b.values["count"].tolist() == [1]
    assert b.values["twa_step"].tolist() == [30.5]


def test_deleted_points_are_not_aggregated(eng: Engine) -> None:
    eng.delete(1, 0, 30 * MIN)
    b = eng.aggregate(1, 0, 60 * MIN, 60 * MIN, ["count", "min"])
    assert b.values["count"].tolist() == [30] and b.values["min"].tolist() == [30.0]


def test_interpolation_previous_and_linear(eng: Engine) -> None:
    at = np.array([-MIN, 10 * MIN, 10 * MIN + MIN // 4, 599 * MIN + 1])
    _, prev, status = eng.interpolate(1, at, "previous")
    assert np.isnan(prev[0]) and status[0] == 1  # nothing before the first point
    assert prev[1:].tolist() == [10.0, 10.0, 599.0]
    _, lin, status = eng.interpolate(1, at, "linear")
    assert lin[1:3].tolist() == [10.0, 10.25] and status[3] == 3  # after the last point
    with pytest.raises(InvalidInput, match="sorted"):
        eng.interpolate(1, at[::-1], "linear")


def test_plot_mode_keeps_extremes_per_column(eng: Engine) -> None:
    eng.write(1, [123 * MIN + 1], [-1000.0])  # a spike must survive the thinning
    p = eng.plot(1, 0, 600 * MIN, 10)
    assert len(p) <= 40 and -1000.0 in p.values.tolist()
    assert p.timestamps[0] == 0 and p.timestamps[-1] == 599 * MIN
    assert np.all(np.diff(p.timestamps) > 0)


def test_bad_arguments_are_invalid_input(eng: Engine) -> None:
    with pytest.raises(InvalidInput):
        eng.aggregate(1, 0, 10, 0, ["avg"])
    with pytest.raises(InvalidInput, match="aggregates"):
        eng.aggregate(1, 0, 10, 5, ["median"])
    with pytest.raises(InvalidInput):
        eng.plot(1, 0, 10, 0)
