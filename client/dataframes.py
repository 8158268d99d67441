"""pandas in and out (the optional extra ``pandas``): ``write_df`` and ``query_df``.

Pure conversions, shared by both clients: :func:`frame_items` turns a
DataFrame into ``write_many`` items (one per tag; a name is resolved by the
server), :func:`results_frame` turns query results into a DataFrame. The
clients' ``write_df``/``query_df`` only add the I/O, so neither pandas nor
these rules are written twice.

- Times are the frame's ``DatetimeIndex``. A timezone-aware index (any zone)
  is converted to UTC microseconds; a naive one is refused, as naive
  datetimes are everywhere in xtsdb (``df.tz_localize("UTC")`` if it is UTC).
- **wide** (``tag_column=None``): each column is a tag, labelled by its name
  (``str``) or id (``int``); NaN cells are "no point", so a frame from
  :func:`results_frame` writes back as it came.
- **long** (``tag_column="tag"``): one row per point, with the tag, value and
  optional quality in columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xtsdb.protocol.errors import InvalidInput

from .results import PANDAS_HINT, QueryResult

Item = tuple[Any, Any, Any, Any]  # (tag, timestamps us, values, qualities or None)


def pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise ImportError(f"DataFrames need pandas, which is not installed: {PANDAS_HINT}") from exc
    return pandas


def index_us(df: Any) -> Any:
    """The frame's DatetimeIndex as int64 UTC microseconds; naive or other indexes refused."""
    pd = pandas()
    index = df.index
    if not isinstance(index, pd.DatetimeIndex):
        raise InvalidInput(
            f"the frame needs a DatetimeIndex (got {type(index).__name__}): "
            "df.set_index('time') or pd.to_datetime(...)"
        )
    if index.tz is None:
        raise InvalidInput(
            "the frame's DatetimeIndex is naive (no time zone); say which zone it is in, "
            "e.g. df.tz_localize('UTC') or df.tz_localize('Europe/Berlin')"
        )
    if index.hasnans:
        raise InvalidInput("the frame's DatetimeIndex holds NaT")
    return index.tz_convert("UTC").as_unit("us").asi8


def _tag_key(label: Any) -> int | str:
    if isinstance(label, str):
        return label
    if isinstance(label, int | np.integer) and not isinstance(label, bool):
        return int(label)
    raise InvalidInput(f"a tag is a str name or an int id, not {label!r}")


def frame_items(
    df: Any,
    tag_column: str | None = None,
    value_column: str = "value",
    quality_column: str | None = "quality",
    columns: Sequence[Any] | None = None,
) -> list[Item]:
    """``write_many`` items for a wide frame (``tag_column=None``) or a long one."""
    ts = index_us(df)
    if tag_column is None:
        items = []
        for label in df.columns if columns is None else columns:
            values = df[label].to_numpy(dtype=np.float64, na_value=np.nan)
            have = ~np.isnan(values)
            if have.any():
                items.append((_tag_key(label), ts[have], values[have], None))
        return items
    for col in (tag_column, value_column):
        if col not in df.columns:
            raise InvalidInput(f"the frame has no column {col!r}")
    pd = pandas()
    codes, uniques = pd.factorize(df[tag_column], use_na_sentinel=True)
    if (codes < 0).any():
        raise InvalidInput(f"column {tag_column!r} holds missing tags")
    values = df[value_column].to_numpy(dtype=np.float64, na_value=np.nan)
    q = None
    if quality_column is not None and quality_column in df.columns:
        q = df[quality_column].to_numpy()
    order = np.argsort(codes, kind="stable")  # group rows by tag, keeping their order
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    items = []
    for rows in np.split(order, bounds) if order.size else []:
        key = _tag_key(uniques[codes[rows[0]]])
        items.append((key, ts[rows], values[rows], None if q is None else q[rows]))
    return items


def results_frame(
    labels: Sequence[Any], results: Sequence[QueryResult], layout: str = "wide"
) -> Any:
    """Query results as a DataFrame with a UTC ``time`` index.

    wide: a column of values per tag, outer-joined on timestamp (NaN where a
    tag has no point); long: rows of ``tag``, ``value``, ``quality``.
    """
    pd = pandas()
    if layout not in ("wide", "long"):
        raise InvalidInput(f"layout must be 'wide' or 'long', not {layout!r}")

    def index(us: Any) -> Any:
        return pd.DatetimeIndex(pd.to_datetime(us, unit="us", utc=True), name="time")

    if layout == "long":
        ts = np.concatenate([r.timestamps for r in results]) if results else np.empty(0, np.int64)
        tags = np.repeat(np.asarray(list(labels), dtype=object), [len(r) for r in results])
        frame = pd.DataFrame(
            {
                "tag": tags,
                "value": np.concatenate([r.values for r in results]) if results else [],
                "quality": np.concatenate([r.qualities for r in results]) if results else [],
            },
            index=index(ts),
        )
        return frame
    all_ts = (
        np.unique(np.concatenate([r.timestamps for r in results]))
        if results
        else np.empty(0, np.int64)
    )
    data = {}
    for label, r in zip(labels, results, strict=True):
        col = np.full(all_ts.shape[0], np.nan)
        col[np.searchsorted(all_ts, r.timestamps)] = r.values
        data[label] = col
    return pd.DataFrame(data, index=index(all_ts), columns=list(labels))
