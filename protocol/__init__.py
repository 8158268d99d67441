"""The xtsdb wire protocol, sans I/O: bytes in, messages out; messages in, bytes out.

Nothing here opens a socket, touches a file or imports asyncio. The server
and both clients own their transports and share this package, so there is
exactly one encoder, one decoder and one set of checks.

- ``errors``   -- the one exception tree of xtsdb; each class has a stable wire
  ``code`` (:data:`~xtsdb.protocol.errors.ERROR_CLASSES`).
- ``frames``   -- framing: a 4-byte big-endian length, then a msgpack map.
  :func:`encode_frame` and :class:`FrameDecoder` (fed bytes in any pieces,
  checks every length prefix against ``max_frame`` before buffering a body).
- ``messages`` -- envelopes (``request``, ``ok_response``, ``error_response``,
  ``raise_for_error``, ``parse_request_header``), strict scalar field checks,
  and the array codec: arrays are the raw little-endian bytes of a fixed
  dtype in a msgpack ``bin`` (``pack_array`` / zero-copy ``unpack_array``).
- ``ops``      -- per-op builders and parsers (``write_request`` /
  ``parse_write``, ``query_request`` / ``parse_query``, ``points_response`` /
  ``parse_points``, ...), used by clients and server alike.
- ``analytics`` -- the same for ``aggregate``, ``interpolate`` and ``plot``.
- ``tags``     -- the same for the tag catalog (``tag_*``) and the deletes.
- ``line_protocol`` -- InfluxDB line protocol text -> tag names and columns
  (the server's HTTP ``/write``); not part of the binary protocol.

A tag is referred to by its id or its name (``tag_field``); the server
resolves names. Response builders keep arrays as numpy arrays in wire dtypes,
so the server can send a large answer with :func:`encode_frame_parts`.

Data flows one way: a transport feeds bytes to a :class:`FrameDecoder`, takes
dicts out, parses them with ``parse_*``, builds answers with the builders and
sends ``encode_frame(answer)``. The wire format is specified for other
languages in ``docs/protocol.md``.
"""

from .analytics import (
    AGGREGATES,
    aggregate_request,
    aggregate_response,
    aggregate_result,
    interpolate_request,
    interpolate_response,
    parse_aggregate,
    parse_aggregate_response,
    parse_interpolate,
    parse_interpolate_response,
    parse_plot,
    plot_request,
)
from .errors import ERROR_CLASSES, XtsdbError, error_from_code
from .frames import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    decode_body,
    encode_body,
    encode_frame,
    encode_frame_parts,
)
from .messages import (
    GOOD_QUALITY,
    OPS,
    PROTOCOL_VERSION,
    Q_DTYPE,
    SUPPORTED_VERSIONS,
    TAGS_DTYPE,
    TS_DTYPE,
    VALUES_DTYPE,
    error_response,
    int_field,
    ok_response,
    pack_array,
    parse_request_header,
    parse_response_header,
    raise_for_error,
    readable_id,
    request,
    tag_field,
    unpack_array,
    wire_array,
)
from .ops import (
    QueryArgs,
    backup_request,
    hello_request,
    hello_response,
    last_request,
    last_response,
    parse_backup,
    parse_backup_response,
    parse_hello,
    parse_hello_response,
    parse_last,
    parse_last_response,
    parse_points,
    parse_query,
    parse_write,
    points_response,
    query_request,
    write_request,
)
from .tags import (
    delete_request,
    delete_tag_request,
    parse_delete,
    parse_lsn_response,
    parse_tag_create,
    parse_tag_list,
    parse_tag_list_response,
    parse_tag_ref,
    parse_tag_rename,
    parse_tag_response,
    parse_tag_update,
    tag_create_request,
    tag_get_request,
    tag_list_request,
    tag_list_response,
    tag_remove_request,
    tag_rename_request,
    tag_response,
    tag_update_request,
)

__all__ = [
    "AGGREGATES",
    "DEFAULT_MAX_FRAME",
    "ERROR_CLASSES",
    "GOOD_QUALITY",
    "OPS",
    "PROTOCOL_VERSION",
    "Q_DTYPE",
    "SUPPORTED_VERSIONS",
    "TAGS_DTYPE",
    "TS_DTYPE",
    "VALUES_DTYPE",
    "FrameDecoder",
    "QueryArgs",
    "XtsdbError",
    "aggregate_request",
    "aggregate_response",
    "aggregate_result",
    "backup_request",
    "decode_body",
    "delete_request",
    "delete_tag_request",
    "encode_body",
    "encode_frame",
    "encode_frame_parts",
    "error_from_code",
    "error_response",
    "hello_request",
    "hello_response",
    "int_field",
    "interpolate_request",
    "interpolate_response",
    "last_request",
    "last_response",
    "ok_response",
    "pack_array",
    "parse_aggregate",
    "parse_aggregate_response",
    "parse_backup",
    "parse_backup_response",
    "parse_delete",
    "parse_hello",
    "parse_hello_response",
    "parse_interpolate",
    "parse_interpolate_response",
    "parse_last",
    "parse_last_response",
    "parse_lsn_response",
    "parse_plot",
    "parse_points",
    "parse_query",
    "parse_request_header",
    "parse_response_header",
    "parse_tag_create",
    "parse_tag_list",
    "parse_tag_list_response",
    "parse_tag_ref",
    "parse_tag_rename",
    "parse_tag_response",
    "parse_tag_update",
    "parse_write",
    "plot_request",
    "points_response",
    "query_request",
    "raise_for_error",
    "readable_id",
    "request",
    "tag_create_request",
    "tag_field",
    "tag_get_request",
    "tag_list_request",
    "tag_list_response",
    "tag_remove_request",
    "tag_rename_request",
    "tag_response",
    "tag_update_request",
    "unpack_array",
    "wire_array",
    "write_request",
]
