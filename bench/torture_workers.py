"""The crash torture (bench/torture.py) with the servers' worker processes killed too.

    .venv/bin/python -m bench.torture_workers --rounds 20

Every server of the run gets ``--workers 2 --seal-pool-min-points 1`` (each
seal round, however small, encodes in the workers, which the tiny sizes make
happen many times a second), and a thread kills one worker process with
SIGKILL every ``KILL_EVERY_S`` (a random one of the servers' grandchildren:
server -> forkserver -> worker). bench/torture.py's checks stand unchanged:
every acknowledged point is there with its value after each kill -9 of the
server; a dead worker may only cost a retry.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import threading
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` and the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import torture

KILL_EVERY_S = 0.3


def descendants(pid: int, depth: int) -> list[int]:
    """Processes exactly ``depth`` generations below ``pid``."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    level = [pid]
    for _ in range(depth):
        level = [k for p in level for k in kids.get(p, [])]
    return level


def main(argv: list[str] | None = None) -> int:
    torture.TINY.extend(["--workers", "2", "--seal-pool-min-points", "1"])
    kills: list[int] = []
    stop = threading.Event()
    rng = random.Random(1)

    def killer() -> None:
        while not stop.wait(KILL_EVERY_S):
            workers = descendants(os.getpid(), 3)  # this -> server -> forkserver -> worker
            if workers:
                pid = rng.choice(workers)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        status = torture.main(argv)
    finally:
        stop.set()
        t.join(5)
    print(f"worker processes killed: {len(kills)}")
    return status if kills else 1  # no kill: nothing about workers was tested


if __name__ == "__main__":
    sys.exit(main())
