"""The ceiling for ``bench/server.py``: a loopback server that only appends and syncs.

    python -m bench.ceiling --ready-file READY LOG

uvloop, no decoding: each length-prefixed frame is appended to ``LOG``,
fdatasync'ed, and answered with an ack the size of an xtsdb write ack. What an
xtsdb server could reach if everything but the wire and the disk were free. It
follows xtsdb's ready-file rule ("HOST PORT", written atomically once it
listens), so :class:`xtsdb.server.process.ServerProcess` starts it like the
real server, and runs until SIGTERM. :func:`raw_send` is the client that drives
it (and the xtsdb server, with no SDK cost).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import deque
from pathlib import Path
from time import perf_counter

import uvloop

if __package__ in (None, ""):  # run as a file: make `bench` and the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xtsdb.protocol import encode_frame, ok_response


class SyncAck(asyncio.Protocol):
    """Append each frame to a file, fdatasync it, ack it."""

    ACK = encode_frame(ok_response(1, n=10_000, lsn=1))  # the size of an xtsdb write ack

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, chunk: bytes) -> None:
        self.buf += chunk
        while len(self.buf) >= 4:
            n = int.from_bytes(self.buf[:4], "big")
            if len(self.buf) < 4 + n:
                break
            os.write(self.fd, self.buf[4 : 4 + n])
            del self.buf[: 4 + n]
            os.fdatasync(self.fd)  # one sync per frame, on the loop: no overlap, no grouping
            assert self.transport is not None
            self.transport.write(self.ACK)


def serve(ready: Path, log: Path) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def run() -> None:
        srv = await asyncio.get_running_loop().create_server(lambda: SyncAck(fd), "127.0.0.1", 0)
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(f"127.0.0.1 {srv.sockets[0].getsockname()[1]}\n")
        tmp.rename(ready)  # atomic, like xtsdb's ready file
        await asyncio.Event().wait()

    uvloop.run(run())


async def raw_send(port: int, frames: list[bytes], window: int) -> tuple[float, list[float]]:
    """Pre-encoded frames over one connection, ``window`` in flight; (seconds, ack latencies).

    Counts length-prefixed answers only, so it also drives the xtsdb server with no SDK cost.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    slots = asyncio.Semaphore(window)
    sent: deque[float] = deque()
    lat: list[float] = []

    async def acks() -> None:
        for _ in frames:
            head = await reader.readexactly(4)
            body = await reader.readexactly(int.from_bytes(head, "big"))
            if b"\xa2ok\xc3" not in body:  # msgpack "ok": true
                raise RuntimeError(f"write refused: {body[:200]!r}")
            lat.append(perf_counter() - sent.popleft())  # one connection: acks in order
            slots.release()

    t0 = perf_counter()
    task = asyncio.create_task(acks())
    for f in frames:
        await slots.acquire()
        sent.append(perf_counter())
        writer.write(f)
        await writer.drain()
    await asyncio.wait_for(task, 120)
    secs = perf_counter() - t0
    writer.close()
    return secs, lat


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.ceiling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ready-file", type=Path, required=True)
    ap.add_argument("log", type=Path, help="the file every frame is appended to")
    args = ap.parse_args(argv)
    serve(args.ready_file, args.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
