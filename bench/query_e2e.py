"""The 1 M-point query end to end: sealed on disk against all in memory, and baselines.

    .venv/bin/python -m bench.query_e2e                      # this tree, ~30 s
    .venv/bin/python -m bench.query_e2e --baseline-rev REV   # and REV's code, interleaved

Each figure is the median of ``reps`` queries of one tag through the SDK's blocking
client, on a fresh server: once after ``flush_server()`` (every point in sealed
blocks) and once with ``--block-points`` above the query size (every point in the
MemBuffer). In the same session, on the same server, the previous receive path is
timed as a baseline: ``recv`` into new bytes, the frame assembled in a bytearray,
msgpack copying the arrays out (what the client did before ``recv_into`` and views).

``--baseline-rev`` extracts REV's ``server``, ``client`` and ``protocol`` with ``git
archive`` (the work tree is not touched) and runs the same measurement with that
code (server and client) in a child process, alternating with this tree's runs so
that load from elsewhere on the machine falls on both. ``bench/server.py`` prints
these rows too.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: make `bench` and the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import data
from bench._util import Row, check
from xtsdb.client import connect
from xtsdb.protocol import HELLO, QUERY, SUPPORTED_VERSIONS, FrameDecoder, encode_frame

REPO = Path(__file__).resolve().parent.parent
TAG = 400_000
Figures = dict[str, float]  # "sealed", "memory", "sealed_old_recv", "memory_old_recv" (ms)


def _old_receive(url: str, lo: int, hi: int, reps: int) -> float:
    """Median ms of the query by the previous receive path (recv, assemble, msgpack copy)."""
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    times = []
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(encode_frame(HELLO.build(1, list(SUPPORTED_VERSIONS), None, "bench")))
        _recv_message(s)
        for i in range(reps):
            t0 = perf_counter()
            s.sendall(encode_frame(QUERY.build(i + 2, TAG, lo, hi)))
            got = QUERY.parse_answer(_recv_message(s))
            times.append(perf_counter() - t0)
            if got.ts.shape[0] == 0:
                raise AssertionError("the baseline query returned nothing")
    return statistics.median(times) * 1e3


def _recv_message(s: socket.socket) -> dict[str, Any]:
    decoder = FrameDecoder(1 << 30)
    while True:
        data_ = s.recv(1 << 18)
        if not data_:
            raise ConnectionError("server closed the connection")
        decoder.feed(data_)
        msg = decoder.next_message()
        if msg is not None:
            return msg


def measure(base: str, points: int, reps: int) -> Figures:
    """This process's code: sealed and in-memory figures, with the old receive path."""
    from bench.server import server  # here: bench.server imports this module

    ts, vals = data.timestamps(points), data.tag_values(TAG, points)
    lo, hi = int(ts[0]), int(ts[-1]) + 1
    out: Figures = {}
    for kind, flags in (("sealed", ()), ("memory", ("--block-points", str(2 * points)))):
        with server(base, *flags) as (url, _pid), connect(url, timeout=60) as c:
            c.write(TAG, ts, vals)
            if kind == "sealed":
                c.flush_server()
            r = c.query(TAG, lo, hi)
            if len(r) != points or not np.array_equal(r.values, vals):
                raise AssertionError(f"query returned {len(r)} points, expected {points}")
            where = "points_from_disk" if kind == "sealed" else "points_from_memory"
            if r.stats.get(where) != points:
                raise AssertionError(f"{kind}: not every point came from there: {r.stats}")
            del r
            times, old = [], []
            for _ in range(reps):  # alternated, so load from elsewhere hits both alike
                t0 = perf_counter()
                r = c.query(TAG, lo, hi)  # the previous result is held meanwhile, as users do
                times.append(perf_counter() - t0)
                old.append(_old_receive(url, lo, hi, 1))
            assert len(r) == points
            out[kind] = statistics.median(times) * 1e3
            out[f"{kind}_old_recv"] = statistics.median(old)
    return out


def _extract(rev: str, into: Path) -> Path:
    """REV's packages under ``into``, laid out as the installed ``xtsdb`` package."""
    src, pkg = into / "src", into / "pkg" / "xtsdb"
    src.mkdir(parents=True)
    pkg.mkdir(parents=True)
    tar = subprocess.run(
        ["git", "archive", rev, "server", "client", "protocol"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=tar, check=True)
    for name in ("server", "client", "protocol"):
        (pkg / name).symlink_to(src / name)
    return into / "pkg"


def measure_rev(rev_path: Path, base: str, points: int, reps: int) -> Figures:
    """:func:`measure` in a child whose ``xtsdb`` (client and server) is REV's code."""
    env = dict(os.environ, PYTHONPATH=str(rev_path))  # before the editable install
    cmd = [sys.executable, "-m", "bench.query_e2e", "--json", "--dir", base]
    cmd += ["--points", str(points), "--reps", str(reps)]
    out = subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    figures: Figures = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def compare(base: str, points: int, reps: int, rev: str | None, rounds: int = 2) -> list[Figures]:
    """``rounds`` runs of this tree (and of ``rev``, alternating): [this, rev] medians."""
    mine: list[Figures] = []
    theirs: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="rev-", dir=base) as tmp:
        rev_path = _extract(rev, Path(tmp)) if rev else None
        for _ in range(rounds):
            mine.append(measure(base, points, reps))
            if rev_path is not None:
                theirs.append(measure_rev(rev_path, base, points, reps))
    runs = [mine, theirs] if theirs else [mine]
    return [{k: statistics.median(f[k] for f in fs) for k in fs[0]} for fs in runs]


def rows(points: int, figures: list[Figures], rev: str | None) -> list[Row]:
    """The table rows of ``compare``'s figures (workload 3 of bench/server.py)."""
    new = figures[0]
    ratio = new["sealed"] / new["memory"]
    n = f"{points:,}"
    out = [
        check(
            f"3. query {n} pts of 1 tag, sealed blocks, SDK end to end",
            new["sealed"],
            "ms",
            20,
            False,
        ),
        Row(f"3. query {n} pts of 1 tag, all in memory, SDK end to end", f"{new['memory']:.3g} ms"),
        check("3. sealed / in-memory, same run", ratio, "x", 1.5, False),
        Row(
            "3. baseline: previous receive path (recv + copies), same servers",
            f"sealed {new['sealed_old_recv']:.3g} ms, memory {new['memory_old_recv']:.3g} ms",
        ),
    ]
    if rev is not None and len(figures) > 1:
        old = figures[1]
        out.append(
            Row(
                f"3. baseline: {rev} (server and client), interleaved",
                f"sealed {old['sealed']:.3g} ms, memory {old['memory']:.3g} ms, "
                f"ratio {old['sealed'] / old['memory']:.2f}x",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=2, help="runs of each tree (median)")
    ap.add_argument("--baseline-rev", help="also measure this git revision's code")
    ap.add_argument("--dir", default="/tmp/xtsdb-bench", help="parent of the data dirs")
    ap.add_argument("--json", action="store_true", help="one run, figures as JSON (the child)")
    args = ap.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    if args.json:
        print(json.dumps(measure(args.dir, args.points, args.reps)))
        return 0
    figures = compare(args.dir, args.points, args.reps, args.baseline_rev, args.rounds)
    for row in rows(args.points, figures, args.baseline_rev):
        print(f"{row.workload}: {row.result} {row.target} {row.status}".rstrip())
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
