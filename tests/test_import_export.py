"""``xtsdb import`` / ``xtsdb export`` in-process (``main(argv)``) against a real server,
on real files; Parquet and pandas parts skip when their optional package is missing."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from xtsdb.client import connect
from xtsdb.client.cli import main
from xtsdb.client.csv_chunks import detect, parse_long, parse_wide
from xtsdb.server.app import ServerThread

T0 = 1_700_000_000_000_000


def run(srv: ServerThread, *argv: str) -> int:
    return main(["--url", srv.url, *argv])


def points(srv: ServerThread, tag: int | str) -> tuple[list[int], list[float], list[int]]:
    with connect(srv.url) as db:
        r = db.query(tag, 0, 1 << 60)
    return r.timestamps.tolist(), r.values.tolist(), r.qualities.tolist()


def long_rows(n: int, tags: list[str], seed: int = 0) -> list[tuple[str, int, float, int]]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=n).tolist()
    values[:3] = [float("nan"), float("inf"), -0.0]
    q = rng.integers(0, 256, size=n).tolist()
    return [(tags[i % len(tags)], T0 + i * 1000, values[i], q[i]) for i in range(n)]


def write_long(path: Path, rows: list[tuple[str, int, float, int]], header: bool = True) -> None:
    head = "tag,timestamp,value,quality\n" if header else ""
    path.write_text(head + "".join(f"{t},{ts},{v!r},{q}\n" for t, ts, v, q in rows))


def test_long_csv_round_trip_with_ids(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = long_rows(5_000, ["21", "22", "23"])
    src = tmp_path / "in.csv"
    write_long(src, rows)
    assert run(server, "import", str(src), "--chunk", "700") == 0
    assert "imported 5,000 rows (5,000 points, 3 tags" in capsys.readouterr().out
    for tag in (21, 22, 23):
        want = [r for r in rows if r[0] == str(tag)]
        ts, values, q = points(server, tag)
        assert ts == [r[1] for r in want] and q == [r[3] for r in want]
        assert np.array_equal(values, [r[2] for r in want], equal_nan=True)

    out = tmp_path / "out.csv"
    assert run(server, "export", "--tags", "21,22,23", str(out)) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "tag,timestamp,value,quality"
    # export is grouped by tag within time windows; as a set, the rows are the input
    assert sorted(lines[1:]) == sorted(f"{t},{ts},{v!r},{q}" for t, ts, v, q in rows)


def test_names_iso_times_and_no_header(server: ServerThread, tmp_path: Path) -> None:
    src = tmp_path / "named.csv"
    src.write_text(
        "# exported from the old historian\n"
        "FIC101.PV,2024-05-01T00:00:00Z,1.5\n"
        "\n"
        '"TI 7, inlet",2024-05-01T02:00:00+02:00,2.5\n'
        "FIC101.PV,1714521601000000,3.5\n"
    )
    assert run(server, "import", str(src)) == 1  # unknown names stop the import ...
    assert run(server, "import", str(src), "--create-tags") == 0  # ... unless asked to create
    two = [1714521600000000, 1714521601000000]
    assert points(server, "FIC101.PV") == (two, [1.5, 3.5], [192, 192])
    assert points(server, "TI 7, inlet") == ([1714521600000000], [2.5], [192])


def test_wide_csv_round_trip(server: ServerThread, tmp_path: Path) -> None:
    src = tmp_path / "wide.csv"
    src.write_text(f"timestamp,31,32\n{T0},1.5,\n{T0 + 1000},,2.5\n{T0 + 2000},3.5,4.5\n")
    assert run(server, "import", str(src)) == 0
    assert points(server, 31) == ([T0, T0 + 2000], [1.5, 3.5], [192, 192])
    assert points(server, 32) == ([T0 + 1000, T0 + 2000], [2.5, 4.5], [192, 192])
    out = tmp_path / "out.csv"
    assert run(server, "export", "--tags", "31,32", "--layout", "wide", str(out)) == 0
    assert out.read_text() == src.read_text()


def test_bad_line_stops_with_line_number_and_committed_count(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = long_rows(1_000, ["41"])
    src = tmp_path / "bad.csv"
    write_long(src, rows)
    text = src.read_text().splitlines()
    text[600] = "41,1700000000600000,three,192"  # line 601 of the file
    src.write_text("\n".join(text) + "\n")
    assert run(server, "import", str(src), "--chunk", "256") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 601" in err and "'three'" in err
    assert "599 rows, 599 points committed" in err  # every row above the bad line
    ts, _, _ = points(server, 41)
    assert ts == [r[1] for r in rows[:599]]


def test_resume_skips_rows_already_imported(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = long_rows(3_000, ["51", "52"])
    src = tmp_path / "all.csv"
    write_long(src, rows[:1_000])  # a first run that stopped a third of the way
    assert run(server, "import", str(src)) == 0
    with connect(server.url) as db:  # a later write to one tag, which resume must not undo
        db.write(51, [rows[0][1]], [99.0])
    write_long(src, rows)
    capsys.readouterr()
    assert run(server, "import", str(src), "--resume", "--chunk", "500") == 0
    assert "1,000 points skipped as already stored" in capsys.readouterr().out
    for tag in ("51", "52"):
        ts, _, _ = points(server, int(tag))
        assert ts == [r[1] for r in rows if r[0] == tag]
    assert points(server, 51)[1][0] == 99.0  # not rewritten


def test_gzip_is_not_csv_and_bad_layout_is_clear(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "x.csv"
    src.write_text("a,b\n1,2\n")
    assert run(server, "import", str(src)) == 1
    assert "expected 'tag,timestamp,value[,quality]'" in capsys.readouterr().err
    src.write_bytes(gzip.compress(b"1,2,3\n"))
    assert run(server, "import", str(src)) == 1
    assert run(server, "import", str(src), "--layout", "wide") == 1
    capsys.readouterr()
    src.write_bytes(b"\x1f\x8b\x08\x00\r\x00,1,2\n")  # a CR inside a field: csv.Error
    assert run(server, "import", str(src)) == 1
    assert "line 1 is not CSV" in capsys.readouterr().err


def test_chunk_parsers_fast_and_slow_paths_agree() -> None:
    lines = [f"{i % 5},{T0 + i},{i * 0.25!r},{i % 256}\n".encode() for i in range(2_000)]
    fast = parse_long(lines, 1, True)
    slow = parse_long([b"# forces the slow path\n", *lines], 0, True)
    assert fast.error is None and slow.error is None
    for a, b in ((fast.ts, slow.ts), (fast.values, slow.values), (fast.qualities, slow.qualities)):
        assert np.array_equal(a, b)
    assert [fast.keys[i] for i in fast.key_index] == [slow.keys[i] for i in slow.key_index]
    wide = parse_wide([b"1,2,,3\n", b"2,,5,\n"], 2, ("a", "b", "c"))
    cells = zip(wide.key_index.tolist(), wide.ts.tolist(), wide.values.tolist(), strict=True)
    assert sorted(cells) == [(0, 1, 2.0), (1, 2, 5.0), (2, 1, 3.0)]
    assert detect(["Time", "A"], None, "f").columns == ("A",)
    naive = parse_long([b"a,2024-05-01T00:00:00,1\n"], 1, False)
    assert naive.error is not None and "no zone" in naive.error[1]
    cut = parse_long([b"a,1," + b"1" * 60 + b"\n"], 1, False)  # longer than a fast-path cell
    assert cut.error is None and cut.values.tolist() == [float("1" * 60)]


def test_parquet_round_trip(server: ServerThread, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    rows = long_rows(2_000, ["61", "62"])
    src = tmp_path / "in.csv"
    write_long(src, rows)
    assert run(server, "import", str(src)) == 0
    pq_long, pq_wide = tmp_path / "long.parquet", tmp_path / "wide.parquet"
    assert run(server, "export", "--tags", "61,62", str(pq_long)) == 0
    assert run(server, "export", "--tags", "61,62", "--layout", "wide", str(pq_wide)) == 0
    import pyarrow.parquet as pq

    table = pq.read_table(pq_long)
    assert table.num_rows == 2_000 and str(table.schema.field("timestamp").type) == (
        "timestamp[us, tz=UTC]"
    )
    # back into other tags, through a renamed wide file: 61 -> 71, 62 -> 72
    wide = pq.read_table(pq_wide).rename_columns(["timestamp", "71", "72"])
    pq.write_table(wide, tmp_path / "renamed.parquet")
    assert run(server, "import", str(tmp_path / "renamed.parquet")) == 0
    for old, new in ((61, 71), (62, 72)):
        a, b = points(server, old), points(server, new)
        assert a[0] == b[0] and np.array_equal(a[1], b[1], equal_nan=True)
    assert run(server, "import", str(pq_long)) == 0  # the long file imports as well


def test_pandas_wide_and_long_round_trip(server: ServerThread) -> None:
    pd = pytest.importorskip("pandas")
    index = pd.DatetimeIndex(
        ["2024-05-01 02:00:00", "2024-05-01 02:00:01", "2024-05-01 02:00:02"], name="time"
    ).tz_localize("Europe/Berlin")  # = 00:00:00Z ...
    df = pd.DataFrame({"FIC101.PV": [1.5, np.nan, 3.5], 82: [10.0, 20.0, np.nan]}, index=index)
    with connect(server.url) as db:
        db.create_tag("FIC101.PV")
        assert db.write_df(df) == 4  # NaN cells are no points
        got = db.query_df(["FIC101.PV", 82], 0, 1 << 60)
        assert list(got.columns) == ["FIC101.PV", 82] and str(got.index.tz) == "UTC"
        assert got.index[0] == pd.Timestamp("2024-05-01T00:00:00Z")
        utc = df.tz_convert("UTC")
        pd.testing.assert_frame_equal(got, utc, check_names=False, check_freq=False)
        long = db.query_df(82, 0, 1 << 60, layout="long")
        assert long["tag"].tolist() == [82, 82] and long["quality"].tolist() == [192, 192]
        # a long frame back into two other tags, with qualities
        long2 = pd.DataFrame(
            {"tag": [83, 84, 83], "value": [1.0, 2.0, 3.0], "quality": [192, 0, 192]},
            index=pd.to_datetime([1, 2, 3], unit="s", utc=True),
        )
        assert db.write_df(long2, tag_column="tag") == 3
        assert points(server, 83) == ([1_000_000, 3_000_000], [1.0, 3.0], [192, 192])
        assert points(server, 84) == ([2_000_000], [2.0], [0])
        with pytest.raises(ValueError, match="naive"):
            db.write_df(df.tz_localize(None))


async def test_pandas_async(server: ServerThread) -> None:
    pd = pytest.importorskip("pandas")
    from xtsdb.client import AsyncClient

    df = pd.DataFrame({91: [1.0, 2.0]}, index=pd.to_datetime([1, 2], unit="ms", utc=True))
    async with await AsyncClient.connect(server.url) as db:
        assert await db.write_df(df) == 2
        got = await db.query_df([91], 0, 10_000)
    assert got[91].tolist() == [1.0, 2.0]
    assert list(got.index) == [
        pd.Timestamp(1, unit="ms", tz="UTC"),
        pd.Timestamp(2, unit="ms", tz="UTC"),
    ]


NAN_BITS = [
    0x7FF8000000000000,  # the canonical quiet NaN: written 'nan'
    0xFFF8000000000000,  # negative quiet NaN (what 0 * inf gives on x86)
    0x7FF0000000000001,  # signalling NaN, smallest payload
    0x7FF8000000000ABC,  # quiet NaN with a payload
    0xFFF7FFFFFFFFFFFF,  # negative signalling NaN, largest payload
]
PLAIN = [1.5, float("inf"), -0.0]


def _bits(values: list[float]) -> list[int]:
    return np.asarray(values, dtype=np.float64).view(np.uint64).tolist()


@pytest.mark.parametrize("fmt", ["long.csv", "wide.csv", "long.parquet"])
def test_nan_payloads_round_trip_bit_exact(
    server_factory: Callable[..., ServerThread], tmp_path: Path, fmt: str
) -> None:
    if fmt.endswith("parquet"):
        pytest.importorskip("pyarrow")
    want = _bits(PLAIN) + NAN_BITS
    values = np.asarray(want, dtype=np.uint64).view(np.float64)
    ts = T0 + np.arange(len(want), dtype=np.int64) * 1000
    src, dst = server_factory(), server_factory()
    with connect(src.url) as db:
        db.write(41, ts, values)
        db.write(42, ts[::-1].copy(), values)
    assert _bits(points(src, 41)[1]) == want  # the server keeps them
    out = tmp_path / fmt
    layout = ["--layout", "wide"] if fmt.startswith("wide") else []
    assert run(src, "export", "--tags", "41,42", *layout, str(out)) == 0
    if fmt.endswith("csv"):  # canonical NaN as 'nan', the others in the documented hex form
        text = out.read_text()
        assert ",nan" in text and "nan(0x7ff0000000000001)" in text
        assert "nan(0x7ff8000000000000)" not in text
    assert run(dst, "import", str(out)) == 0
    assert points(dst, 41)[0] == ts.tolist()
    assert _bits(points(dst, 41)[1]) == want
    assert _bits(points(dst, 42)[1]) == want[::-1]


def test_chunk_parsers_read_nan_payloads_fast_and_slow() -> None:
    cells = [b"nan(0x7ff0000000000001)", b"1.5", b"nan(0xFFF8000000000000)", b"nan"]
    want = [0x7FF0000000000001, _bits([1.5])[0], 0xFFF8000000000000, 0x7FF8000000000000]
    fast = parse_long([b"7,%d,%s\n" % (i, c) for i, c in enumerate(cells)], 1, False)
    slow = parse_long([b'"7",%d,%s\n' % (i, c) for i, c in enumerate(cells)], 1, False)
    wide = parse_wide([b"%d,%s\n" % (i, c) for i, c in enumerate(cells)], 1, ("7",))
    for chunk in (fast, slow, wide):
        assert chunk.error is None and chunk.values.view(np.uint64).tolist() == want
    for bad in (b"nan(0x7ff0)", b"nan(0x0000000000000001)", b"nan(0x7ff0000000000000)"):
        bad_long = parse_long([b"7,1,%s\n" % bad], 1, False)
        bad_wide = parse_wide([b"1,%s\n" % bad], 1, ("7",))
        for chunk in (bad_long, bad_wide):
            assert chunk.error is not None and chunk.error[0] == 1, bad
