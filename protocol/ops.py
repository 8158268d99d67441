"""Build and parse the fields of each op: one ``*_request``/``parse_*`` pair per direction.

Builders are called by clients (requests) and the server (responses) with
numpy arrays or anything ``np.asarray`` accepts; they convert to the wire
dtypes and check lengths. Parsers take a decoded message and return checked
Python ints and read-only numpy arrays that view the message's bytes.

Request parsers raise :class:`InvalidInput` naming the bad field, which the
server returns to the client. Response parsers first raise the error a
response carries (:func:`raise_for_error`), and raise :class:`ProtocolError`
for a success response that is malformed -- that is the server's fault, not
the caller's input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from .errors import InvalidInput, ProtocolError, UnsupportedVersion, XtsdbError, error_from_code
from .messages import (
    INT64_MAX,
    PROTOCOL_VERSION,
    Q_DTYPE,
    SUPPORTED_VERSIONS,
    TAGS_DTYPE,
    TS_DTYPE,
    VALUES_DTYPE,
    bool_field,
    error_response,
    int_field,
    ok_response,
    optional_int_field,
    pack_array,
    raise_for_error,
    request,
    required,
    str_field,
    tag_field,
    unpack_array,
    wire_array,
)

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
UInt8Array = npt.NDArray[np.uint8]
UInt32Array = npt.NDArray[np.uint32]

_T = TypeVar("_T")


def _is_scalar_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def wire_n(arr: npt.ArrayLike, dtype: str, field: str, n: int, ref: str) -> npt.NDArray[Any]:
    """``wire_array`` plus a check that the result has ``n`` elements, as ``ref`` has."""
    out = wire_array(arr, dtype)
    if out.shape[0] != n:
        raise InvalidInput(f"{field!r} has {out.shape[0]} elements, {ref!r} has {n}")
    return out


def _pack_n(arr: npt.ArrayLike, dtype: str, field: str, n: int, ref: str = "ts") -> bytes:
    """``pack_array`` plus a check that the result has as many elements (``n``) as ``ref``."""
    return wire_n(arr, dtype, field, n, ref).tobytes()


def checked_response(resp: Mapping[str, Any], what: str, parse: Callable[[], _T]) -> _T:
    """``parse()`` of a response after raising the error it carries; a malformed
    success response is the server's fault: :class:`ProtocolError`, not InvalidInput."""
    raise_for_error(resp)
    try:
        return parse()
    except InvalidInput as exc:
        raise ProtocolError(f"malformed {what} response: {exc}") from exc


# -- hello --------------------------------------------------------------------


def hello_request(
    req_id: int,
    token: str | None = None,
    client: str | None = None,
    versions: tuple[int, ...] = SUPPORTED_VERSIONS,
) -> dict[str, Any]:
    fields: dict[str, Any] = {"versions": list(versions)}
    if token is not None:
        fields["token"] = token
    if client is not None:
        fields["client"] = client
    return request("hello", req_id, **fields)


def parse_hello(msg: Mapping[str, Any]) -> tuple[int, str | None, str | None]:
    """``(version, token, client)``: the highest version both sides speak, and the optional strings.

    :class:`UnsupportedVersion` if the client offers none this side speaks.
    """
    versions = required(msg, "versions")
    if not isinstance(versions, list) or not all(type(v) is int for v in versions):
        raise InvalidInput("'versions' must be an array of ints")
    common = set(versions) & set(SUPPORTED_VERSIONS)
    if not common:
        raise UnsupportedVersion(
            f"client speaks versions {versions[:16]}, server speaks {list(SUPPORTED_VERSIONS)}"
        )
    return max(common), str_field(msg, "token"), str_field(msg, "client")


def hello_response(
    req_id: int, server: str, max_frame: int, auth: bool, version: int = PROTOCOL_VERSION
) -> dict[str, Any]:
    return ok_response(req_id, version=version, server=server, max_frame=max_frame, auth=auth)


def parse_hello_response(resp: Mapping[str, Any]) -> tuple[int, str, int, bool]:
    """``(version, server, max_frame, auth)`` of a hello response."""

    def parse() -> tuple[int, str, int, bool]:
        server, auth = resp.get("server"), resp.get("auth")
        if not isinstance(server, str) or not isinstance(auth, bool):
            raise InvalidInput("'server' must be a str and 'auth' a bool")
        version = int_field(resp.get("version"), "version", 0, INT64_MAX)
        return version, server, int_field(resp.get("max_frame"), "max_frame", 1), auth

    return checked_response(resp, "hello", parse)


# -- write --------------------------------------------------------------------


def write_request(
    req_id: int,
    tags: int | str | npt.ArrayLike,
    ts: npt.ArrayLike,
    values: npt.ArrayLike,
    qualities: npt.ArrayLike | None = None,
) -> dict[str, Any]:
    """A write of one tag (``tags`` an id or a name) or of a tag id per point (an array).

    ``qualities`` may be an array, one int for every point, or ``None`` (all Good).
    """
    ts_raw = pack_array(ts, TS_DTYPE)
    n = len(ts_raw) // 8
    fields: dict[str, Any] = {}
    if isinstance(tags, str) or _is_scalar_int(tags):
        fields["tag"] = tag_field(tags)
    else:
        fields["tags"] = _pack_n(tags, TAGS_DTYPE, "tags", n)
    fields["ts"] = ts_raw
    fields["values"] = _pack_n(values, VALUES_DTYPE, "values", n)
    if qualities is not None:
        q = np.asarray(qualities)
        fields["q"] = _pack_n(np.full(n, q) if q.ndim == 0 else q, Q_DTYPE, "q", n)
    return request("write", req_id, **fields)


def parse_write(
    msg: Mapping[str, Any],
) -> tuple[int | str | UInt32Array, Int64Array, Float64Array, UInt8Array | None]:
    """``(tag or tags, ts, values, q or None)`` of a write request, lengths checked.

    One tag is an id or a name (``str``, for the server to resolve).
    """
    has_tag, has_tags = msg.get("tag") is not None, msg.get("tags") is not None
    if has_tag == has_tags:
        raise InvalidInput("a write needs exactly one of 'tag' (int) or 'tags' (bin)")
    ts = unpack_array(required(msg, "ts"), TS_DTYPE, "ts")
    n = ts.shape[0]
    values = unpack_array(required(msg, "values"), VALUES_DTYPE, "values", n)
    q_raw = msg.get("q")
    q = None if q_raw is None else unpack_array(q_raw, Q_DTYPE, "q", n)
    if has_tag:
        tags: int | str | UInt32Array = tag_field(msg["tag"])
    else:
        tags = unpack_array(msg["tags"], TAGS_DTYPE, "tags", n)
    return tags, ts, values, q


# -- query --------------------------------------------------------------------


class QueryArgs(NamedTuple):
    """A parsed query request."""

    tag: int | str
    start: int
    end: int
    limit: int | None
    descending: bool = False
    good_only: bool = False


def query_request(
    req_id: int,
    tag: int | str,
    start: int,
    end: int,
    limit: int | None = None,
    *,
    descending: bool = False,
    good_only: bool = False,
) -> dict[str, Any]:
    """Points of ``tag`` with ``start <= ts < end``, at most ``limit`` of them if given.

    ``descending``: newest first (``limit`` then keeps the newest); ``good_only``:
    only points whose quality is Good (>= 192).
    """
    fields: dict[str, Any] = {
        "tag": tag_field(tag),
        "start": int_field(start, "start"),
        "end": int_field(end, "end"),
    }
    if limit is not None:
        fields["limit"] = int_field(limit, "limit", 0)
    # Sent only when set, so a plain query is the same frame as before they existed.
    if descending:
        fields["descending"] = True
    if good_only:
        fields["good_only"] = True
    return request("query", req_id, **fields)


def parse_query(msg: Mapping[str, Any]) -> QueryArgs:
    """The fields of a query request."""
    return QueryArgs(
        tag_field(required(msg, "tag")),
        int_field(required(msg, "start"), "start"),
        int_field(required(msg, "end"), "end"),
        optional_int_field(msg, "limit", 0),
        bool_field(msg, "descending"),
        bool_field(msg, "good_only"),
    )


def points_response(
    req_id: int,
    ts: npt.ArrayLike,
    values: npt.ArrayLike,
    q: npt.ArrayLike,
    stats: Mapping[str, int] | None = None,
    more: bool = False,
) -> dict[str, Any]:
    """The response to a query (or plot): three columns of equal length, read statistics,
    and ``more``: whether the request's limit cut the result short.

    The columns stay numpy arrays (see :func:`wire_array`), so a large result can
    be sent with :func:`~xtsdb.protocol.frames.encode_frame_parts` uncopied.
    """
    ts_arr = wire_array(ts, TS_DTYPE)
    n = ts_arr.shape[0]
    return ok_response(
        req_id,
        ts=ts_arr,
        values=wire_n(values, VALUES_DTYPE, "values", n, "ts"),
        q=wire_n(q, Q_DTYPE, "q", n, "ts"),
        stats={str(k): int(v) for k, v in (stats or {}).items()},
        more=bool(more),
    )


def parse_points(resp: Mapping[str, Any]) -> tuple[Int64Array, Float64Array, UInt8Array]:
    """``(ts, values, q)`` of a query response (its ``"stats"`` map is ``resp["stats"]``)."""

    def parse() -> tuple[Int64Array, Float64Array, UInt8Array]:
        ts = unpack_array(required(resp, "ts"), TS_DTYPE, "ts")
        n = ts.shape[0]
        values = unpack_array(required(resp, "values"), VALUES_DTYPE, "values", n)
        return ts, values, unpack_array(required(resp, "q"), Q_DTYPE, "q", n)

    return checked_response(resp, "query", parse)


# -- last ---------------------------------------------------------------------


def tags_for_wire(tags: Any) -> list[int | str] | None:
    """``tags`` as a list for the wire if it names a tag (a ``str`` or a sequence
    holding one); ``None`` if it is ids only, which travel as a ``bin``."""
    if isinstance(tags, str):
        return [tags]
    if isinstance(tags, list | tuple) and any(isinstance(t, str) for t in tags):
        return [tag_field(t, "tags") for t in tags]
    return None


def parse_tags(value: Any, field: str = "tags") -> UInt32Array | list[int | str]:
    """A ``bin`` of uint32 tag ids, or an array of ids and names."""
    if isinstance(value, list):
        return [tag_field(t, field) for t in value]
    return unpack_array(value, TAGS_DTYPE, field)


def last_request(req_id: int, tags: int | str | npt.ArrayLike) -> dict[str, Any]:
    """The latest point of each of ``tags``: ids and names (one, or a sequence)."""
    listed = tags_for_wire(tags)
    if listed is not None:
        return request("last", req_id, tags=listed)
    return request("last", req_id, tags=pack_array(np.atleast_1d(np.asarray(tags)), TAGS_DTYPE))


def parse_last(msg: Mapping[str, Any]) -> UInt32Array | list[int | str]:
    """The tags of a last request: a uint32 array of ids, or a list of ids and names."""
    return parse_tags(required(msg, "tags"))


def last_response(
    req_id: int,
    tags: npt.ArrayLike,
    ts: npt.ArrayLike,
    values: npt.ArrayLike,
    q: npt.ArrayLike,
    errors: Mapping[int, XtsdbError] | None = None,
) -> dict[str, Any]:
    """The response to ``last``: one row per tag that has data (others are left out).

    ``errors``: tags whose newest point could not be read (a damaged block), sent
    as ``[{"tag", "code", "message"}]`` only when there are any, so a response
    without them is the same frame as before the field existed.
    """
    tags_arr = wire_array(tags, TAGS_DTYPE)
    n = tags_arr.shape[0]
    fields: dict[str, Any] = {}
    if errors:
        fields["errors"] = [
            error_response(None, exc)["error"] | {"tag": int(tag)} for tag, exc in errors.items()
        ]
    return ok_response(
        req_id,
        tags=tags_arr,
        ts=wire_n(ts, TS_DTYPE, "ts", n, "tags"),
        values=wire_n(values, VALUES_DTYPE, "values", n, "tags"),
        q=wire_n(q, Q_DTYPE, "q", n, "tags"),
        **fields,
    )


def parse_last_response(
    resp: Mapping[str, Any],
) -> tuple[UInt32Array, Int64Array, Float64Array, UInt8Array]:
    """``(tags, ts, values, q)`` of a last response, all of one length."""

    def parse() -> tuple[UInt32Array, Int64Array, Float64Array, UInt8Array]:
        tags = unpack_array(required(resp, "tags"), TAGS_DTYPE, "tags")
        n = tags.shape[0]
        return (
            tags,
            unpack_array(required(resp, "ts"), TS_DTYPE, "ts", n),
            unpack_array(required(resp, "values"), VALUES_DTYPE, "values", n),
            unpack_array(required(resp, "q"), Q_DTYPE, "q", n),
        )

    return checked_response(resp, "last", parse)


def parse_last_errors(resp: Mapping[str, Any]) -> dict[int, XtsdbError]:
    """``{tag: error}`` for the tags of a last response that could not be answered."""

    def parse() -> dict[int, XtsdbError]:
        raw = resp.get("errors", [])
        if not isinstance(raw, list):
            raise InvalidInput("'errors' must be an array")
        out: dict[int, XtsdbError] = {}
        for item in raw:
            if not isinstance(item, dict):
                raise InvalidInput("an entry of 'errors' must be a map")
            tag = int_field(item.get("tag"), "tag", 0, 0xFFFFFFFF)
            code = int_field(item.get("code"), "code")
            out[tag] = error_from_code(code, str_field(item, "message") or "")
        return out

    return checked_response(resp, "last", parse)


# -- backup -------------------------------------------------------------------


def backup_request(req_id: int, path: str) -> dict[str, Any]:
    """Copy the server's data directory to ``path`` on the server's own filesystem."""
    if not isinstance(path, str) or not path:
        raise InvalidInput("'path' must be a non-empty str")
    return request("backup", req_id, path=path)


def parse_backup(msg: Mapping[str, Any]) -> str:
    """The destination ``path`` of a backup request."""
    path = str_field(msg, "path")
    if not path:
        raise InvalidInput("missing field 'path' (the backup's destination directory)")
    return path


def parse_backup_response(resp: Mapping[str, Any]) -> dict[str, Any]:
    """The ``backup`` map of a backup response (where the copy went, its size, its LSNs)."""

    def parse() -> dict[str, Any]:
        report = resp.get("backup")
        if not isinstance(report, dict):
            raise InvalidInput("'backup' must be a map")
        return report

    return checked_response(resp, "backup", parse)
