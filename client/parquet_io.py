"""Parquet for ``xtsdb import``/``export``, through pyarrow (the optional extra ``parquet``).

The same two layouts as CSV. **long**: columns ``tag`` (string names or
integer ids), a timestamp column (``timestamp``/``time``/``ts``), ``value`` and
optionally ``quality``. **wide**: a timestamp column, then one numeric column
per tag, named by the tag (null: no point). A timestamp column is an Arrow
timestamp *with a time zone* (any unit: converted to UTC microseconds) or
integer microseconds; a zone-less timestamp is refused, as naive times are
everywhere in xtsdb. Files are read a row batch at a time.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import numpy as np

from xtsdb.protocol.errors import InvalidInput

from .csv_chunks import TS_HEADERS, Chunk, Columns

HINT = "pip install 'xtsdb[parquet]'"


def pyarrow() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, imported on first use: an optional dependency."""
    try:
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise ImportError(f"Parquet files need pyarrow, which is not installed: {HINT}") from exc


def read_parquet(
    path: str, layout: str | None, batch_rows: int
) -> Iterator[tuple[Chunk, int, int]]:
    """``(chunk, rows, bytes)`` per row batch of a Parquet file."""
    pa, pq = pyarrow()
    pf = pq.ParquetFile(path)
    names = list(pf.schema_arrow.names)
    lowered = [n.lower() for n in names]
    ts_col = next((n for n, low in zip(names, lowered, strict=True) if low in TS_HEADERS), None)
    if ts_col is None:
        raise InvalidInput(f"{path}: no timestamp column (one of {sorted(TS_HEADERS)})")
    long = "tag" in lowered and "value" in lowered
    tag_cols = [n for n in names if n != ts_col]
    if layout == "wide" or (layout is None and not long):
        long = False
    elif not long:
        raise InvalidInput(f"{path}: the long layout needs columns tag, timestamp, value")
    for batch in pf.iter_batches(batch_size=max(batch_rows, 1)):
        cols = {n.lower(): batch.column(i) for i, n in enumerate(batch.schema.names)}
        ts = _timestamps(pa, cols[ts_col.lower()], path)
        chunk = _long(pa, cols, ts, path) if long else _wide(pa, batch, tag_cols, ts)
        yield chunk, batch.num_rows, batch.nbytes


def _timestamps(pa: Any, col: Any, path: str) -> Any:
    if col.null_count:
        raise InvalidInput(f"{path}: the timestamp column has nulls")
    if pa.types.is_timestamp(col.type):
        if col.type.tz is None:
            raise InvalidInput(
                f"{path}: the timestamp column has no time zone; store UTC timestamps "
                "(e.g. pandas: df.index.tz_localize('UTC')) or integer microseconds"
            )
        col = col.cast(pa.timestamp("us", tz="UTC"))
        return col.cast(pa.int64()).to_numpy()
    if pa.types.is_integer(col.type):
        return col.cast(pa.int64()).to_numpy()
    raise InvalidInput(f"{path}: the timestamp column is {col.type}, not a timestamp or integer")


def _long(pa: Any, cols: dict[str, Any], ts: Any, path: str) -> Chunk:
    tag, value = cols["tag"], cols["value"]
    if tag.null_count or value.null_count:
        raise InvalidInput(f"{path}: the tag and value columns may not hold nulls")
    enc = tag.cast(pa.string()).dictionary_encode()
    keys = [str(k) for k in enc.dictionary.to_pylist()]
    key_index = enc.indices.to_numpy().astype(np.uint32)
    values = value.cast(pa.float64()).to_numpy()
    q = None
    if "quality" in cols:
        qual = cols["quality"].cast(pa.int64()).to_numpy()
        if qual.size and (qual.min() < 0 or qual.max() > 255):
            raise InvalidInput(f"{path}: qualities must be in 0..255")
        q = qual.astype(np.uint8)
    return Chunk(keys, key_index, ts, values, q)


def _wide(pa: Any, batch: Any, tag_cols: list[str], ts: Any) -> Chunk:
    parts = []
    for name in tag_cols:
        col = batch.column(batch.schema.get_field_index(name)).cast(pa.float64())
        have = ~col.is_null().to_numpy(zero_copy_only=False)
        parts.append((ts[have], col.fill_null(0.0).to_numpy()[have]))
    return Chunk.wide(list(tag_cols), parts)


class ParquetSink:
    """Export: one row group per window, in the layout's schema."""

    def __init__(self, path: str, layout: str, labels: list[str]) -> None:
        self.pa, pq = pyarrow()
        pa = self.pa
        self.layout, self.labels = layout, labels
        utc = pa.timestamp("us", tz="UTC")
        if layout == "wide":
            fields = [("timestamp", utc)] + [(label, pa.float64()) for label in labels]
        else:
            fields = [
                ("tag", pa.string()),
                ("timestamp", utc),
                ("value", pa.float64()),
                ("quality", pa.uint8()),
            ]
        self.schema = pa.schema(fields)
        self.writer = pq.ParquetWriter(path, self.schema)

    def write(self, cols: Columns) -> int:
        pa = self.pa
        if self.layout == "wide":
            all_ts = np.unique(np.concatenate([c[0] for c in cols]))
            arrays = [pa.array(all_ts, pa.int64()).cast(self.schema.field(0).type)]
            for ts, values, _q in cols:
                full = np.zeros(all_ts.shape[0])
                mask = np.ones(all_ts.shape[0], dtype=bool)
                pos = np.searchsorted(all_ts, ts)
                full[pos], mask[pos] = values, False
                arrays.append(pa.array(full, pa.float64(), mask=mask))
            n = int(all_ts.shape[0])
        else:
            n = sum(int(c[0].shape[0]) for c in cols)
            tags = np.repeat(np.asarray(self.labels, dtype=object), [c[0].shape[0] for c in cols])
            arrays = [
                pa.array(tags, pa.string()),
                pa.array(np.concatenate([c[0] for c in cols]), pa.int64()).cast(
                    self.schema.field(1).type
                ),
                pa.array(np.concatenate([c[1] for c in cols]), pa.float64()),
                pa.array(np.concatenate([c[2] for c in cols]), pa.uint8()),
            ]
        if n:
            self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        return n

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.writer.close()
