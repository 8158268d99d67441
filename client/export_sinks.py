"""Where ``xtsdb export`` writes: CSV text (:class:`CsvSink`) or a Parquet file
(:class:`~.parquet_io.ParquetSink`), each taking windows of columns per tag."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from xtsdb.protocol.errors import InvalidInput

from .csv_chunks import LAYOUTS, Columns, quote, value_cells


@contextlib.contextmanager
def open_sink(out: str, fmt: str, layout: str, labels: list[str]) -> Iterator[Any]:
    """The sink for ``out`` (``-``: stdout, CSV only) in format ``fmt`` and ``layout``."""
    if layout not in LAYOUTS:
        raise InvalidInput(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if fmt == "parquet":
        from .parquet_io import ParquetSink

        if out == "-":
            raise InvalidInput("Parquet goes to a file, not stdout")
        with ParquetSink(out, layout, labels) as sink:
            yield sink
        return
    if fmt != "csv":
        raise InvalidInput(f"format must be csv or parquet, not {fmt!r}")
    if out == "-":
        yield CsvSink(sys.stdout, layout, labels)
        return
    with open(out, "w", encoding="utf-8", newline="") as f:
        yield CsvSink(f, layout, labels)


class CsvSink:
    """Export: windows of columns in, CSV text out (long or wide, with a header)."""

    def __init__(self, f: IO[str], layout: str, labels: list[str]) -> None:
        self.f, self.layout, self.labels = f, layout, labels
        long = ["tag", "timestamp", "value", "quality"]
        head = ["timestamp", *labels] if layout == "wide" else long
        f.write(",".join(quote(h) for h in head) + "\n")

    def write(self, cols: Columns) -> int:
        if self.layout == "wide":
            return self._wide(cols)
        rows = 0
        for label, (ts, values, q) in zip(self.labels, cols, strict=True):
            tag = quote(label)
            for lo in range(0, ts.shape[0], 100_000):  # bounded strings for big windows
                hi = lo + 100_000
                cells = value_cells(values[lo:hi])
                it = zip(ts[lo:hi].tolist(), cells, q[lo:hi].tolist(), strict=True)
                self.f.write("".join(f"{tag},{t},{v},{qq}\n" for t, v, qq in it))
            rows += ts.shape[0]
        return rows

    def _wide(self, cols: Columns) -> int:
        all_ts = np.unique(np.concatenate([c[0] for c in cols])) if cols else np.empty(0)
        cells = []
        for ts, values, _q in cols:
            col = np.full(all_ts.shape[0], "", dtype=object)
            col[np.searchsorted(all_ts, ts)] = value_cells(values)
            cells.append(col.tolist())
        stamps = [str(t) for t in all_ts.tolist()]
        self.f.write("".join(",".join(row) + "\n" for row in zip(stamps, *cells, strict=True)))
        return int(all_ts.shape[0])
