"""What a client can make the server hold: measured as the RSS of a server subprocess.

Each test starts ``xtsdb-server`` as a child (its RSS is its own), samples
``/proc/<pid>/status`` before and after a hostile or careless client, and
checks the growth against the bound the server promises (docs/operations.md).
Every loop is bounded in count and time; the child is killed by its own pid.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
from test_server_process import start

from xtsdb.protocol import QUERY, WRITE, FrameDecoder, encode_frame
from xtsdb.protocol.errors import Overloaded
from xtsdb.server.process import free_port

MiB = 1 << 20


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def settled_rss(pid: int, seconds: float = 1.5) -> int:
    """The peak RSS over a short while (the server finishes what it was doing)."""
    peak, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, rss(pid))
        time.sleep(0.05)
    return peak


@contextmanager
def sockets(
    address: tuple[str, int], n: int, timeout: float = 10.0
) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(socket.create_connection(address, timeout=timeout))
            for _ in range(n)
        ]


def recv_frame(sock: socket.socket, decoder: FrameDecoder) -> dict[str, object] | None:
    """The next frame, or None if the server closed the connection."""
    while (msg := decoder.next_message()) is None:
        try:
            data = sock.recv(1 << 16)
        except ConnectionResetError:
            return None
        if not data:
            return None
        decoder.feed(data)
    return msg


def test_unauthenticated_influx_bodies_are_refused_from_their_headers(tmp_path: Path) -> None:
    port = free_port()
    token = "write:" + "w" * 24
    with start(tmp_path, tmp_path / "d", "--tokens", token, "--http-port", str(port)) as srv:
        srv.wait_ready()
        pid = srv.pid
        before = settled_rss(pid, 0.5)
        body = b"m f=1 1\n" * (4 * MiB // 8)  # 4 MiB of good line protocol
        head = b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        with sockets(("127.0.0.1", port), 8) as conns:
            answers = []
            for s in conns:  # 8 strangers, 32 MiB announced each
                s.sendall(head % (8 * len(body)))
                # The 401 comes from the head alone, before a byte of body is sent.
                answers.append(s.recv(4096))
            for s in conns:
                for _ in range(8):
                    try:
                        s.sendall(body)
                    except (BrokenPipeError, ConnectionResetError):
                        break
            grown = settled_rss(pid) - before
        assert all(a.startswith(b"HTTP/1.1 401 ") for a in answers), answers
        assert b"Connection: close" in answers[0]
        assert grown < 64 * MiB, f"RSS grew {grown / MiB:.0f} MiB"


def test_pipelined_queries_never_read_hold_a_few_answers(tmp_path: Path) -> None:
    with start(tmp_path, tmp_path / "d", "--query-threads", "4") as srv:
        address = srv.wait_ready()
        pid = srv.pid
        n = 200_000  # a query answer of about 3.4 MB (17 bytes a point)
        rng = np.random.default_rng(1)
        ts = np.arange(n, dtype=np.int64)
        with socket.create_connection(address, timeout=30) as w:
            w.sendall(encode_frame(WRITE.build(1, 5, ts, rng.random(n))))
            assert recv_frame(w, FrameDecoder()) is not None
        before = settled_rss(pid, 0.5)
        with socket.create_connection(address, timeout=30) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            frames = b"".join(encode_frame(QUERY.build(i + 1, 5, 0, n)) for i in range(120))
            s.sendall(frames)  # 120 queries, small; never read an answer
            grown = settled_rss(pid, 3.0) - before
        # At most MAX_RUNNING (8) answers in production plus one unsent: ~30 MB,
        # where one answer per request was 120 x 3.4 MB = 400 MB.
        assert grown < 100 * MiB, f"RSS grew {grown / MiB:.0f} MiB"


def test_unfinished_frames_are_capped_globally(tmp_path: Path) -> None:
    cap = 64 * MiB
    with start(tmp_path, tmp_path / "d", "--max-partial-bytes", str(cap)) as srv:
        address = srv.wait_ready()
        pid = srv.pid
        before = settled_rss(pid, 0.5)
        size = 20 * MiB
        prefix = size.to_bytes(4, "big")
        refused = admitted = 0
        with sockets(address, 12) as conns:
            for s in conns:  # 12 frames of 20 MiB, each sent but for its last byte
                # A first KiB only: a refused connection is closed with nothing unread,
                # so its answer arrives (unread bytes would turn the close into a reset).
                s.sendall(prefix + b"\x00" * 1024)
                s.settimeout(0.3)
                try:
                    answer = recv_frame(s, FrameDecoder())
                except TimeoutError:
                    answer = {}  # no answer: the server is receiving the frame
                s.settimeout(10)
                if answer != {}:
                    assert answer is not None, "closed without an answer"
                    assert answer["error"]["code"] == Overloaded.code, answer  # type: ignore[index]
                    refused += 1
                    continue
                s.sendall(b"\x00" * (size - 1024 - 1))
                admitted += 1
            grown = settled_rss(pid) - before
        assert admitted == cap // size and refused == 12 - admitted
        assert grown < cap + 40 * MiB, f"RSS grew {grown / MiB:.0f} MiB"
