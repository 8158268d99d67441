"""The worker process side of :mod:`.workers`: a loop over control messages.

Messages are small tuples on a socket; columns and block bodies travel
through the two arenas the parent shares with this process ("in": what the
parent wrote for the job, "out": what the job leaves for the parent):

* ``("map", slot, size)`` followed by a descriptor: (re)map arena ``slot``
  (answered once mapped: only then may the parent write into it);
* ``("encode", level, segs)``: each ``(offset, n)`` names n points' columns in
  "in" (timestamps at offset, values at offset + 8n, qualities at + 16n);
  every segment is encoded by ``encode_block`` and summarised; the bodies go
  back to back into "out", the answer lists ``(offset, length, summary)``
  (a body that does not fit travels in the answer instead: rare, never lost);
* ``("decode", refs, total)``: blocks read from the container files and
  decoded into "out", laid out as ``total`` points' columns;
* ``("parse", n, precision, now_us)``: the first n bytes of "in" are a body of
  line protocol, parsed by :func:`xtsdb.protocol.line_protocol.parse`; its
  columns go into "out" (:func:`parsed_layout`), the answer carries the point
  count, the names, the errors and the line count (columns that do not fit
  travel in the answer instead);
* ``("pid",)``: the process id (tests and the torture run kill workers).

A job that raises answers ``("raise", exc)``: a corrupt block is the
caller's CorruptionError, exactly as when it decodes inline.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import signal
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle
from typing import Any

import numpy as np

from xtsdb.protocol.errors import StorageError
from xtsdb.protocol.line_protocol import ParsedBatch, parse

from .arena import map_fd
from .block_codec import encode_block
from .membuffer import Columns
from .multiblock import MIN_BLOCKS, decode_blocks
from .reader import BlockRef, _decode_into, _read_checked, columns_over
from .summary import Summary, summarise

Encoded = tuple[int, int, Summary] | tuple[bytes, int, Summary]


def in_columns(buf: mmap.mmap, off: int, n: int) -> Columns:
    """The columns of a segment the parent wrote at ``off`` (see the module docstring)."""
    return (
        np.frombuffer(buf, np.int64, n, off),
        np.frombuffer(buf, np.float64, n, off + 8 * n),
        np.frombuffer(buf, np.uint8, n, off + 16 * n),
    )


def encode_segments(
    buf_in: mmap.mmap, buf_out: mmap.mmap, level: int, segs: list[tuple[int, int]]
) -> list[Encoded]:
    out: list[Encoded] = []
    at = 0
    for off, n in segs:
        ts, v, q = in_columns(buf_in, off, n)
        body = encode_block(ts, v, q, level)
        summary = summarise(ts, v, q)
        if at + len(body) <= len(buf_out):
            buf_out[at : at + len(body)] = body
            out.append((at, len(body), summary))
            at += len(body)
        else:
            out.append((body, len(body), summary))
    return out


_fds: dict[str, int] = {}


def _fd(path: str) -> int:
    fd = _fds.get(path)
    if fd is None:
        fd = _fds[path] = os.open(path, os.O_RDONLY)
    return fd


def decode_refs(buf_out: mmap.mmap, refs: list[BlockRef], total: int) -> int:
    cols = columns_over(buf_out, total)
    if len(refs) >= MIN_BLOCKS:
        bodies = [_read_checked(_fd(r.path), r) for r in refs]
        decode_blocks(bodies, [r.count for r in refs], [r.codec for r in refs], cols)
    else:
        at = 0
        for ref in refs:
            _decode_into(_fd(ref.path), ref, cols, at)
            at += ref.count
    del cols  # no export of the mapping may outlive the job (it may be re-mapped)
    return total


# A parsed body's columns in "out", in this order, each 8-aligned for the next:
# (field, dtype) of ParsedBatch; n points take sum(itemsize) * n bytes.
PARSED_COLUMNS: tuple[tuple[str, np.dtype[Any]], ...] = (
    ("ts", np.dtype(np.int64)),
    ("values", np.dtype(np.float64)),
    ("point_lines", np.dtype(np.int64)),
    ("series", np.dtype(np.uint32)),
    ("kinds", np.dtype(np.uint8)),
)
PARSED_POINT_BYTES = 29


def parsed_layout(n: int) -> list[tuple[str, np.dtype[Any], int]]:
    """(field, dtype, offset) of each column of ``n`` parsed points in "out"."""
    out, at = [], 0
    for name, dtype in PARSED_COLUMNS:
        out.append((name, dtype, at))
        at += -(-dtype.itemsize * n // 8) * 8
    return out


Parsed = tuple[int, dict[str, np.ndarray] | None, list[str], list[tuple[int, str]], int]


def parse_body(
    buf_in: mmap.mmap, buf_out: mmap.mmap, n: int, precision: str, now_us: int
) -> Parsed:
    batch: ParsedBatch = parse(buf_in[:n], precision, now_us)
    k = len(batch)
    layout = parsed_layout(k)
    inline: dict[str, np.ndarray] | None = None
    if PARSED_POINT_BYTES * k + 8 * len(layout) <= len(buf_out):
        for name, dtype, off in layout:
            np.frombuffer(buf_out, dtype, k, off)[:] = getattr(batch, name)
    else:  # more points than the parent made room for: rare, never lost
        inline = {name: getattr(batch, name) for name, _ in PARSED_COLUMNS}
    return k, inline, batch.names, batch.errors, batch.lines


def keep_heap() -> None:
    """Keep freed memory in this process's heap instead of returning it to the kernel.

    glibc maps every allocation above its threshold (128 KiB at first) fresh
    and unmaps it when freed, so each job's numpy temporaries (a parse of a
    4 MB body makes about 3.5 MB of them) page-fault zeroed pages again: the
    cost the arenas exist to avoid. A worker's peak is bounded by one job (its
    arenas' cap), so holding it is the price of jobs without page faults.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: its allocator decides
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024 * 1024)
    libc.mallopt(_M_TRIM_THRESHOLD, 256 * 1024 * 1024)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def main(conn: Connection) -> None:
    """The worker's loop; it ends when the parent closes the socket (or dies)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers stop
    keep_heap()
    arenas: dict[str, mmap.mmap] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        kind = msg[0]
        if kind == "map":
            fd = recv_handle(conn)
            old = arenas.pop(msg[1], None)
            if old is not None:
                old.close()
            arenas[msg[1]] = map_fd(fd, msg[2])
            os.close(fd)
            # The parent writes into the new arena only after this answer: the
            # pre-faulting writes above must not land on a job's data.
            conn.send(("ok", msg[2]))
            continue
        reply: tuple[object, ...]
        try:
            if kind == "encode":
                reply = ("ok", encode_segments(arenas["in"], arenas["out"], msg[1], msg[2]))
            elif kind == "decode":
                reply = ("ok", decode_refs(arenas["out"], msg[1], msg[2]))
            elif kind == "parse":
                reply = ("ok", parse_body(arenas["in"], arenas["out"], *msg[1:]))
            elif kind == "pid":
                reply = ("ok", os.getpid())
            else:
                reply = ("raise", StorageError(f"worker: unknown job {kind!r}"))
        except Exception as exc:
            reply = ("raise", exc)
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            conn.send(("raise", StorageError(f"worker: {type(exc).__name__}: {exc}")))
