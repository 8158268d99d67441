"""Soak: a server under steady mixed load for a while; does anything grow that should not?

    .venv/bin/python -m bench.soak --minutes 10          # writers, readers, churn, strangers
    .venv/bin/python -m bench.soak --minutes 1           # smoke
    .venv/bin/python -m bench.soak --minutes 2 --flood   # writers pipeline large writes

The server is a subprocess with tokens configured. Threads keep it busy: writers
(SDK, write role), readers (query + last, read role), a churner that opens and
closes authenticated connections, and a stranger that keeps failing to
authenticate and sending garbage. Every few seconds the server's RSS, open file
descriptors and threads are sampled from ``/proc/<pid>``. The verdict compares the
peak of the second half of the run with that of the second quarter (a baseline
from the same run, after warm-up): memory, descriptors and threads must level
off, not climb. And the peak RSS of the whole run must stay under the memory bound
the server computes from its settings (``xtsdb.server.limits.memory_bound``,
docs/operations.md); ``--flood`` makes the writers pipeline 16 writes of 20,000
points at a time, which is what fills the write queue and the unsealed points.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a file: make `bench` and the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import grid
from bench.torture import Server
from xtsdb.client import Client
from xtsdb.protocol import WRITE, FrameDecoder, encode_frame, request
from xtsdb.protocol.errors import XtsdbError
from xtsdb.server.config import ServerConfig
from xtsdb.server.limits import memory_bound

WRITE_TOKEN = "write-soak-0123456789abcdef"
READ_TOKEN = "read-soak-0123456789abcdef"


def proc_sample(pid: int) -> tuple[int, int, int]:
    """(RSS bytes, open fds, threads) of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    fields = {k: v.split()[0] for k, v in fields.items() if v.split()}
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return int(fields["VmRSS"]) * 1024, fds, int(fields["Threads"])


class Load:
    def __init__(self, url: str, stop: threading.Event) -> None:
        self.url, self.stop = url, stop
        self.counts = {"points": 0, "queries": 0, "connections": 0, "strangers": 0, "errors": 0}
        self.lock = threading.Lock()
        self.error_kinds: dict[str, str] = {}  # "thread: exception" -> last message

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def writer(self, tag: int) -> None:
        with Client(self.url, token=WRITE_TOKEN) as db:
            pos = 0
            while not self.stop.is_set():
                ts = np.arange(pos, pos + 500, dtype=np.int64)
                self.add("points", db.write(tag, ts, ts * 0.5))
                pos += 500

    def flooder(self, tag: int) -> None:
        """Pipelined writes on a raw socket: 16 frames of 20,000 points, then their answers."""
        host, port = self.url.removeprefix("xtsdb://").rsplit(":", 1)
        depth, n = 16, 20_000
        with socket.create_connection((host, int(port)), timeout=60) as s:
            decoder = FrameDecoder()

            def answers(count: int) -> None:
                while count:
                    msg = decoder.next_message()
                    if msg is None:
                        data = s.recv(1 << 16)
                        if not data:
                            raise ConnectionError("server closed the connection")
                        decoder.feed(data)
                        continue
                    if not msg["ok"]:
                        raise XtsdbError(str(msg["error"]))
                    count -= 1

            s.sendall(encode_frame(request("hello", 1, versions=[1], token=WRITE_TOKEN)))
            answers(1)
            pos = 0
            while not self.stop.is_set():
                frames = []
                for i in range(depth):
                    ts = np.arange(pos, pos + n, dtype=np.int64)
                    frames.append(encode_frame(WRITE.build(i + 2, tag, ts, ts * 0.5)))
                    pos += n
                s.sendall(b"".join(frames))
                answers(depth)
                self.add("points", depth * n)

    def reader(self, tags: list[int]) -> None:
        with Client(self.url, token=READ_TOKEN) as db:
            while not self.stop.is_set():
                for tag in tags:
                    db.query(tag, max(0, int(time.time()) % 10_000), 1 << 40, limit=5_000)
                db.last(tags)
                self.add("queries", len(tags) + 1)
                time.sleep(0.01)

    def churner(self) -> None:
        while not self.stop.is_set():
            with Client(self.url, token=READ_TOKEN) as db:
                db.ping()
            self.add("connections")

    def stranger(self) -> None:
        host, port = self.url.removeprefix("xtsdb://").rsplit(":", 1)
        while not self.stop.is_set():
            # A wrong token: the server answers and hangs up, maybe before the garbage.
            with (
                socket.create_connection((host, int(port)), timeout=5) as s,
                contextlib.suppress(OSError),
            ):
                s.sendall(encode_frame(request("hello", 1, versions=[1], token="x" * 20)))
                s.sendall(os.urandom(64))
                s.shutdown(socket.SHUT_WR)
                while s.recv(4096):
                    pass
            self.add("strangers")
            time.sleep(0.01)

    def guarded(self, fn: object, *args: object) -> threading.Thread:
        def run() -> None:
            while not self.stop.is_set():
                try:
                    fn(*args)  # type: ignore[operator]
                except (XtsdbError, OSError) as exc:
                    if self.stop.is_set():
                        return  # the server is being killed: not an error of the run
                    self.add("errors")
                    with self.lock:
                        self.error_kinds[f"{fn.__name__}: {type(exc).__name__}"] = str(exc)[:120]  # type: ignore[attr-defined]
                    time.sleep(0.1)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--sample-every", type=float, default=5.0)
    p.add_argument("--flood", action="store_true", help="writers pipeline large writes")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xtsdb-soak-") as tmp:
        # Default engine sizes (not the torture's tiny ones): the engine keeps one
        # descriptor per container and one entry per block, which tiny sizes multiply.
        extra = ["--token", f"write:{WRITE_TOKEN}", "--token", f"read:{READ_TOKEN}"]
        bound = sum(n for _, n in memory_bound(ServerConfig.load(extra)))
        srv = Server(Path(tmp) / "data", Path(tmp) / "server.log", extra, sizes=[])
        stop = threading.Event()
        load = Load(srv.url, stop)
        try:
            tags = list(range(1, args.writers + 1))
            writer = load.flooder if args.flood else load.writer
            threads = [load.guarded(writer, t) for t in tags]
            threads += [load.guarded(fn) for fn in (load.churner, load.stranger)]
            threads.append(load.guarded(load.reader, tags))
            samples = []
            end = time.monotonic() + args.minutes * 60
            while time.monotonic() < end and srv.running():
                time.sleep(args.sample_every)
                samples.append(proc_sample(srv.pid))
            alive = srv.running()
        finally:
            stop.set()
            srv.close()
        for t in threads:
            t.join(10)
    for kind, message in sorted(load.error_kinds.items()):
        print(f"  {kind}: {message}")
    return report(samples, load.counts, alive, bound)


def report(
    samples: list[tuple[int, int, int]], counts: dict[str, int], alive: bool, bound: int
) -> int:
    if len(samples) < 8:
        print("too few samples: run longer")
        return 1
    # The first quarter is warm-up (caches, the allocator, the index growing its pages).
    first, second = samples[len(samples) // 4 : len(samples) // 2], samples[len(samples) // 2 :]
    rows = [("server alive at the end", str(alive))]
    ok = alive
    for i, (name, slack) in enumerate((("RSS MiB", 1.10), ("open fds", 1.2), ("threads", 1.0))):
        a = max(s[i] for s in first)
        b = max(s[i] for s in second)
        scale = 1 / (1 << 20) if i == 0 else 1
        grew = b > a * slack + (8 << 20 if i == 0 else 4)
        ok &= not grew
        trend = "GROWING" if grew else "flat"
        shown = f"{a * scale:.0f} / {b * scale:.0f} {trend}"
        rows.append((f"{name}: peak 2nd quarter / 2nd half", shown))
    peak = max(s[0] for s in samples)
    ok &= peak <= bound
    shown = f"{peak >> 20} / {bound >> 20} ({peak / bound:.0%})"
    rows.append(("peak RSS MiB / memory bound MiB", shown + ("" if peak <= bound else " OVER")))
    rows += [(k, f"{v:,}") for k, v in counts.items()]
    rows.append(("result", "PASS" if ok else "FAIL"))
    print(grid(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
