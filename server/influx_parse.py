"""Large ``/write`` bodies parsed in the worker processes, small ones inline.

Parsing line protocol is the server process's heaviest work on the ``/write``
path, and it holds the GIL the event loop needs. A body of at least
``min_bytes`` (:data:`PARSE_IN_WORKERS_BYTES`, measured by
``bench/lp_workers.py``) is copied into the input arenas of the worker
processes (:mod:`xtsdb.server.engine.workers`), cut at newlines into one part
per worker taken; each worker runs the very same
:func:`~xtsdb.protocol.line_protocol.parse` and leaves its columns (timestamps,
values, line numbers, series indices, field types) in its output arena, and
only the names table, the errors and counts cross the control socket. Name
resolution and tag creation stay in the server process (:mod:`.influx_write`):
the cluster mode hooks the catalog there.

The parts are put back together into exactly the batch one parse of the whole
body gives (``tests/test_lp_workers.py`` compares them on random and
adversarial bodies):

* a body is cut only where a newline must end a line: not at all if it holds a
  quote or a backslash (a string or an escape may span a newline);
* names are numbered in order of first appearance, part after part. A parse
  also orders names by lines that were then refused (a name is met before its
  value is read), and every such line leaves an error in its part: so when a
  part other than the last reports an error, the merged order might differ,
  and the body is parsed again whole, inline (bad bodies are rare and small).

A worker that dies (``kill -9``) or fails mid-parse costs its part an inline
parse: never a wrong answer or a lost line.
"""

from __future__ import annotations

import logging

import numpy as np

from xtsdb.protocol.line_protocol import ParsedBatch, parse_by_size
from xtsdb.server.engine.worker_jobs import PARSED_COLUMNS, Parsed, parsed_layout
from xtsdb.server.engine.workers import Worker, WorkerDied, WorkerPool

log = logging.getLogger("xtsdb.server")

PARSE_IN_WORKERS_BYTES = 2 * 1024 * 1024
"""Bodies from this size on are parsed in the workers: bench/lp_workers.py, two runs on
the 2-core machine (bench/results/lp_workers.txt), found the workers faster at every
size from 2 MB on in both (from 1 MB in one): below it the round trip and a core shared
with the server cost more than the parse. A /write slice is at most 4 MB."""
MIN_PART_BYTES = 64 * 1024  # a part smaller than this is not worth a worker's round trip
OUT_SLACK = 64 * 1024
# Room made in a worker's output arena per body byte: a point's columns take 29
# bytes, and it takes about 16 bytes of a Telegraf body, 7 or more of any likely
# one; a denser body's columns come back in the answer (worker_jobs.parse_body).
OUT_PER_BYTE = 4


def parse_body(
    pool: WorkerPool | None,
    data: bytes,
    precision: str,
    now_us: int,
    min_bytes: int = PARSE_IN_WORKERS_BYTES,
    min_part: int = MIN_PART_BYTES,
) -> ParsedBatch:
    """``parse(data, precision, now_us)``, in the workers when ``data`` is large enough
    (``min_bytes`` -1: never); each worker's part at least ``min_part`` bytes. Inline
    by :func:`~xtsdb.protocol.line_protocol.parse_by_size`: a small body line by line."""
    if pool is None or min_bytes < 0 or len(data) < max(min_bytes, 1):
        return parse_by_size(data, precision, now_us)
    splittable = 34 not in data and 92 not in data
    most = max(1, min(pool.size, len(data) // max(1, min_part))) if splittable else 1
    try:
        # Without waiting: workers busy sealing or decoding would hold the request
        # longer than parsing it here.
        with pool.take(most, wait=False) as ws:
            if not ws:
                return parse_by_size(data, precision, now_us)
            parts = cut(data, len(ws))
            got = _in_workers(ws, parts, precision, now_us)
    except WorkerDied as exc:  # no worker could be started
        log.warning("%s; parsing inline", exc)
        return parse_by_size(data, precision, now_us)
    done: list[tuple[ParsedBatch, int]] = []
    for (piece, first_line), batch in zip(parts, got, strict=True):
        if batch is None:
            batch = parse_by_size(piece, precision, now_us)
        done.append((batch, first_line))
    if any(b.errors for b, _ in done[:-1]):  # see the module docstring
        return parse_by_size(data, precision, now_us)
    return merge(done)


def cut(data: bytes, parts: int) -> list[tuple[bytes, int]]:
    """``data`` in at most ``parts`` pieces of about equal size, each ending after a
    newline (the last at the end), with the number of lines before each."""
    out: list[tuple[bytes, int]] = []
    start = lines = 0
    for k in range(1, parts + 1):
        if start >= len(data):
            break
        nl = data.find(b"\n", max(start, len(data) * k // parts - 1)) if k < parts else -1
        end = len(data) if nl < 0 else nl + 1
        out.append((data[start:end], lines))
        lines += data.count(b"\n", start, end)
        start = end
    return out


def _in_workers(
    ws: list[Worker], parts: list[tuple[bytes, int]], precision: str, now_us: int
) -> list[ParsedBatch | None]:
    """One part per worker; None for a part whose worker died, failed or had no room."""
    sent: list[tuple[int, Worker]] = []
    for i, (w, (piece, _)) in enumerate(zip(ws, parts, strict=False)):
        try:
            if not (
                w.fit("in", len(piece)) and w.fit("out", OUT_PER_BYTE * len(piece) + OUT_SLACK)
            ):
                continue
            buf = w.arenas["in"].buf
            assert buf is not None
            buf[: len(piece)] = piece
            w.send(("parse", len(piece), precision, now_us))
            sent.append((i, w))
        except WorkerDied as exc:
            log.warning("%s; parsing inline", exc)
    out: list[ParsedBatch | None] = [None] * len(parts)
    for i, w in sent:
        try:
            out[i] = _collect(w, w.answer())
        except Exception as exc:  # the inline parse is the same code: it says what is wrong
            log.warning("worker parse failed (%s); parsing inline", exc)
    return out


def _collect(w: Worker, answer: Parsed) -> ParsedBatch:
    n, inline, names, errors, lines = answer
    cols: dict[str, np.ndarray] = {}
    if inline is not None:
        cols = inline
    else:
        buf = w.arenas["out"].buf
        assert buf is not None
        for name, dtype, off in parsed_layout(n):
            cols[name] = np.frombuffer(buf, dtype, n, off).copy()  # the arena is reused
    assert set(cols) == {name for name, _ in PARSED_COLUMNS}
    return ParsedBatch(
        names=names,
        series=cols["series"],
        ts=cols["ts"],
        values=cols["values"],
        point_lines=cols["point_lines"],
        errors=errors,
        lines=lines,
        kinds=cols["kinds"],
    )


def merge(done: list[tuple[ParsedBatch, int]]) -> ParsedBatch:
    """One batch from parts in body order (``int``: the lines before each part)."""
    if len(done) == 1 and done[0][1] == 0:
        return done[0][0]
    index: dict[str, int] = {}
    series = []
    for batch, _ in done:  # a loop per name, not per point
        remap = np.array([index.setdefault(n, len(index)) for n in batch.names], np.uint32)
        series.append(remap[batch.series] if batch.series.shape[0] else batch.series)
    cat = np.concatenate
    return ParsedBatch(
        names=list(index),
        series=cat(series).astype(np.uint32, copy=False),
        ts=cat([b.ts for b, _ in done]),
        values=cat([b.values for b, _ in done]),
        point_lines=cat([b.point_lines + first for b, first in done]),
        errors=[(no + first, msg) for b, first in done for no, msg in b.errors],
        lines=sum(b.lines for b, _ in done),
        kinds=cat([b.kinds for b, _ in done]),
    )
