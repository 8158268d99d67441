"""Framing a query response, and unframing it on the client: each against the old way.

    .venv/bin/python -m bench.frames            # 10 K, 100 K and 1 M points

The server builds each query answer in a pool thread. ``encode_frame`` packs the
arrays into one msgpack body and prepends the length: two full copies of the
result. ``encode_frame_parts`` packs only headers and small fields and hands the
arrays to ``transport.writelines`` as views. Both are timed in the same run on
the same response; the table shows the ratio (the baseline is ``encode_frame``).
"""

from __future__ import annotations

import queue
import socket
import sys
import threading
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a file: make `bench` and the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import Row, median_s, table
from xtsdb.protocol import QUERY, FrameDecoder, encode_frame, encode_frame_parts
from xtsdb.protocol.buffers import ReusableBuffers

SIZES = (10_000, 100_000, 1_000_000)
PIECE = 1 << 18


class Pipe:
    """A connected socket pair; a thread writes each frame asked for into one end."""

    def __init__(self) -> None:
        self.rx, self._tx = socket.socketpair()
        self._todo: queue.Queue[bytes | None] = queue.Queue()
        self._thread = threading.Thread(target=self._send, daemon=True)
        self._thread.start()

    def _send(self) -> None:
        while (frame := self._todo.get()) is not None:
            self._tx.sendall(frame)

    def send(self, frame: bytes) -> None:
        self._todo.put(frame)

    def close(self) -> None:
        self._todo.put(None)
        self._thread.join()
        self.rx.close()
        self._tx.close()


def receive_old(pipe: Pipe, frame: bytes, dec: FrameDecoder) -> object:
    pipe.send(frame)
    while (msg := dec.next_message()) is None:
        dec.feed(pipe.rx.recv(PIECE))  # a new bytes per call, assembled, msgpack copies
    return QUERY.parse_answer(msg)


def receive_new(pipe: Pipe, frame: bytes, dec: FrameDecoder) -> object:
    pipe.send(frame)
    while (msg := dec.next_message()) is None:
        into = dec.body_buffer()  # as the blocking client: in place once a body is large
        if into is None:
            dec.feed(pipe.rx.recv(PIECE))
        else:
            dec.received(pipe.rx.recv_into(into))
    return QUERY.parse_answer(msg)


def main() -> int:
    rows = []
    for n in SIZES:
        ts = 1_700_000_000_000_000 + np.arange(n, dtype=np.int64) * 1_000_000
        values = np.sin(np.arange(n) / 100.0)
        q = np.full(n, 192, np.uint8)
        resp = QUERY.reply(1, ts, values, q, {"blocks_read": 1})
        reps = max(5, 2_000_000 // n)
        whole = median_s(lambda: encode_frame(resp), reps)  # noqa: B023 - run here, at once
        parts = median_s(lambda: encode_frame_parts(resp), reps)  # noqa: B023
        assert b"".join(encode_frame_parts(resp)) == encode_frame(resp)
        rows.append(Row(f"frame a {n:,}-point answer: encode_frame", f"{whole * 1e3:.3f} ms"))
        rows.append(
            Row(
                f"frame a {n:,}-point answer: encode_frame_parts",
                f"{parts * 1e3:.3f} ms",
                f"{whole / parts:,.2f}x the speed of encode_frame",
            )
        )
        frame = encode_frame(resp)
        # One decoder each, as a connection keeps its own for its lifetime.
        dec_old = FrameDecoder(1 << 30)
        dec_new = FrameDecoder(1 << 30, views=True, buffers=ReusableBuffers(64 * 1024 * 1024))
        pipe = Pipe()
        old = median_s(lambda: receive_old(pipe, frame, dec_old), reps)  # noqa: B023
        new = median_s(lambda: receive_new(pipe, frame, dec_new), reps)  # noqa: B023
        pipe.close()
        rows.append(Row(f"receive a {n:,}-point answer: recv + copies", f"{old * 1e3:.3f} ms"))
        rows.append(
            Row(
                f"receive a {n:,}-point answer: in place + views",
                f"{new * 1e3:.3f} ms",
                f"{old / new:,.2f}x the speed of recv + copies",
            )
        )
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
