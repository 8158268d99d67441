"""User input -> wire types: timestamps in microseconds, columns of one length.

Everything is checked before a frame is sent, so a write split into many
frames is refused as a whole rather than half-sent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from xtsdb.protocol import Q_DTYPE, TAGS_DTYPE, TS_DTYPE, VALUES_DTYPE, pack_array
from xtsdb.protocol.errors import InvalidInput

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
UInt8Array = npt.NDArray[np.uint8]
UInt32Array = npt.NDArray[np.uint32]


def to_us(t: Any, what: str = "timestamp") -> int:
    """One instant as integer microseconds since the Unix epoch (UTC).

    Accepts ``int``, numpy integers, timezone-aware ``datetime`` and
    ``numpy.datetime64`` (which has no zone and is read as UTC). A naive
    ``datetime`` is refused: guessing the machine's zone is how historians end
    up an hour off twice a year.
    """
    if isinstance(t, bool):
        raise InvalidInput(f"{what} must be int microseconds or a datetime, got bool")
    if isinstance(t, int | np.integer):
        return int(t)
    if isinstance(t, datetime):
        if t.tzinfo is None or t.utcoffset() is None:
            raise InvalidInput(
                f"{what} {t.isoformat()} is a naive datetime; give it a timezone "
                "(e.g. datetime(..., tzinfo=timezone.utc))"
            )
        # Integer timedelta division is exact, unlike t.timestamp() * 1e6.
        return (t - _EPOCH) // _ONE_US
    if isinstance(t, np.datetime64):
        if np.isnat(t):
            raise InvalidInput(f"{what} is NaT")
        return int(t.astype("datetime64[us]").astype(np.int64))
    raise InvalidInput(
        f"{what} must be int microseconds, an aware datetime or numpy.datetime64, "
        f"got {type(t).__name__}"
    )


def timestamps_us(ts: Any) -> Int64Array:
    """A timestamp column as int64 microseconds (datetime64 arrays are converted)."""
    arr = np.asarray(ts)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype.kind == "M":
        if np.isnat(arr).any():
            raise InvalidInput("timestamps contain NaT")
        us: Int64Array = arr.astype("datetime64[us]").view(np.int64)
        return us
    if arr.dtype.kind == "O":
        raise InvalidInput(
            "timestamps must be an integer (microseconds) or datetime64 array, not objects; "
            "for datetimes use numpy.array(..., dtype='datetime64[us]')"
        )
    out: Int64Array = _wire(arr, TS_DTYPE)
    return out


def _wire(arr: Any, dtype: str) -> Any:
    # pack_array is the protocol's one set of conversion checks (ranges, whole
    # floats); viewing its bytes keeps a single copy in the wire dtype.
    return np.frombuffer(pack_array(arr, dtype), dtype=dtype)


def write_columns(
    tags: Any, ts: Any, values: Any, qualities: Any
) -> tuple[int | str | UInt32Array, Int64Array, Float64Array, UInt8Array | None]:
    """Check and convert the columns of a write; lengths must agree.

    ``tags`` is one tag id, one tag name (resolved by the server), or an array
    of tag ids, one per point.
    """
    t = timestamps_us(ts)
    n = t.shape[0]
    v = _wire(np.atleast_1d(np.asarray(values)), VALUES_DTYPE)
    _same_length(v, n, "values")
    q: UInt8Array | None = None
    if qualities is not None:
        qa = np.asarray(qualities)
        q = _wire(np.full(n, qa) if qa.ndim == 0 else qa, Q_DTYPE)
        _same_length(q, n, "qualities")
    tag_col: int | str | UInt32Array
    if isinstance(tags, str):
        if not tags:
            raise InvalidInput("a tag name may not be empty")
        tag_col = tags
    elif isinstance(tags, int | np.integer) and not isinstance(tags, bool):
        if not 0 <= int(tags) < 1 << 32:
            raise InvalidInput(f"tag id {int(tags)} is out of range 0..{(1 << 32) - 1}")
        tag_col = int(tags)
    else:
        tag_arr: UInt32Array = _wire(np.asarray(tags), TAGS_DTYPE)
        _same_length(tag_arr, n, "tags")
        tag_col = tag_arr
    return tag_col, t, v, q


def _same_length(arr: npt.NDArray[Any], n: int, what: str) -> None:
    if arr.shape[0] != n:
        raise InvalidInput(f"{what} has {arr.shape[0]} elements, timestamps has {n}")


def parse_time(text: str) -> int:
    """A CLI time argument: integer microseconds or ISO 8601 with a zone ('Z' allowed)."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"time {text!r} is neither integer microseconds nor ISO 8601 "
            "(e.g. 2024-05-01T00:00:00Z)"
        ) from None
    return to_us(dt, f"time {text!r}")


def format_us(t: int) -> str:
    """Microseconds as an ISO 8601 UTC string (for humans; CSV keeps integers)."""
    try:
        return (_EPOCH + t * _ONE_US).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return str(t)
