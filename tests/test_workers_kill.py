"""kill -9 of the server's worker processes while ingest is sealing blocks in them.

The workers are the server's grandchildren (the forkserver's children); only
those pids are signalled. The server must keep serving, lose no acknowledged
point, and a restart after kill -9 of the server itself must read them all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import numpy as np

from tests.test_server_process import Conn, start

TAGS, BATCH = 4, 40_000  # a round of 160 K points: seals go to the workers
MAX_ROUNDS, MIN_KILLS = 40, 3


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def workers_of(server_pid: int) -> list[int]:
    return [g for c in _children(server_pid) for g in _children(c)]


def test_killed_workers_cost_no_acknowledged_point(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acked: dict[int, list[np.ndarray]] = {t: [] for t in range(1, TAGS + 1)}
    kills: list[int] = []
    done = threading.Event()

    def killer(server_pid: int) -> None:
        while not done.wait(0.05):
            for pid in workers_of(server_pid)[:1]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)

    with start(tmp_path, data, "--workers", "2", name="victim") as srv:
        conn = Conn(srv.wait_ready(), timeout=30)
        assert srv.proc.pid is not None
        k = threading.Thread(target=killer, args=(srv.proc.pid,))
        k.start()
        try:
            # Rounds go on until workers were killed (they start with the first big
            # seal): between rounds one is killed here, and the thread kills others
            # at any moment, mid-seal included.
            for r in range(MAX_ROUNDS):
                for tag in acked:
                    ts = r * BATCH + np.arange(BATCH, dtype=np.int64)
                    assert conn.write(tag, ts, ts * 0.5 + tag)["ok"]
                    acked[tag].append(ts)
                for pid in workers_of(srv.proc.pid)[:1]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        kills.append(pid)
                if len(kills) >= MIN_KILLS and r >= 3:
                    break
        finally:
            done.set()
            k.join(10)
        for tag, parts in acked.items():  # the same server, still serving
            got_ts, got_values = conn.query(tag)
            want = np.concatenate(parts)
            np.testing.assert_array_equal(got_ts, want)
            np.testing.assert_array_equal(got_values, want * 0.5 + tag)
        conn.close()
        srv.kill9()
        srv.wait(10)
        log = srv.log()
    assert len(kills) >= MIN_KILLS, "no worker was running to be killed"
    # The pool saw deaths (at a job's send or answer, or a start) and went on inline.
    assert "died" in log or "is gone" in log
    with start(tmp_path, data, "--workers", "2", name="revived") as srv2:
        conn = Conn(srv2.wait_ready(), timeout=30)
        for tag, parts in acked.items():
            got_ts, got_values = conn.query(tag)
            want = np.concatenate(parts)
            np.testing.assert_array_equal(got_ts, want)
            np.testing.assert_array_equal(got_values, want * 0.5 + tag)
        conn.close()
        assert srv2.stop() == 0
