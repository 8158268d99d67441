"""Message envelopes, field checks and the columnar array codec.

Every request is ``{"id": int, "op": str, ...fields}``; every response is
``{"id": int, "ok": True, ...fields}`` or ``{"id": int | None, "ok": False,
"error": {"code": int, "message": str}}``. The builders here are the only
place those dicts are made, and the ``parse_*``/``*_field`` checks the only
place untrusted ones are trusted.

Arrays travel as the raw little-endian bytes of a fixed dtype in a msgpack
``bin``; :func:`unpack_array` turns them back with ``np.frombuffer`` (no copy;
the result is read-only).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt

from .errors import (
    InternalError,
    InvalidInput,
    ProtocolError,
    UnknownOperation,
    XtsdbError,
    error_from_code,
)
from .frames import array_bytes

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (PROTOCOL_VERSION,)

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
UINT32_MAX = (1 << 32) - 1
GOOD_QUALITY = 192
"""OPC "Good": the quality of every point of a write that sends no ``q``. The top two
bits of a quality carry Good/Bad/Uncertain, so ``q >= 192`` is Good."""
TS_LIMIT = 1 << 60
"""Timestamps are microseconds with ``abs(ts) < TS_LIMIT`` (about +-36,500 years)."""
MAX_ERROR_MESSAGE = 8192
"""Error messages are cut to this many characters so they always fit a frame."""

# Wire dtypes: always little-endian, whatever the host byte order.
TS_DTYPE = "<i8"
VALUES_DTYPE = "<f8"
Q_DTYPE = "u1"
TAGS_DTYPE = "<u4"
_DTYPES = {TS_DTYPE, VALUES_DTYPE, Q_DTYPE, TAGS_DTYPE}


# -- envelopes ----------------------------------------------------------------


def request(op: str, req_id: int, **fields: Any) -> dict[str, Any]:
    """``{"id": req_id, "op": op, **fields}`` after checking ``op`` and ``req_id``."""
    from .optable import OPS  # the table is built from declarations that import this module

    if op not in OPS:
        raise UnknownOperation(f"unknown op {op!r}")
    if "id" in fields:
        raise InvalidInput("'id' is the request id, not a field")
    return {"id": int_field(req_id, "id", 0, INT64_MAX), "op": op, **fields}


def ok_response(req_id: int, **fields: Any) -> dict[str, Any]:
    """A success response to request ``req_id`` carrying ``fields``."""
    if "ok" in fields or "id" in fields:
        raise InvalidInput("'id' and 'ok' are set by ok_response, not passed as fields")
    return {"id": req_id, "ok": True, **fields}


def error_response(req_id: int | None, exc: BaseException) -> dict[str, Any]:
    """The error response for ``exc``; anything but an :class:`XtsdbError` is an internal error.

    ``req_id`` is ``None`` when the request had no readable id (see :func:`readable_id`).
    """
    if isinstance(exc, XtsdbError):
        code, message = exc.code, str(exc) or exc.name
    else:
        code, message = InternalError.code, f"{type(exc).__name__}: {exc}"
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[: MAX_ERROR_MESSAGE - 3] + "..."
    return {"id": req_id, "ok": False, "error": {"code": code, "message": message}}


def raise_for_error(resp: Mapping[str, Any]) -> None:
    """Return if ``resp`` is a success; raise the exception its error code maps to otherwise.

    A response that is neither a well-formed success nor a well-formed error
    raises :class:`ProtocolError`.
    """
    ok = resp.get("ok")
    if ok is True:
        return
    if ok is not False:
        raise ProtocolError("response has no boolean 'ok'")
    err = resp.get("error")
    if not isinstance(err, Mapping):
        raise ProtocolError("error response has no 'error' map")
    code, message = err.get("code"), err.get("message")
    if type(code) is not int or not isinstance(message, str):
        raise ProtocolError("error response needs an int 'code' and a str 'message'")
    raise error_from_code(code, message)


def _valid_id(value: Any) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= INT64_MAX


def readable_id(msg: Mapping[str, Any]) -> int | None:
    """The request's id if it is a valid one, else ``None``: what an error response echoes."""
    value = msg.get("id")
    return value if _valid_id(value) else None


def parse_response_header(msg: Mapping[str, Any]) -> tuple[int | None, bool]:
    """``(id, ok)`` of a response: what a client needs to route it to its request."""
    req_id, ok = msg.get("id"), msg.get("ok")
    if not (req_id is None or _valid_id(req_id)) or not isinstance(ok, bool):
        raise ProtocolError("response needs an int or nil 'id' and a boolean 'ok'")
    return req_id, ok


# -- scalar fields ------------------------------------------------------------


def int_field(value: Any, field: str, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    """``value`` as a Python ``int`` in ``lo..hi``; bools and floats are refused."""
    if isinstance(value, bool | np.bool_):
        raise InvalidInput(f"{field!r} must be an int, got bool")
    try:
        number = operator.index(value)
    except TypeError:
        raise InvalidInput(f"{field!r} must be an int, got {type(value).__name__}") from None
    if not lo <= number <= hi:
        raise InvalidInput(f"{field!r} = {number} is out of range {lo}..{hi}")
    return number


def optional_int_field(
    msg: Mapping[str, Any], field: str, lo: int = INT64_MIN, hi: int = INT64_MAX
) -> int | None:
    """Like :func:`int_field` for ``msg[field]``; an absent or nil field is ``None``."""
    value = msg.get(field)
    return None if value is None else int_field(value, field, lo, hi)


def required(msg: Mapping[str, Any], field: str) -> Any:
    """``msg[field]``; :class:`InvalidInput` naming the field if it is absent or nil."""
    value = msg.get(field)
    if value is None:
        raise InvalidInput(f"missing field {field!r}")
    return value


def str_field(msg: Mapping[str, Any], field: str) -> str | None:
    """An optional ``str`` field; ``None`` if absent or nil."""
    value = msg.get(field)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{field!r} must be a str, got {type(value).__name__}")
    return value


def bool_field(msg: Mapping[str, Any], field: str) -> bool:
    """An optional ``bool`` field; absent or nil is ``False``. Ints are not bools."""
    value = msg.get(field)
    if value is None:
        return False
    if not isinstance(value, bool | np.bool_):
        raise InvalidInput(f"{field!r} must be a bool, got {type(value).__name__}")
    return bool(value)


def tag_field(value: Any, field: str = "tag") -> int | str:
    """A tag reference: an id ``0..2**32-1`` or a non-empty name (resolved by the server)."""
    if isinstance(value, str):
        if not value:
            raise InvalidInput(f"{field!r}: a tag name may not be empty")
        return value
    return int_field(value, field, 0, UINT32_MAX)


# -- arrays -------------------------------------------------------------------


def _check_dtype(dtype: str) -> np.dtype[Any]:
    if dtype not in _DTYPES:
        raise ValueError(f"not a wire dtype: {dtype!r} (one of {sorted(_DTYPES)})")
    return np.dtype(dtype)


def pack_array(arr: npt.ArrayLike, dtype: str) -> bytes:
    """The little-endian bytes of a 1-D array converted to the wire ``dtype``.

    Conversion refuses to change a value: integers out of the target's range,
    and for integer targets floats that are not whole numbers (NaN included),
    raise :class:`InvalidInput`. Checks are whole-array numpy operations.
    """
    return wire_array(arr, dtype).tobytes()


def wire_array(arr: npt.ArrayLike, dtype: str) -> npt.NDArray[Any]:
    """Like :func:`pack_array`, but the converted array itself (no copy if already so).

    A message may carry it as is: the encoders send it as a ``bin`` of its
    bytes, and :func:`~xtsdb.protocol.frames.encode_frame_parts` without
    copying it. Used for responses, whose arrays can be large.
    """
    target = _check_dtype(dtype)
    a = np.asarray(arr)
    if a.ndim != 1:
        raise InvalidInput(f"expected a 1-D array, got {a.ndim} dimensions")
    kind = a.dtype.kind
    if kind not in "biuf":
        raise InvalidInput(f"cannot send a {a.dtype} array as {target}")
    if target.kind in "iu" and a.size:
        if kind == "f":
            if not np.all(np.isfinite(a)) or not np.all(a == np.trunc(a)):
                raise InvalidInput(f"cannot send non-integral floats as {target}")
            a = a.astype(np.float64, copy=False)
        if kind != "b" and not np.can_cast(a.dtype, target, "safe"):
            info = np.iinfo(target)
            # .item() gives Python numbers, whose int/float comparisons are exact.
            if a.min().item() < info.min or a.max().item() > info.max:
                raise InvalidInput(f"values out of range {info.min}..{info.max} for {target}")
    return a.astype(target, copy=False)


def unpack_array(value: Any, dtype: str, field: str, count: int | None = None) -> npt.NDArray[Any]:
    """A read-only array viewing the bytes of ``value`` (a msgpack ``bin``) as ``dtype``.

    :class:`InvalidInput` naming ``field`` unless ``value`` is bytes whose
    length is a multiple of the item size, holding ``count`` items if given.
    """
    target = _check_dtype(dtype)
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype == target:
        value = array_bytes(value)  # an in-process message built by wire_array
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidInput(
            f"{field!r} must be bin (raw {target} bytes), got {type(value).__name__}"
        )
    nbytes = memoryview(value).nbytes
    if nbytes % target.itemsize:
        raise InvalidInput(
            f"{field!r} has {nbytes} bytes, not a multiple of {target.itemsize} ({target})"
        )
    n = nbytes // target.itemsize
    if count is not None and n != count:
        raise InvalidInput(f"{field!r} has {n} elements, expected {count}")
    arr = np.frombuffer(value, dtype=target)
    arr.flags.writeable = False
    return arr
