"""The ``xtsdb`` command line tool, run in-process with ``main(argv)`` against a real server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from xtsdb.client import connect
from xtsdb.client.cli import main
from xtsdb.server.app import ServerThread


def test_ping(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", server.url, "ping"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pong from ") and out.rstrip().endswith(" ms")


def test_ping_uses_env_url(
    server: ServerThread, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XTSDB_URL", server.url)
    assert main(["ping"]) == 0
    assert server.url in capsys.readouterr().out


def test_ping_fails_with_one_line_and_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed again below: connections are refused
    assert main(["--url", f"xtsdb://127.0.0.1:{port}", "ping"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("xtsdb: error: cannot connect") and err.count("\n") == 1


def test_write_csv_then_query_csv_round_trip(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    n = 2_500
    ts = np.cumsum(rng.integers(1, 10_000, n)) + 1_700_000_000_000_000
    values = rng.normal(size=n).tolist()
    values[3:6] = [float("nan"), float("inf"), 0.1]
    quality = rng.integers(0, 256, n)
    lines = [
        f"{t},{v!r},{q}" for t, v, q in zip(ts.tolist(), values, quality.tolist(), strict=True)
    ]
    path = tmp_path / "in.csv"
    path.write_text("timestamp_us,value,quality\n" + "\n".join(lines) + "\n")

    argv = ["--url", server.url, "write-csv", str(path), "--tag", "42", "--chunk", "1000"]
    assert main(argv) == 0
    assert f"wrote {n} points to tag 42" in capsys.readouterr().out

    argv = ["--url", server.url, "query", "--tag", "42", "--start", "0", "--end", str(1 << 60)]
    assert main([*argv, "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "timestamp_us,value,quality"
    assert out[1:] == lines  # exact: repr() round-trips every float, nan and inf included

    assert main([*argv, "--format", "table", "--limit", "2"]) == 0
    table = capsys.readouterr().out
    assert "2023-11-14T22:13:20" in table and table.rstrip().endswith("(2 points)")


def test_query_csv_then_write_csv_keeps_nan_payloads_bit_exact(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bits = np.array([0x7FF8000000000001, 0xFFF0000000000ABC, 0x7FF8000000000000], np.uint64)
    values = np.concatenate((bits.view(np.float64), [1.5, -0.0]))
    ts = np.arange(values.size, dtype=np.int64) + 1_700_000_000_000_000
    with connect(server.url) as db:
        db.write(7, ts, values)
    argv = ["--url", server.url, "query", "--tag", "7", "--start", "0", "--end", str(1 << 60)]
    assert main([*argv, "--format", "csv"]) == 0
    text = capsys.readouterr().out
    assert "nan(0x7ff8000000000001)" in text and "nan(0xfff0000000000abc)" in text
    path = tmp_path / "nan.csv"
    path.write_text(text)
    assert main(["--url", server.url, "write-csv", str(path), "--tag", "8"]) == 0
    capsys.readouterr()
    with connect(server.url) as db:
        back = db.query(8, 0, 1 << 60)
    assert back.timestamps.tolist() == ts.tolist()
    assert back.values.view(np.uint64).tolist() == values.view(np.uint64).tolist()


def test_write_csv_two_columns_default_quality(server: ServerThread, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("1,1.5\n\n# a comment\n2,2.5\n")
    assert main(["--url", server.url, "write-csv", str(path), "--tag", "3"]) == 0
    with connect(server.url) as db:
        r = db.query(3, 0, 10)
    assert r.values.tolist() == [1.5, 2.5] and r.qualities.tolist() == [192, 192]


def test_write_csv_bad_line_names_it(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp_us,value\n1,1.0\n2,2.0\n3,three\n4,4.0\n")
    assert main(["--url", server.url, "write-csv", str(path), "--tag", "4", "--chunk", "2"]) == 1
    err = capsys.readouterr().err
    assert "line 4" in err and "3,three" in err and err.count("\n") == 1


def test_query_with_iso_times(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    with connect(server.url) as db:
        db.write(5, [1_714_521_600_000_000, 1_714_521_601_000_000], [1.0, 2.0])  # 2024-05-01
    argv = ["--url", server.url, "query", "--tag", "5", "--format", "csv"]
    assert main([*argv, "--start", "2024-05-01T00:00:00.5Z", "--end", "2024-05-02T00:00:00Z"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["1714521601000000,2.0,192"]
    assert main([*argv, "--start", "2024-05-01T00:00:00", "--end", "2024-05-02T00:00:00Z"]) == 1
    assert "naive" in capsys.readouterr().err


def test_last_and_stats(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    with connect(server.url) as db:
        db.write(6, [10, 20], [1.0, 2.5], [192, 0])
    assert main(["--url", server.url, "last", "6", "7"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split() == ["6", "1970-01-01T00:00:00.000020Z", "2.5", "0"]
    assert "(no data)" in rows[2]

    assert main(["--url", server.url, "stats"]) == 0
    text = capsys.readouterr().out
    assert "engine:" in text and "server:" in text
    assert main(["--url", server.url, "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["engine"]["points_written"] >= 2


def test_usage_error_is_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "--tag", "x"]) == 2
    assert "usage:" in capsys.readouterr().err
