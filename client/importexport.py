"""``xtsdb import`` and ``xtsdb export``: CSV (and Parquet) files in and out, streaming.

Import reads a file in chunks of ``chunk_rows`` lines (constant memory),
turns each into columns (:mod:`.csv_chunks`, or pyarrow for Parquet),
resolves tag names to ids once per name, and sends the chunk as one columnar
multi-tag write, from a second thread, so that parsing chunk k+1 overlaps the
server's commit of chunk k. A bad line stops the import: every row above it
is committed (the rows of its own chunk included), nothing below it is, and
the error names the line. ``resume`` makes a rerun skip what a previous run
stored (see :class:`Importer`).

Export streams by time windows: each window's points of every tag are
fetched, written and dropped before the next.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from xtsdb.protocol.errors import InvalidInput, NotFound, XtsdbError

from . import csv_chunks
from .csv_chunks import Chunk, Layout
from .export_sinks import open_sink
from .results import Int64Array, UInt32Array
from .sync import Client

CHUNK_ROWS = 1_000_000
MAX_TAG_ID = (1 << 32) - 1


class ImportFailed(XtsdbError):
    """An import stopped; ``rows`` rows (``points`` points) were committed before it did."""

    def __init__(self, message: str, rows: int, points: int) -> None:
        super().__init__(f"{message} ({rows:,} rows, {points:,} points committed before it)")
        self.rows = rows
        self.points = points


@dataclass
class ImportReport:
    rows: int = 0  # data rows read and committed (or skipped by resume)
    points: int = 0  # points written
    skipped: int = 0  # points skipped by resume
    seconds: float = 0.0
    layout: str = ""
    tags: dict[str, int] = field(default_factory=dict)  # key as written -> tag id


class TagIds:
    """Tag keys as written in a file -> tag ids: all digits is an id, anything else a name."""

    def __init__(self, client: Client, create: bool) -> None:
        self.client = client
        self.create = create
        self.ids: dict[str, int] = {}

    def resolve(self, keys: Sequence[str]) -> UInt32Array:
        out = np.empty(len(keys), dtype=np.uint32)
        for i, key in enumerate(keys):
            tag_id = self.ids.get(key)
            if tag_id is None:
                tag_id = self.ids[key] = self._lookup(key)
            out[i] = tag_id
        return out

    def _lookup(self, key: str) -> int:
        if key.isdigit() and key.isascii():
            if int(key) > MAX_TAG_ID:
                raise InvalidInput(f"tag id {key} is out of range 0..{MAX_TAG_ID}")
            return int(key)
        try:
            return self.client.tag(key).id
        except NotFound:
            if not self.create:
                raise InvalidInput(
                    f"no tag named {key!r}: create it first, or pass --create-tags"
                ) from None
        return self.client.create_tag(key).id


class _Sender:
    """Writes chunks from a thread; at most ``depth`` chunks wait, so memory stays bounded."""

    def __init__(self, client: Client, depth: int = 1) -> None:
        self.client = client
        self.todo: queue.Queue[tuple[Any, ...] | None] = queue.Queue(depth)
        self.rows = self.points = 0  # committed
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="xtsdb-import", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.todo.get()) is not None:
            if self.error is not None:
                continue  # drain without writing: the import has failed
            tags, ts, values, q, rows = item
            try:
                self.points += self.client.write(tags, ts, values, q) if ts.shape[0] else 0
                self.rows += rows
            except BaseException as exc:
                self.error = exc

    def put(self, item: tuple[Any, ...]) -> None:
        while True:  # bounded waits, so a failed sender is noticed
            self.check()
            with contextlib.suppress(queue.Full):
                self.todo.put(item, timeout=0.2)
                return

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def finish(self) -> None:
        self.todo.put(None)
        while self.thread.is_alive():
            self.thread.join(0.5)
        self.check()


class Importer:
    """One import into ``client``.

    ``resume``: a row is skipped when its timestamp is not newer than the newest
    point stored for its tag when this import first meets that tag (one
    ``last`` call per new batch of tags). That restarts an interrupted import
    exactly when each tag's rows are in time order in the file, as exports and
    logs are; with rows out of order, ones older than the tag's newest stored
    point are skipped even if no earlier run wrote them.
    """

    def __init__(
        self,
        client: Client,
        *,
        layout: str | None = None,
        chunk_rows: int = CHUNK_ROWS,
        resume: bool = False,
        create_tags: bool = False,
        progress: bool | None = None,
    ) -> None:
        self.client = client
        self.layout = layout
        self.chunk_rows = max(1, chunk_rows)
        self.resume = resume
        self.tag_ids = TagIds(client, create_tags)
        self.newest: dict[int, int] = {}  # resume: tag id -> newest stored timestamp
        self.progress = sys.stderr.isatty() if progress is None else progress

    def run(self, path: str) -> ImportReport:
        t0 = time.perf_counter()
        if path.endswith(".parquet"):
            from .parquet_io import read_parquet

            report = self._send_all(path, read_parquet(path, self.layout, self.chunk_rows), None)
        else:
            report = self._csv(path)
        report.seconds = time.perf_counter() - t0
        return report

    def _csv(self, path: str) -> ImportReport:
        with _open_binary(path) as f:
            size = _size(f)
            layout, first_line, pending = _read_layout(f, path, self.layout)
            chunks = _csv_chunks(f, layout, first_line, pending, self.chunk_rows)
            with _progress(size, f"import {path}", self.progress, "B") as bar:
                report = self._send_all(path, chunks, bar)
        report.layout = layout.kind
        return report

    def _send_all(
        self, path: str, chunks: Iterator[tuple[Chunk, int, int]], bar: tqdm[Any] | None
    ) -> ImportReport:
        sender = _Sender(self.client)
        report = ImportReport()
        error: str | None = None
        try:
            for chunk, rows, nbytes in chunks:
                tags = self.tag_ids.resolve(chunk.keys)[chunk.key_index]
                ts, values, q = chunk.ts, chunk.values, chunk.qualities
                if self.resume and ts.shape[0]:
                    keep = ts > self._newest_for(tags)
                    report.skipped += int(ts.shape[0] - keep.sum())
                    tags, ts, values = tags[keep], ts[keep], values[keep]
                    q = None if q is None else q[keep]
                sender.put((tags, ts, values, q, rows))
                if bar is not None:
                    bar.update(nbytes)
                if chunk.error is not None:
                    line, why = chunk.error
                    error = f"{path}: line {line}: {why}"
                    break
        except (XtsdbError, OSError, ValueError, ImportError) as exc:
            with contextlib.suppress(Exception):
                sender.finish()  # what was handed over still commits, and is counted
            raise ImportFailed(f"{path}: {exc}", sender.rows, sender.points) from exc
        except BaseException:  # Ctrl-C: stop at once
            sender.error = sender.error or KeyboardInterrupt()
            raise
        try:
            sender.finish()
        except XtsdbError as exc:
            raise ImportFailed(f"{path}: {exc}", sender.rows, sender.points) from exc
        if error is not None:
            raise ImportFailed(error, sender.rows, sender.points)
        report.rows, report.points = sender.rows, sender.points
        report.tags = dict(self.tag_ids.ids)
        return report

    def _newest_for(self, tags: UInt32Array) -> Int64Array:
        """Per row: the newest timestamp stored for its tag before this import touched it."""
        uniq, inverse = np.unique(tags, return_inverse=True)
        new = [int(t) for t in uniq.tolist() if t not in self.newest]
        if new:
            last = self.client.last(np.asarray(new, dtype=np.int64)).to_dict()
            for t in new:
                self.newest[t] = last[t][0] if t in last else -(1 << 62)
        limits = np.asarray([self.newest[int(t)] for t in uniq.tolist()], dtype=np.int64)
        out: Int64Array = limits[inverse.reshape(-1)]
        return out


@contextlib.contextmanager
def _open_binary(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdin.buffer
    else:
        with open(path, "rb") as f:
            yield f


def _size(f: IO[bytes]) -> int | None:
    try:
        return os.fstat(f.fileno()).st_size or None
    except (OSError, ValueError):
        return None


def _read_layout(f: IO[bytes], path: str, layout: str | None) -> tuple[Layout, int, list[bytes]]:
    """The layout, from the first data line; lines read so far that hold data, and where."""
    skipped: list[bytes] = []
    for line in itertools.islice(f, 1_000_000):  # blank and comment lines before the first
        text = line.decode("utf-8", "replace").strip()
        if not text or text.startswith("#"):
            skipped.append(line)
            continue
        try:
            fields = next(iter(csv.reader([text])))
        except csv.Error as exc:  # a stray CR in binary input (a gzip header, say)
            why = f"{path}: line {len(skipped) + 1} is not CSV ({exc})"
            raise csv_chunks.CsvError(why) from None
        found = csv_chunks.detect(fields, layout, path)
        first = len(skipped) + 1
        if found.header:
            return found, first + 1, []
        return found, first, [line]
    return Layout(layout or "long", False), len(skipped) + 1, []


def _csv_chunks(
    f: IO[bytes], layout: Layout, first_line: int, pending: list[bytes], chunk_rows: int
) -> Iterator[tuple[Chunk, int, int]]:
    """``(chunk, data rows, bytes)`` per ``chunk_rows`` lines."""
    line_no = first_line
    lines = pending + list(itertools.islice(f, chunk_rows - len(pending)))
    while lines:
        if layout.kind == "wide":
            chunk = csv_chunks.parse_wide(lines, line_no, layout.columns)
        else:
            chunk = csv_chunks.parse_long(lines, line_no, layout.quality)
        rows = len(lines) if chunk.error is None else chunk.error[0] - line_no
        yield chunk, rows, sum(map(len, lines))
        if chunk.error is not None:
            return
        line_no += len(lines)
        lines = list(itertools.islice(f, chunk_rows))


# -- export ---------------------------------------------------------------------------

WINDOW_US = 86_400_000_000  # the first export window: a day, then adapted to the data
TARGET_POINTS = 1_000_000  # points per window the adaptation aims for
_GLOB = frozenset("*?[")


@dataclass
class ExportReport:
    rows: int = 0
    points: int = 0
    tags: int = 0
    seconds: float = 0.0


def resolve_tags(client: Client, spec: str) -> list[tuple[int, str]]:
    """``(id, label)`` of each tag in ``spec``: comma-separated names, ids or glob patterns.

    The label is the tag's name, or its id for a tag the catalog does not name.
    """
    out: dict[int, str] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if _GLOB & set(part):
            found = client.tags(part, limit=65_536)
            if not found:
                raise InvalidInput(f"no tag name matches {part!r}")
            out.update((t.id, t.name) for t in found)
        elif part.isdigit() and part.isascii():
            try:
                out[int(part)] = client.tag(int(part)).name
            except NotFound:
                out[int(part)] = part
        else:
            out[client.tag(part).id] = part
    if not out:
        raise InvalidInput("no tags given")
    return list(out.items())


def export(
    client: Client,
    tags: list[tuple[int, str]],
    start: int | None,
    end: int | None,
    out: str,
    *,
    layout: str = "long",
    fmt: str = "csv",
    progress: bool | None = None,
) -> ExportReport:
    """Write the points of ``tags`` in ``[start, end)`` to ``out`` (``-``: stdout; CSV only)."""
    t0 = time.perf_counter()
    ids = np.asarray([t for t, _ in tags], dtype=np.int64)
    if start is None or end is None:
        lo, hi = _bounds(client, ids)
        start = lo if start is None else start
        end = hi if end is None else end
    report = ExportReport(tags=len(tags))
    show = sys.stderr.isatty() if progress is None else progress
    labels = [label for _, label in tags]
    progress_bar = _progress(max(end - start, 0), f"export {out}", show, "us")
    with open_sink(out, fmt, layout, labels) as sink, progress_bar as bar:
        window, t = WINDOW_US, start
        while t < end:  # each turn moves t forward by at least one second (or to the end)
            hi = min(end, t + window)
            cols = [client.query(int(tag), t, hi) for tag in ids.tolist()]
            n = sum(len(c) for c in cols)
            report.rows += sink.write([(c.timestamps, c.values, c.qualities) for c in cols])
            report.points += n
            bar.update(hi - t)
            t = hi
            if n < TARGET_POINTS // 4:
                window *= 2
            elif n > TARGET_POINTS * 2:
                window = max(window // 2, 1_000_000)
    report.seconds = time.perf_counter() - t0
    return report


def _bounds(client: Client, ids: Int64Array) -> tuple[int, int]:
    """[earliest, newest + 1) over ``ids``; an empty range if none has data."""
    last = client.last(ids)
    if not len(last):
        return 0, 0
    firsts = [client.query(int(t), -(1 << 60) + 1, 1 << 60, limit=1) for t in last.tags.tolist()]
    lo = min(int(r.timestamps[0]) for r in firsts if len(r))
    return lo, int(last.timestamps.max()) + 1


def _progress(total: int | None, desc: str, show: bool, unit: str) -> tqdm[Any]:
    """A progress bar on stderr (``show`` False: none drawn)."""
    return tqdm(
        total=total, desc=desc, disable=not show, file=sys.stderr, unit=unit, unit_scale=True
    )
